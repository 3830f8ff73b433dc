#include "fastnn/norm.h"

namespace fastnn {

void norm_forward(const NormForwardParams& p) { FASTNN_SELECT_KERNELS(norm_kernels).forward(p); }

void norm_backward(const NormBackwardParams& p) { FASTNN_SELECT_KERNELS(norm_kernels).backward(p); }

}  // namespace fastnn
