// Building blocks of the row kernels (LayerNorm/RMSNorm, softmax, dynamic
// per-row quantization, bias + activation): where row r of each of up to six
// arrays sharing one leading shape starts, a thread's share of a row held in
// float32 registers as 16-byte packs, and reductions over the threads that
// own a row, in a fixed order so that every run gives the same bits.
//
// Geometry: a row belongs to one warp (short rows, several rows per block) or
// to a whole block. The thread of rank t among T holds packs t, t + T,
// t + 2T, ... of the row, so consecutive threads load consecutive 16 bytes
// (coalesced) and each thread owns the same columns on every row. A row
// longer than the threads' registers hold is processed in chunks of that
// size.
#pragma once

#include <cstring>

#include "common.cuh"

namespace fastnn::cuda {

inline constexpr int kMaxRowOperands = 6;
inline constexpr int kWarpRowsPerBlock = 8;

template <class S>
inline constexpr int kPack = 16 / int(sizeof(S));

// The leading dimensions of the operands (their last dimension is the row),
// dims of extent 1 dropped and neighbours merged where every operand allows.
struct RowLayout {
    int ndim = 0;
    int64_t rows = 1;
    int64_t shape[kMaxDims] = {};
    int64_t byte_strides[kMaxRowOperands][kMaxDims] = {};
    char* base[kMaxRowOperands] = {};

    __device__ __forceinline__ char* row(int op, int64_t r) const {
        char* p = base[op];
        for (int d = ndim - 1; d > 0; --d) {
            p += (r % shape[d]) * byte_strides[op][d];
            r /= shape[d];
        }
        return ndim > 0 ? p + r * byte_strides[op][0] : p;
    }

    // Every row of operand op starts on a 16-byte boundary.
    bool rows_aligned(int op) const {
        if (reinterpret_cast<uintptr_t>(base[op]) % 16 != 0) return false;
        for (int d = 0; d < ndim; ++d)
            if (byte_strides[op][d] % 16 != 0) return false;
        return true;
    }
};

// ops[k] has ops[0]'s first `nlead` dimensions (a statistics tensor has only
// those); the binding layer has checked the shapes.
inline RowLayout make_row_layout(const TensorView* const* ops, int noperands, int nlead) {
    RowLayout l;
    for (int k = 0; k < noperands; ++k) l.base[k] = static_cast<char*>(ops[k]->data);
    for (int d = 0; d < nlead; ++d) {
        const int64_t extent = ops[0]->shape[d];
        l.rows *= extent;
        if (extent == 1) continue;
        int64_t stride[kMaxRowOperands];
        bool mergeable = l.ndim > 0;
        for (int k = 0; k < noperands; ++k) {
            stride[k] = ops[k]->strides[d] * int64_t(dtype_size(ops[k]->dtype));
            mergeable = mergeable && l.byte_strides[k][l.ndim - 1] == stride[k] * extent;
        }
        const int at = mergeable ? l.ndim - 1 : l.ndim++;
        l.shape[at] = mergeable ? l.shape[at] * extent : extent;
        for (int k = 0; k < noperands; ++k) l.byte_strides[k][at] = stride[k];
    }
    return l;
}

// A row's elements as seen by one operand: the row start, the element
// stride, and whether 16-byte packs may be loaded directly (dense rows,
// every row aligned).
template <class S>
struct RowPtr {
    char* row;
    int64_t stride;
    bool vector;

    // Elements [first, first + N) as float; those at or past n read as fill.
    // N is the row's own pack width, or that of another operand (a float32
    // weight beside a bfloat16 row): then several 16-byte loads.
    template <int N>
    __device__ __forceinline__ void load(int64_t first, int64_t n, float fill, float (&v)[N]) const {
        const S* p = reinterpret_cast<const S*>(row);
        if (N % kPack<S> == 0 && vector && first + N <= n) {
#pragma unroll
            for (int q = 0; q < N / kPack<S>; ++q) {
                S e[kPack<S>];
                const uint4 raw = *reinterpret_cast<const uint4*>(p + first + q * kPack<S>);
                memcpy(e, &raw, sizeof raw);
#pragma unroll
                for (int k = 0; k < kPack<S>; ++k) v[q * kPack<S> + k] = to_float(e[k]);
            }
            return;
        }
#pragma unroll
        for (int k = 0; k < N; ++k) v[k] = first + k < n ? to_float(p[(first + k) * stride]) : fill;
    }

    // Writes elements [first, min(first + N, n)), each rounded once.
    template <int N>
    __device__ __forceinline__ void store(int64_t first, int64_t n, const float (&v)[N]) const {
        S* p = reinterpret_cast<S*>(row);
        S e[N];
#pragma unroll
        for (int k = 0; k < N; ++k) e[k] = from_float<S>(v[k]);
        if (N % kPack<S> == 0 && vector && first + N <= n) {
#pragma unroll
            for (int q = 0; q < N / kPack<S>; ++q) {
                uint4 raw;
                memcpy(&raw, e + q * kPack<S>, sizeof raw);
                *reinterpret_cast<uint4*>(p + first + q * kPack<S>) = raw;
            }
            return;
        }
#pragma unroll
        for (int k = 0; k < N; ++k)
            if (first + k < n) p[(first + k) * stride] = e[k];
    }
};

// Who owns a row: one warp (kWarpRows, kWarpRowsPerBlock rows per block) or
// the whole block.
template <bool kWarpRows>
struct RowThreads {
    static constexpr int kRowsPerBlock = kWarpRows ? kWarpRowsPerBlock : 1;
    __device__ static int rank() { return kWarpRows ? int(threadIdx.x & 31) : int(threadIdx.x); }
    __device__ static int count() { return kWarpRows ? 32 : int(blockDim.x); }
    __device__ static int group() { return kWarpRows ? int(threadIdx.x >> 5) : 0; }
    __device__ static int64_t first_row() { return int64_t(blockIdx.x) * kRowsPerBlock + group(); }
    __device__ static int64_t row_step() { return int64_t(gridDim.x) * kRowsPerBlock; }
};

// A thread's share of one chunk of a row: kSlots packs; slot j of chunk c of
// the thread of rank t among T starts at element first(c, j, t, T).
template <class S, int kElems>
struct RowSlice {
    static constexpr int kWidth = kPack<S>;
    static constexpr int kSlots = kElems / kWidth;
    static_assert(kSlots * kWidth == kElems, "a slice is whole packs");
    float v[kSlots][kWidth];

