// One registration function per kernel family; module.cpp calls them all.
#pragma once

#include <nanobind/nanobind.h>

namespace fastnn::bind {

void bind_runtime(nanobind::module_& m);
void bind_activation(nanobind::module_& m);
void bind_gemm(nanobind::module_& m);
void bind_optim(nanobind::module_& m);
void bind_quant(nanobind::module_& m);
void bind_norm(nanobind::module_& m);
void bind_softmax(nanobind::module_& m);
void bind_loss(nanobind::module_& m);
void bind_dropout(nanobind::module_& m);
void bind_attention(nanobind::module_& m);
void bind_pool(nanobind::module_& m);
void bind_conv(nanobind::module_& m);

}  // namespace fastnn::bind
