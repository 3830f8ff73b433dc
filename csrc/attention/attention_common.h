// Pieces shared by the attention forward and backward kernels (compiled per
// ISA with them): tile sizes, strided element access, the score epilogue
// (scale, mask, causal cut) and the task loop.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <type_traits>

#include "fastnn/attention.h"
#include "fastnn/parallel.h"
#include "fastnn/simd.h"
#include "fastnn/simd_transpose.h"
#include "fastnn/workspace.h"
#include "tile_gemm.h"
#include "vec_exp.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::attention {

using simd::VecF32;
inline constexpr int W = VecF32::width;
// Queries per block: the vector (column) dimension of every score tile, so
// the online softmax runs down columns with plain vector max/add and no
// horizontal reductions. Keys per block: 64 x 64 fp32 scores are 16 KiB, and
// with the transposed query block (D x 64) they stay in L1/L2 for the block.
inline constexpr int kBlockQ = 64;
inline constexpr int kBlockK = 64;
// The scores S = Q K^T (forward, and the backward's recomputation, which
// must give the forward's bits) and the forward's P V (K = one key block)
// sum tile::kLongChunk terms per register chunk: a dot product over D or one
// key block in one chain (the forward's error stays within 0.5-1.1x
// PyTorch's: bench/notes/attention.md). The backward's dP, dV, dK and dQ
// keep tile::kChunk: dP - delta cancels.
inline constexpr float kNegInf = -std::numeric_limits<float>::infinity();
inline constexpr float kInf = std::numeric_limits<float>::infinity();

void attention_forward_kernel(const AttentionParams& p);
void attention_backward_kernel(const AttentionBackwardParams& p);

// The calling thread's attention workspace (fastnn/workspace.h) as n floats,
// kept for its next call. Called outside parallel regions only.
inline float* attention_workspace(int64_t n) {
    float* p = thread_workspace<float>(WorkspaceSlot::attention, static_cast<size_t>(std::max<int64_t>(n, 1)));
    if (!p) throw std::bad_alloc();
    return p;
}

// 64-byte aligned float scratch, freed on scope exit.
class Scratch {
public:
    explicit Scratch(int64_t n)
        : data_(static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(tile::round_up(std::max<int64_t>(n, 1), 16)) * 4))) {}
    ~Scratch() { std::free(data_); }
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    float* get() const { return data_; }

private:
    float* data_;
};

template <class T>
inline float load_float(const T* base, int64_t off) { return simd::to_float(base[off]); }

inline int64_t offset4(const TensorView& t, int64_t a, int64_t b, int64_t c, int64_t d) {
    return a * t.strides[0] + b * t.strides[1] + c * t.strides[2] + d * t.strides[3];
}

// dst[j * ld + i] = src[i * ls + j], i < rows, j < cols, in 16 x 16 register
// blocks: rows of Q, dO and O into the column layouts the products read, and
// the forward's Ot back into output rows (one strided store per element
// before: 7% of the backward's samples at D128).
inline void transpose(const float* src, int64_t ls, int64_t rows, int64_t cols, float* dst, int64_t ld) {
    for (int64_t i0 = 0; i0 < rows; i0 += 16)
        for (int64_t j0 = 0; j0 < cols; j0 += 16)
            simd::transpose_block(src + i0 * ls + j0, ls, static_cast<int>(std::min<int64_t>(16, rows - i0)),
                                  static_cast<int>(std::min<int64_t>(16, cols - j0)), dst + j0 * ld + i0, ld);
}

// Row (a, b, c) of a 4-D view as D floats, then zeros up to Dp: vector loads
// where the last dim is contiguous (the usual layouts), else element by
// element.
template <class T>
void load_row(const TensorView& t, const T* base, int64_t a, int64_t b, int64_t c, int64_t D, float* dst,
              int64_t Dp) {
    const T* row = base + offset4(t, a, b, c, 0);
    if (t.strides[3] == 1 || D == 1) {
        int64_t d = 0;
        for (; d + W <= D; d += W) VecF32::load(row + d).store(dst + d);
        if (d < D) VecF32::load_partial(row + d, static_cast<int>(D - d)).store_partial(dst + d, static_cast<int>(D - d));
    } else {
        for (int64_t d = 0; d < D; ++d) dst[d] = load_float(row, d * t.strides[3]);
    }
    std::fill(dst + D, dst + Dp, 0.0f);
}