    __device__ __forceinline__ static int64_t first(int c, int j, int t, int T) {
        return ((int64_t(c) * kSlots + j) * T + t) * kWidth;
    }
    __device__ __forceinline__ void load(const RowPtr<S>& src, int c, int t, int T, int64_t n, float fill) {
#pragma unroll
        for (int j = 0; j < kSlots; ++j) src.load(first(c, j, t, T), n, fill, v[j]);
    }
    __device__ __forceinline__ void store(const RowPtr<S>& dst, int c, int t, int T, int64_t n) const {
#pragma unroll
        for (int j = 0; j < kSlots; ++j) {
            const int64_t at = first(c, j, t, T);
            if (at < n) dst.store(at, n, v[j]);
        }
    }
};

// Rows in chunks of elems_per_thread x threads elements.
inline int row_chunks(int64_t n, int threads, int elems_per_thread) {
    const int64_t per_chunk = int64_t(threads) * elems_per_thread;
    return n > 0 ? static_cast<int>((n + per_chunk - 1) / per_chunk) : 1;
}

// Block size for block-per-row kernels: enough threads for the row to fit
// their registers (elems_per_thread each), in whole warps, at most max_threads.
inline int row_block_threads(int64_t n, int elems_per_thread, int max_threads) {
    const int64_t warps = (n + 32LL * elems_per_thread - 1) / (32LL * elems_per_thread);
    const int64_t threads = 32 * (warps > 0 ? warps : 1);
    return static_cast<int>(threads < max_threads ? threads : max_threads);
}

// The tiling every row kernel uses: rows of up to kWarpRowsMaxN elements go
// one per warp (kWarpElems per lane), kWarpRowsPerBlock to a block; longer
// rows one per block of at most kRowMaxThreads threads, kBlockElems elements
// per thread per chunk. 512 threads leave each 128 registers: 32 (forward)
// or 64 (backward) floats of row data, the rest addressing.
inline constexpr int kWarpElems = 16;
inline constexpr int kBlockElems = 32;
inline constexpr int64_t kWarpRowsMaxN = 32 * kWarpElems;
inline constexpr int kWarpBlockThreads = 32 * kWarpRowsPerBlock;
inline constexpr int kRowMaxThreads = 512;

struct RowTiling {
    bool warp_rows;
    int threads;
    int chunks;
    int rows_per_block;
};

inline RowTiling row_tiling(int64_t n) {
    if (n <= kWarpRowsMaxN) return {true, kWarpBlockThreads, 1, kWarpRowsPerBlock};
    const int threads = row_block_threads(n, kBlockElems, kRowMaxThreads);
    return {false, threads, row_chunks(n, threads, kBlockElems), 1};
}

// ---------------------------------------------------------------------------
// Reductions. V is a plain struct of 32-bit words (floats, ints, or doubles
// as word pairs); Op combines two values and must accept the identity value
// each thread starts from. The tree order is fixed, so results are
// reproducible bit for bit.

template <class V>
__device__ __forceinline__ V shuffle_down(const V& v, int delta) {
    static_assert(sizeof(V) % 4 == 0, "shuffled values are whole 32-bit words");
    constexpr int kWords = sizeof(V) / 4;
    int w[kWords];
    memcpy(w, &v, sizeof v);
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = __shfl_down_sync(0xffffffffu, w[i], delta);
    V out;
    memcpy(&out, w, sizeof out);
    return out;
}

template <class V>
__device__ __forceinline__ V shuffle_from(const V& v, int lane) {
    constexpr int kWords = sizeof(V) / 4;
    int w[kWords];
    memcpy(w, &v, sizeof v);
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = __shfl_sync(0xffffffffu, w[i], lane);
    V out;
    memcpy(&out, w, sizeof out);
    return out;
}

// The first `count` lanes' values combined into lane 0.
template <class V, class Op>
__device__ __forceinline__ V warp_reduce(V v, Op op, int count = 32) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) {
        const V other = shuffle_down(v, offset);
        if (lane + offset < count) v = op(v, other);
    }
    return v;
}

// Every thread of the row's owner (its warp, or its block) gets the combined
// value. The block form needs `scratch` of 33 entries in shared memory and
// must be reached by every thread of the block.
template <bool kWarpRows, class V, class Op>
__device__ __forceinline__ V row_allreduce(V v, Op op, V* scratch) {
    v = warp_reduce(v, op);
    if constexpr (kWarpRows) {
        return shuffle_from(v, 0);
    } else {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
        if (lane == 0) scratch[warp] = v;
        __syncthreads();
        if (warp == 0) {
            v = warp_reduce(scratch[lane < warps ? lane : 0], op, warps);
            if (lane == 0) scratch[32] = v;
        }
        __syncthreads();
        return scratch[32];
    }
}

struct Add {
    template <class V>
    __device__ V operator()(const V& a, const V& b) const { return a + b; }
};

}  // namespace fastnn::cuda
