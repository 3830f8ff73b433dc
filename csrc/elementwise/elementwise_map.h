// The shared loop of every elementwise kernel: operand 0 is written, the rest
// are read, all of one dtype T. Dense rows run whole vectors plus one masked
// tail; strided rows are gathered into a vector, computed, and scattered, so
// the arithmetic (fn) is written once, on vectors, for both.
#pragma once

#include "fastnn/cpu_features.h"
#include "fastnn/parallel.h"
#include "fastnn/simd.h"
#include "fastnn/strided_loop.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {

// Below ~64 KiB per thread the wake-up of a worker costs more than it saves.
inline constexpr int64_t kElementwiseGrain = 16384;
// A pass that touches more bytes than the last-level cache holds (inputs and
// output together) finds its output's lines gone from cache, so it writes
// them with non-temporal stores: that saves the read for ownership of every
// destination line (a third of a unary op's traffic, a quarter of a binary
// one's). A smaller pass keeps ordinary stores: its output is often a
// recycled buffer still in cache, and the next op reads it from there (a
// unary op on 16 MiB with a 32 MiB L3 lost with streaming stores on a Zen 4:
// bench/notes/activation.md). Binary ops on 16 MiB float32 outputs (48 MiB
// touched), Zen 3 VM, 2 threads, inputs rotated: relu and sigmoid backward
// 1.58-1.62 -> 1.27-1.31 ms.
inline bool use_streaming_stores(int64_t bytes_touched) { return bytes_touched > cache_sizes().l3; }

template <class T, int NIn, class Fn>
void map_elementwise(const TensorView* const* operands, Fn fn) {
    using simd::VecF32;
    constexpr int W = VecF32::width;
    const StridedLayout layout = make_strided_layout(operands, NIn + 1);
    const bool dense = layout.inner_dense();
    // Every input counted as large as the output (a broadcast one is less).
    const bool streaming = dense && use_streaming_stores((NIn + 1) * layout.numel * int64_t(sizeof(T)));

    parallel_for(layout.numel, kElementwiseGrain, [&](int64_t begin, int64_t end) {
        for_each_row(layout, begin, end, [&](char* const* ptrs, int64_t n) {
            T* out = reinterpret_cast<T*>(ptrs[0]);
            VecF32 in[NIn];
            if (dense) {
                int64_t i = 0;
                if (streaming) {
                    // Peel up to the first output element aligned to a whole
                    // vector (the binding layer guarantees element alignment).
                    constexpr uintptr_t kVecBytes = W * sizeof(T);
                    const uintptr_t misaligned = reinterpret_cast<uintptr_t>(out) % kVecBytes;
                    const int64_t head = misaligned ? (kVecBytes - misaligned) / sizeof(T) : 0;
                    if (head > 0 && head < n) {
                        const int r = static_cast<int>(head);
                        for (int k = 0; k < NIn; ++k)
                            in[k] = VecF32::load_partial(reinterpret_cast<const T*>(ptrs[k + 1]), r);
                        fn(in).store_partial(out, r);
                        i = r;
                    }
                    for (; i + W <= n; i += W) {
                        for (int k = 0; k < NIn; ++k)
                            in[k] = simd::load_ahead(reinterpret_cast<const T*>(ptrs[k + 1]) + i);
                        fn(in).stream(out + i);
                    }
                }
                for (; i + W <= n; i += W) {
                    for (int k = 0; k < NIn; ++k) in[k] = simd::load_ahead(reinterpret_cast<const T*>(ptrs[k + 1]) + i);
                    fn(in).store(out + i);
                }
                if (i < n) {
                    const int r = static_cast<int>(n - i);
                    for (int k = 0; k < NIn; ++k)
                        in[k] = VecF32::load_partial(reinterpret_cast<const T*>(ptrs[k + 1]) + i, r);
                    fn(in).store_partial(out + i, r);
                }
                return;
            }
            T buf[NIn + 1][W];
            for (int64_t i = 0; i < n; i += W) {
                const int r = static_cast<int>(n - i < W ? n - i : W);
                for (int k = 0; k < NIn; ++k) {
                    const char* src = ptrs[k + 1] + i * layout.inner_stride(k + 1);
                    for (int j = 0; j < r; ++j)
                        std::memcpy(&buf[k + 1][j], src + j * layout.inner_stride(k + 1), sizeof(T));
                    in[k] = VecF32::load_partial(buf[k + 1], r);
                }
                fn(in).store_partial(buf[0], r);
                char* dst = ptrs[0] + i * layout.inner_stride(0);
                for (int j = 0; j < r; ++j) std::memcpy(dst + j * layout.inner_stride(0), &buf[0][j], sizeof(T));
            }
        });
        if (streaming) simd::store_fence();
    });
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
