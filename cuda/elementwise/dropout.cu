// Dropout on CUDA with the CPU path's mask, bit for bit (contract and mapping:
// fastnn/dropout.h): element i is kept iff word (i / 16) mod 4 of
// Philox4x32-10(counter 16 floor(i / 64) + i mod 16, offset; key seed), shifted
// right by 8, is below round((1 - p) 2^24). Memory floor: read x, write y, no
// mask traffic (the backward regenerates it). Arithmetic: 10 rounds of two
// 32x32 -> 64-bit multiplies per counter, ~15 integer instructions per
// element, under the memory time of an H100 in fp32 and near it in bf16.
//
// A thread takes kPack consecutive counters of one 64-element block (4 in
// fp32, 8 in bf16), which gives it the 4 x kPack mask of the elements
// 16 j + h0 + [0, kPack), j < 4: four 16-byte packs, loaded and stored whole
// when the tensors are row-major and aligned. Other layouts address element i
// through the logical (row-major) shape, so the mask never depends on strides.
#include "common.cuh"
#include "fastnn_cuda/cuda_api.h"
#include "rows.cuh"

namespace fastnn::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kBlockElems = 64;  // 16 counters x 4 words

// The shape in row-major order with each operand's element strides; dims of
// extent 1 dropped, neighbours merged where both operands allow.
struct LogicalLayout {
    int ndim = 0;
    int64_t shape[kMaxDims] = {};
    int64_t strides[2][kMaxDims] = {};

    // Element offsets of logical index i in x and y.
    __device__ __forceinline__ void offsets(int64_t i, int64_t* x, int64_t* y) const {
        *x = *y = 0;
        for (int d = ndim - 1; d >= 0; --d) {
            const int64_t q = i / shape[d], r = i - q * shape[d];
            *x += r * strides[0][d];
            *y += r * strides[1][d];
            i = q;
        }
    }
};

LogicalLayout make_logical_layout(const TensorView& x, const TensorView& y) {
    LogicalLayout l;
    for (int d = 0; d < x.ndim; ++d) {
        if (x.shape[d] == 1) continue;
        const int prev = l.ndim - 1;
        if (prev >= 0 && l.strides[0][prev] == x.strides[d] * x.shape[d] &&
            l.strides[1][prev] == y.strides[d] * x.shape[d]) {
            l.shape[prev] *= x.shape[d];
            l.strides[0][prev] = x.strides[d];
            l.strides[1][prev] = y.strides[d];
            continue;
        }
        l.shape[l.ndim] = x.shape[d];
        l.strides[0][l.ndim] = x.strides[d];
        l.strides[1][l.ndim] = y.strides[d];
        ++l.ndim;
    }
    return l;
}

struct DropoutArgs {
    char* x;
    char* y;
    int64_t n;
    bool row_major;  // both operands: element i at offset i
    bool vector;     // row_major and both 16-byte aligned
    LogicalLayout layout;
    DropoutStream rng;
};

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint32_t k0, uint32_t k1) {
#pragma unroll
    for (int round = 0; round < 10; ++round) {
        const uint32_t hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
        const uint32_t hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
        c = make_uint4(hi1 ^ c.y ^ k0, lo1, hi0 ^ c.w ^ k1, lo0);
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return c;
}

template <class S, bool kRowMajor>
__global__ void __launch_bounds__(kThreads) dropout_kernel(const DropoutArgs a) {
    constexpr int E = kPack<S>, kGroups = 16 / E;
    const int64_t groups = ceil_div(a.n, kBlockElems) * kGroups;
    const S* x = reinterpret_cast<const S*>(a.x);
    S* y = reinterpret_cast<S*>(a.y);
    for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups; g += int64_t(gridDim.x) * blockDim.x) {
        const uint64_t block = static_cast<uint64_t>(g / kGroups);
        const int h0 = static_cast<int>(g % kGroups) * E;
        // Bit j * E + i: element 16 j + h0 + i is kept (one register for the
        // whole mask, so little stays live across the strided path's divisions).
        uint32_t keep = 0;
#pragma unroll
        for (int i = 0; i < E; ++i) {
            const uint64_t c = 16 * block + h0 + i;
            const uint4 w = philox4x32_10(make_uint4(static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32),
                                                     a.rng.offset[0], a.rng.offset[1]),
                                          a.rng.key[0], a.rng.key[1]);
            const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int j = 0; j < 4; ++j) keep |= uint32_t((words[j] >> 8) < a.rng.threshold) << (j * E + i);
        }
        const int64_t base = static_cast<int64_t>(block) * kBlockElems + h0;
        if constexpr (kRowMajor) {
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int64_t first = base + 16 * j;
                if (first >= a.n) break;
                const RowPtr<S> src{a.x, 1, a.vector}, dst{a.y, 1, a.vector};
                float v[E];
                src.load(first, a.n, 0.0f, v);
#pragma unroll
                for (int k = 0; k < E; ++k) v[k] *= (keep >> (j * E + k)) & 1 ? a.rng.scale : 0.0f;
                dst.store(first, a.n, v);
            }
        } else {
            // Rolled: the offsets' 64-bit divisions are calls, and unrolling
            // would keep the later elements' values live across them.
#pragma unroll 1
            for (int m = 0; m < 4 * E; ++m) {
                const int64_t i = base + 16 * (m / E) + m % E;
                if (i >= a.n) continue;
                int64_t xo, yo;
                a.layout.offsets(i, &xo, &yo);
                y[yo] = from_float<S>(to_float(x[xo]) * ((keep >> m) & 1 ? a.rng.scale : 0.0f));
            }
        }
    }
}

template <class S>
cudaError_t launch(const DropoutArgs& a, cudaStream_t stream) {
    const int64_t groups = ceil_div(a.n, kBlockElems) * (16 / kPack<S>);
    const unsigned grid = grid_for(groups, kThreads);
    if (a.row_major)
        dropout_kernel<S, true><<<grid, kThreads, 0, stream>>>(a);
    else
        dropout_kernel<S, false><<<grid, kThreads, 0, stream>>>(a);
    return cudaGetLastError();
}

bool row_major(const TensorView& t) {
    int64_t expected = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
        if (t.shape[d] != 1 && t.strides[d] != expected) return false;
        expected *= t.shape[d];
    }
    return true;
}

}  // namespace

cudaError_t dropout_apply(const DropoutParams& p, cudaStream_t stream) {
    DropoutArgs a{};
    a.n = numel(p.x);
    if (a.n == 0) return cudaSuccess;
    a.x = static_cast<char*>(p.x.data);
    a.y = static_cast<char*>(p.y.data);
    a.row_major = row_major(p.x) && row_major(p.y);
    a.vector = a.row_major && reinterpret_cast<uintptr_t>(a.x) % 16 == 0 && reinterpret_cast<uintptr_t>(a.y) % 16 == 0;
    a.layout = make_logical_layout(p.x, p.y);
    a.rng = dropout_stream(p);
    return p.x.dtype == DType::bf16 ? launch<__nv_bfloat16>(a, stream) : launch<float>(a, stream);
}

}  // namespace fastnn::cuda