// src[0, D) * scale into row (a, b, c) of a 4-D view.
template <class T>
void store_row(const float* src, float scale, int64_t D, const TensorView& t, T* base, int64_t a, int64_t b,
               int64_t c) {
    T* row = base + offset4(t, a, b, c, 0);
    const VecF32 s = VecF32::broadcast(scale);
    if (t.strides[3] == 1 || D == 1) {
        int64_t d = 0;
        for (; d + W <= D; d += W) (VecF32::load(src + d) * s).store(row + d);
        if (d < D)
            (VecF32::load_partial(src + d, static_cast<int>(D - d)) * s).store_partial(row + d, static_cast<int>(D - d));
    } else {
        for (int64_t d = 0; d < D; ++d) row[d * t.strides[3]] = simd::from_float<T>(src[d] * scale);
    }
}

// What turns one (batch, head)'s scaled q.k dot products into logits: the
// mask and the causal cut.
struct ScoreEpilogue {
    bool causal;
    const void* mask = nullptr;  // already offset to this (batch, head)
    DType mask_dtype = DType::boolean;
    int64_t mask_si = 0, mask_sj = 0;

    ScoreEpilogue(const TensorView& m, bool causal_, int64_t b, int64_t h) : causal(causal_) {
        if (!m.data) return;
        const int64_t off = b * m.strides[0] + h * m.strides[1];
        mask = static_cast<const char*>(m.data) + off * static_cast<int64_t>(dtype_size(m.dtype));
        mask_dtype = m.dtype;
        mask_si = m.strides[2];
        mask_sj = m.strides[3];
    }

    float mask_at(int64_t i, int64_t j) const {
        const int64_t off = i * mask_si + j * mask_sj;
        switch (mask_dtype) {
            case DType::boolean: return static_cast<const uint8_t*>(mask)[off] ? 0.0f : kNegInf;
            case DType::bf16: return simd::bf16_to_float(static_cast<const bf16*>(mask)[off]);
            default: return static_cast<const float*>(mask)[off];
        }
    }

    // St holds `cols` keys (from j0) as rows of ld floats, `npad` queries
    // (from i0, the first `rows` of them real) as columns, already scaled
    // (tile::gemm's scale: no pass of its own over the scores).
    void apply(float* St, int64_t ld, int64_t j0, int cols, int64_t i0, int rows, int npad) const {
        if (!mask && !(causal && j0 + cols - 1 > i0)) return;
        for (int j = 0; j < cols; ++j) {
            float* row = St + j * ld;
            if (mask && mask_si == 0) {
                // A key mask: one value for the whole row of queries.
                const VecF32 m = VecF32::broadcast(mask_at(0, j0 + j));
                for (int i = 0; i < npad; i += W) (VecF32::load(row + i) + m).store(row + i);
            } else if (mask) {
                for (int i = 0; i < rows; ++i) row[i] += mask_at(i0 + i, j0 + j);
            }
            if (causal && j0 + j > i0) {
                const int64_t cut = std::min<int64_t>(npad, j0 + j - i0);
                for (int64_t i = 0; i < cut; ++i) row[i] = kNegInf;
            }
        }
    }
};

// Calls body(next) once per thread, where next() hands out the task indices
// 0, 1, ... from a shared counter (an index >= ntasks: no task left); body
// allocates its scratch once for all the tasks it takes. Handing tasks out
// as threads free up, instead of round-robin by thread, keeps a thread that
// the hypervisor descheduled for a while from holding the others at the
// join: round-robin left ~5% of a forward's samples spinning in the thread
// pool (2-vCPU VM). A task's result does not depend on the thread that runs
// it, so the bits do not either.
template <class Body>
void for_each_task(int64_t ntasks, Body&& body) {
    std::atomic<int64_t> counter{0};
    const auto next = [&counter] { return counter.fetch_add(1, std::memory_order_relaxed); };
    const int64_t threads = std::min<int64_t>(num_threads(), ntasks);
    parallel_for(threads, 1, [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) body(next);
    });
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::attention
