#include "fastnn/strided_loop.h"

#include <algorithm>
#include <cstdlib>

namespace fastnn {

int64_t numel(const TensorView& t) {
    int64_t n = 1;
    for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
    return n;
}

bool StridedLayout::inner_dense() const {
    for (int k = 0; k < noperands; ++k)
        if (byte_strides[k][ndim - 1] != elem_size[k]) return false;
    return true;
}

StridedLayout make_strided_layout(const TensorView* const* ops, int noperands) {
    StridedLayout out;
    out.noperands = noperands;
    const TensorView& first = *ops[0];
    out.numel = numel(first);
    for (int k = 0; k < noperands; ++k) {
        out.base[k] = static_cast<char*>(ops[k]->data);
        out.elem_size[k] = static_cast<int64_t>(dtype_size(ops[k]->dtype));
    }

    // Keep dimensions of extent > 1, outermost (largest |stride| of operand 0)
    // first; a stable sort keeps the logical order among equal strides.
    int dims[kMaxDims];
    int nd = 0;
    for (int d = 0; d < first.ndim; ++d)
        if (first.shape[d] != 1) dims[nd++] = d;
    std::stable_sort(dims, dims + nd, [&](int a, int b) {
        return std::llabs(first.strides[a]) > std::llabs(first.strides[b]);
    });

    int m = 0;
    for (int i = 0; i < nd; ++i) {
        const int d = dims[i];
        bool merge = m > 0;
        for (int k = 0; k < noperands && merge; ++k)
            merge = out.byte_strides[k][m - 1] == ops[k]->strides[d] * first.shape[d] * out.elem_size[k];
        if (merge) {
            out.shape[m - 1] *= first.shape[d];
            for (int k = 0; k < noperands; ++k) out.byte_strides[k][m - 1] = ops[k]->strides[d] * out.elem_size[k];
        } else {
            out.shape[m] = first.shape[d];
            for (int k = 0; k < noperands; ++k) out.byte_strides[k][m] = ops[k]->strides[d] * out.elem_size[k];
            ++m;
        }
    }
    if (m == 0) {  // a scalar or all-ones shape: one row of one element
        out.shape[0] = 1;
        for (int k = 0; k < noperands; ++k) out.byte_strides[k][0] = out.elem_size[k];
        m = 1;
    }
    out.ndim = m;
    return out;
}

}  // namespace fastnn
