#include "fastnn/softmax.h"

#include "fastnn/output_pages.h"

namespace fastnn {

void softmax_forward(const SoftmaxParams& p) {
    advise_huge_pages(p.y);
    FASTNN_SELECT_KERNELS(softmax_kernels).forward(p);
}

void softmax_backward(const SoftmaxBackwardParams& p) {
    advise_huge_pages(p.grad_in);
    FASTNN_SELECT_KERNELS(softmax_kernels).backward(p);
}

}  // namespace fastnn
