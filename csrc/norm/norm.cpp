#include "fastnn/norm.h"

#include "fastnn/output_pages.h"

namespace fastnn {

void norm_forward(const NormForwardParams& p) {
    advise_huge_pages(p.y);
    FASTNN_SELECT_KERNELS(norm_kernels).forward(p);
}

void norm_backward(const NormBackwardParams& p) {
    advise_huge_pages(p.grad_x);
    FASTNN_SELECT_KERNELS(norm_kernels).backward(p);
}

}  // namespace fastnn
