#include "fastnn/conv.h"

namespace fastnn {

void conv2d_forward(const ConvParams& p) { FASTNN_SELECT_KERNELS(conv_kernels).forward(p); }

void conv2d_backward(const ConvBackwardParams& p) { FASTNN_SELECT_KERNELS(conv_kernels).backward(p); }

}  // namespace fastnn
