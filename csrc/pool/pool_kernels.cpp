// One ISA's pooling kernel table: the window's kind picks the max kernels
// (pool_max_kernels.cpp) or the average ones (pool_average_kernels.cpp).
#include "pool_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

void pool_forward_kernel(const PoolParams& p) {
    if (p.window.kind == PoolKind::max) pool::max_forward(p);
    else pool::average_forward(p);
}

void pool_backward_kernel(const PoolBackwardParams& p) {
    if (p.window.kind == PoolKind::max) pool::max_backward(p);
    else pool::average_backward(p);
}

}  // namespace

const PoolKernels pool_kernels = {pool_forward_kernel, pool_backward_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
