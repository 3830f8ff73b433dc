#include "fastnn/softmax.h"

namespace fastnn {

void softmax_forward(const SoftmaxParams& p) { FASTNN_SELECT_KERNELS(softmax_kernels).forward(p); }

void softmax_backward(const SoftmaxBackwardParams& p) { FASTNN_SELECT_KERNELS(softmax_kernels).backward(p); }

}  // namespace fastnn
