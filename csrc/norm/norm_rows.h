// Row machinery shared by the norm kernels (compiled per ISA, like simd.h):
// addressing of x's leading dimensions for every operand that shares them,
// staging of rows whose last-dim stride is not 1, and compile-time switches
// over the kernels' flags.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {

// The leading dimensions of up to kMaxRowOperands arrays of one leading shape
// (x, y, grad tensors and the statistics), each with its own strides. Dims of
// extent 1 are dropped and neighbours merged where every operand allows, so a
// contiguous or row-strided tensor has one dimension and a row's address is
// one multiply-add.
inline constexpr int kMaxRowOperands = 6;

struct RowLayout {
    int noperands = 0;
    int ndim = 0;
    int64_t rows = 1;
    int64_t shape[kMaxDims] = {};
    int64_t byte_strides[kMaxRowOperands][kMaxDims] = {};
    char* base[kMaxRowOperands] = {};

    char* row(int op, int64_t r) const {
        char* p = base[op];
        for (int d = ndim - 1; d > 0; --d) {
            p += (r % shape[d]) * byte_strides[op][d];
            r /= shape[d];
        }
        return ndim > 0 ? p + r * byte_strides[op][0] : p;
    }
};

// Uses the first `nlead` dimensions of each operand.
inline RowLayout make_row_layout(const TensorView* const* ops, int noperands, int nlead) {
    RowLayout l;
    l.noperands = noperands;
    for (int k = 0; k < noperands; ++k) l.base[k] = static_cast<char*>(ops[k]->data);
    for (int d = 0; d < nlead; ++d) {
        const int64_t extent = ops[0]->shape[d];
        l.rows *= extent;
        if (extent == 1) continue;
        const int prev = l.ndim - 1;
        bool mergeable = prev >= 0;
        for (int k = 0; mergeable && k < noperands; ++k) {
            const int64_t stride = ops[k]->strides[d] * static_cast<int64_t>(dtype_size(ops[k]->dtype));
            mergeable = l.byte_strides[k][prev] == stride * extent;
        }
        if (mergeable) {
            l.shape[prev] *= extent;
            for (int k = 0; k < noperands; ++k)
                l.byte_strides[k][prev] = ops[k]->strides[d] * static_cast<int64_t>(dtype_size(ops[k]->dtype));
            continue;
        }
        l.shape[l.ndim] = extent;
        for (int k = 0; k < noperands; ++k)
            l.byte_strides[k][l.ndim] = ops[k]->strides[d] * static_cast<int64_t>(dtype_size(ops[k]->dtype));
        ++l.ndim;
    }
    return l;
}

// A row whose elements are not adjacent is copied into a contiguous buffer, so
// the row kernels only ever see unit stride (and full-width vector loads).
template <class T>
const T* gather_row(const char* src, int64_t stride_elems, int64_t n, T* buf) {
    if (stride_elems == 1) return reinterpret_cast<const T*>(src);
    for (int64_t i = 0; i < n; ++i) std::memcpy(&buf[i], src + i * stride_elems * int64_t(sizeof(T)), sizeof(T));
    return buf;
}

template <class T>
void scatter_row(const T* buf, char* dst, int64_t stride_elems, int64_t n) {
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * stride_elems * int64_t(sizeof(T)), &buf[i], sizeof(T));
}

// Turns a run-time flag into a compile-time one: fn receives
// std::true_type or std::false_type.
template <class Fn>
void bool_switch(bool flag, Fn&& fn) {
    if (flag) fn(std::true_type{});
    else fn(std::false_type{});
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
