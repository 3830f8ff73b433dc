#include "fastnn/loss.h"

#include "fastnn/output_pages.h"

namespace fastnn {

void cross_entropy_forward(const CrossEntropyParams& p) { FASTNN_SELECT_KERNELS(loss_kernels).cross_entropy_forward(p); }

void cross_entropy_backward(const CrossEntropyBackwardParams& p) {
    advise_huge_pages(p.grad_logits);
    FASTNN_SELECT_KERNELS(loss_kernels).cross_entropy_backward(p);
}

void mse_forward(const MseParams& p) {
    advise_huge_pages(p.loss);
    FASTNN_SELECT_KERNELS(loss_kernels).mse_forward(p);
}

void mse_backward(const MseBackwardParams& p) {
    advise_huge_pages(p.grad_x);
    FASTNN_SELECT_KERNELS(loss_kernels).mse_backward(p);
}

}  // namespace fastnn
