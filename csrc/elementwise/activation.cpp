#include "fastnn/activation.h"

namespace fastnn {

void activation_forward(const ActivationParams& p) { FASTNN_SELECT_KERNELS(activation_kernels).forward(p); }

void activation_backward(const ActivationBackwardParams& p) {
    FASTNN_SELECT_KERNELS(activation_kernels).backward(p);
}

}  // namespace fastnn
