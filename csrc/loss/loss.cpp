#include "fastnn/loss.h"

namespace fastnn {

void cross_entropy_forward(const CrossEntropyParams& p) { FASTNN_SELECT_KERNELS(loss_kernels).cross_entropy_forward(p); }

void cross_entropy_backward(const CrossEntropyBackwardParams& p) {
    FASTNN_SELECT_KERNELS(loss_kernels).cross_entropy_backward(p);
}

void mse_forward(const MseParams& p) { FASTNN_SELECT_KERNELS(loss_kernels).mse_forward(p); }

void mse_backward(const MseBackwardParams& p) { FASTNN_SELECT_KERNELS(loss_kernels).mse_backward(p); }

}  // namespace fastnn
