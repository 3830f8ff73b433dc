// Walks several same-shape operands with arbitrary strides (negative, zero,
// transposed) as a sequence of rows, so elementwise kernels need only a 1-D
// inner loop. Dimensions are ordered by the first operand's strides and merged
// where every operand allows it, so a contiguous or merely permuted tensor
// becomes one long row that the SIMD path runs at full speed.
#pragma once

#include <cstdint>

#include "fastnn/tensor.h"

namespace fastnn {

inline constexpr int kMaxOperands = 4;

struct StridedLayout {
    int noperands = 0;
    int ndim = 0;  // >= 1 after make_strided_layout
    int64_t shape[kMaxDims] = {};
    int64_t byte_strides[kMaxOperands][kMaxDims] = {};
    int64_t elem_size[kMaxOperands] = {};
    char* base[kMaxOperands] = {};
    int64_t numel = 0;

    int64_t inner_stride(int op) const { return byte_strides[op][ndim - 1]; }
    // True when every operand's row is contiguous in memory.
    bool inner_dense() const;
};

// All operands must have ops[0]'s shape (the binding layer checks).
StridedLayout make_strided_layout(const TensorView* const* ops, int noperands);

// Calls row(ptrs, n) for the element range [begin, end) of layout's iteration
// order; ptrs[k] points at operand k's first element of the row, whose
// elements are layout.inner_stride(k) bytes apart.
template <class RowFn>
void for_each_row(const StridedLayout& layout, int64_t begin, int64_t end, RowFn&& row) {
    const int nd = layout.ndim, nops = layout.noperands;
    const int64_t inner = layout.shape[nd - 1];
    int64_t index[kMaxDims];
    int64_t rest = begin / inner;
    for (int d = nd - 2; d >= 0; --d) {
        index[d] = rest % layout.shape[d];
        rest /= layout.shape[d];
    }
    int64_t col = begin % inner;
    char* ptrs[kMaxOperands];
    for (int k = 0; k < nops; ++k) {
        char* p = layout.base[k] + col * layout.byte_strides[k][nd - 1];
        for (int d = 0; d < nd - 1; ++d) p += index[d] * layout.byte_strides[k][d];
        ptrs[k] = p;
    }
    while (begin < end) {
        const int64_t n = (inner - col < end - begin) ? inner - col : end - begin;
        row(ptrs, n);
        begin += n;
        if (begin >= end) break;
        // Odometer step to the start of the next row.
        for (int k = 0; k < nops; ++k) ptrs[k] -= col * layout.byte_strides[k][nd - 1];
        col = 0;
        for (int d = nd - 2; d >= 0; --d) {
            if (++index[d] < layout.shape[d]) {
                for (int k = 0; k < nops; ++k) ptrs[k] += layout.byte_strides[k][d];
                break;
            }
            for (int k = 0; k < nops; ++k) ptrs[k] -= (layout.shape[d] - 1) * layout.byte_strides[k][d];
            index[d] = 0;
        }
    }
}

}  // namespace fastnn
