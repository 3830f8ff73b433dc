// Max pooling, forward and backward, compiled once per ISA. Memory-bound:
// the floor is reading x once and writing out and the indices once; for
// overlapping windows every input is reused from L1. Work is split into
// (image, block of channels) units: with channels-last strides a block is 64
// adjacent channels, so the innermost loop runs over contiguous channels and
// vectorizes; with NCHW strides a block is one channel plane (max_plane). The
// backward pulls each input gradient from the outputs whose window holds it
// where it can (channels-last float), else scatters each output gradient to
// its argmax: a float32 sum of at most ceil(kernel / stride)^2 terms per
// input, as PyTorch's, added straight into the unit's slice of grad_in
// (zeroed first), or a float buffer for bf16.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "fastnn/parallel.h"
#include "fastnn/simd.h"
#include "pool_common.h"

namespace fastnn::FASTNN_ISA_NAMESPACE::pool {
namespace {

// Longest window axis that max_backward_pull handles.
constexpr int kMaxKernelTaps = 16;

// src[0], src[step], ... : one vector of every step-th float.
inline simd::VecF32 load_every(const float* src, int64_t step) {
    using simd::VecF32;
    if (step == 1) return VecF32::load(src);
#if FASTNN_SIMD_AVX512
    if (step == 2) {
        const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        return {_mm512_permutex2var_ps(_mm512_loadu_ps(src), even, _mm512_loadu_ps(src + 16))};
    }
#endif
    float lanes[VecF32::width];
    for (int i = 0; i < VecF32::width; ++i) lanes[i] = src[i * step];
    return VecF32::load(lanes);
}

// dst[i * stride] = row[i] * width + col[i], i < n, rows and columns held
// exactly in floats.
inline void store_flat_indices(const float* row, const float* col, int64_t width, int64_t n, int64_t* dst,
                               int64_t stride) {
    int64_t i = 0;
#if FASTNN_SIMD_AVX512
    if (stride == 1) {
        const __m512i w = _mm512_set1_epi64(width);
        for (; i + 8 <= n; i += 8) {
            const __m512i r = _mm512_cvttps_epi64(_mm256_loadu_ps(row + i));
            const __m512i c = _mm512_cvttps_epi64(_mm256_loadu_ps(col + i));
            _mm512_storeu_si512(dst + i, _mm512_add_epi64(_mm512_mullo_epi64(r, w), c));
        }
    }
#endif
    for (; i < n; ++i) dst[i * stride] = static_cast<int64_t>(row[i]) * width + static_cast<int64_t>(col[i]);
}

// dst[i * stride] = arg[i], i < lanes: one vector of argmaxes (whole-valued
// floats below 2^24) as int64. Lane by lane, the conversions and stores cost
// a third of a channels-last forward (N8 C64 112x112, k3 s2).
inline void store_index_lanes(simd::VecF32 arg, int lanes, int64_t* dst, int64_t stride) {
#if FASTNN_SIMD_AVX512
    if (stride == 1 && lanes == simd::VecF32::width) {
        _mm512_storeu_si512(dst, _mm512_cvttps_epi64(_mm512_castps512_ps256(arg.v)));
        _mm512_storeu_si512(dst + 8, _mm512_cvttps_epi64(_mm512_extractf32x8_ps(arg.v, 1)));
        return;
    }
#elif FASTNN_SIMD_AVX2
    if (stride == 1 && lanes == simd::VecF32::width) {
        const __m256i whole = _mm256_cvttps_epi32(arg.v);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(whole)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 4),
                            _mm256_cvtepi32_epi64(_mm256_extracti128_si256(whole, 1)));
        return;
    }
#endif
    float taps[simd::VecF32::width];
    arg.store(taps);
    for (int i = 0; i < lanes; ++i) dst[i * stride] = static_cast<int64_t>(taps[i]);
}

// Scratch of one thread for max_plane.
struct PlaneScratch {
    std::vector<float> rows, first_w, best, arg_h, arg_w;
};

// One (image, channel) plane of a max, a vector of output columns at a time.
// Each window row is copied into a float row padded with -inf, where a tap
// outside the input never wins (nothing is greater, and it is not NaN), just
// as when it is skipped; each tap is then one strided load for all columns.
// Taps in row-major window order, so ties keep the first maximum and NaN the
// last, as PyTorch. The argmax travels as two floats, its row and column
// (exact for any dimension below 2^24). The scalar form of this loop ran at
// 5% of the copy bandwidth (N8 C64 112x112, k3 s2 p1: 17.8 ms, channels-last
// 2.5), and so did a first vector form that padded each window row again for
// every output row (a strided scalar copy, then the window bounds per column
// and output row).
template <bool kIndices, class T>
void max_plane(const PoolParams& p, const Geometry& g, const T* xb, T* yb, int64_t* ib, PlaneScratch& scratch) {
    using simd::VecF32;
    constexpr int kLanes = VecF32::width;
    const TensorView &x = p.x, &y = p.out, &iv = p.indices;
    const PoolWindow& win = p.window;
    const int64_t step = win.stride[1], dil = win.dilation[1], taps = win.kernel[1], pad = win.pad[1];
    const int64_t OWp = (g.OW + kLanes - 1) / kLanes * kLanes;
    const int64_t len = (OWp - 1) * step + (taps - 1) * dil + 1;
    const int64_t xs = x.strides[3], xr = x.strides[2];
    const float neg_inf = -std::numeric_limits<float>::infinity();
    // Plus one vector: load_every's stride-2 form reads one float past a row.
    scratch.rows.resize(static_cast<size_t>(g.H * len + kLanes));
    scratch.first_w.resize(static_cast<size_t>(OWp));
    scratch.best.resize(static_cast<size_t>(OWp));
    scratch.arg_h.resize(static_cast<size_t>(OWp));
    scratch.arg_w.resize(static_cast<size_t>(OWp));
    float *rows = scratch.rows.data(), *first_w = scratch.first_w.data(), *best = scratch.best.data();
    float *arg_h = scratch.arg_h.data(), *arg_w = scratch.arg_w.data();
    // The plane's rows, padded, each converted once.
    const int64_t live_begin = std::min(pad, len), live_end = std::min(pad + g.W, len);
    for (int64_t h = 0; h < g.H; ++h) {
        float* dst = rows + h * len;
        const T* src = xb + h * xr;
        std::fill(dst, dst + live_begin, neg_inf);
        if constexpr (std::is_same_v<T, float>) {
            if (xs == 1) std::memcpy(dst + live_begin, src, sizeof(float) * (live_end - live_begin));
        }
        if (!std::is_same_v<T, float> || xs != 1)
            for (int64_t q = live_begin; q < live_end; ++q) dst[q] = simd::to_float(src[(q - pad) * xs]);
        std::fill(dst + live_end, dst + len, neg_inf);
    }
    // Each column's first tap inside the input (-1: none); where no tap wins
    // (all -inf), the index is the window's first tap.
    for (int64_t ow = 0; ow < OWp; ++ow) {
        const Span ws = window_span(win, 1, std::min(ow, g.OW - 1), g.W, g.OW);
        first_w[ow] = ws.begin < ws.end ? static_cast<float>(ws.begin) : -1.0f;
    }
    float lane_offsets[kLanes];
    for (int i = 0; i < kLanes; ++i) lane_offsets[i] = static_cast<float>(i * step);
    const VecF32 lane_w = VecF32::load(lane_offsets);
    for (int64_t oh = 0; oh < g.OH; ++oh) {
        const Span hs = window_span(win, 0, oh, g.H, g.OH);
        const bool rows_in = hs.begin < hs.end;
        const VecF32 first_h = VecF32::broadcast(rows_in ? static_cast<float>(hs.begin) : 0.0f);
        for (int64_t ow = 0; ow < OWp; ow += kLanes) {
            const VecF32 fw = VecF32::load(first_w + ow);
            const simd::MaskF32 none = simd::cmp_lt(fw, VecF32::zero());
            VecF32::broadcast(neg_inf).store(best + ow);
            (rows_in ? simd::select(none, VecF32::zero(), first_h) : VecF32::zero()).store(arg_h + ow);
            (rows_in ? simd::select(none, VecF32::zero(), fw) : VecF32::zero()).store(arg_w + ow);
        }
        for (int64_t h = hs.begin; h < hs.end; h += hs.step) {
            const float* row = rows + h * len;
            const VecF32 tap_h = VecF32::broadcast(static_cast<float>(h));
            for (int64_t ow0 = 0; ow0 < OWp; ow0 += kLanes) {
                VecF32 b = VecF32::load(best + ow0), ah = VecF32::load(arg_h + ow0), aw = VecF32::load(arg_w + ow0);
                for (int64_t t = 0; t < taps; ++t) {
                    const int64_t q0 = ow0 * step + t * dil;
                    const VecF32 v = load_every(row + q0, step);
                    const VecF32 tap_w = VecF32::broadcast(static_cast<float>(q0 - pad)) + lane_w;
                    const simd::MaskF32 take = simd::cmp_lt(b, v) | simd::is_nan(v);
                    b = simd::select(take, v, b);
                    if constexpr (kIndices) {
                        ah = simd::select(take, tap_h, ah);
                        aw = simd::select(take, tap_w, aw);
                    }
                }
                b.store(best + ow0);
                ah.store(arg_h + ow0);
                aw.store(arg_w + ow0);
            }
        }
        T* y_row = yb + oh * y.strides[2];
        if (y.strides[3] == 1) {
            int64_t ow = 0;
            for (; ow + kLanes <= g.OW; ow += kLanes) VecF32::load(best + ow).store(y_row + ow);
            if (ow < g.OW) VecF32::load(best + ow).store_partial(y_row + ow, static_cast<int>(g.OW - ow));
        } else {
            for (int64_t ow = 0; ow < g.OW; ++ow) y_row[ow * y.strides[3]] = simd::from_float<T>(best[ow]);
        }
        if constexpr (kIndices) store_flat_indices(arg_h, arg_w, g.W, g.OW, ib + oh * iv.strides[2], iv.strides[3]);
    }
}

// The max over one channels-last window (taps row-major, as PyTorch visits
// them: the first of equal maxima, the last NaN), a vector of channels at a
// time. The argmax travels beside the maximum as a float, exact while the
// plane has fewer than 2^24 pixels. x and y have unit channel strides.
template <bool kIndices, class T>
void max_pixel_channels_last(const T* xb, int64_t xhs, int64_t xws, const Span& hs, const Span& ws, int64_t width,
                             int64_t nc, T* y, int64_t* idx, int64_t idx_cs) {
    using simd::VecF32;
    constexpr int kLanes = VecF32::width;
    const float first = (hs.begin < hs.end && ws.begin < ws.end) ? static_cast<float>(hs.begin * width + ws.begin) : 0.0f;
    for (int64_t c = 0; c < nc; c += kLanes) {
        const int lanes = static_cast<int>(std::min<int64_t>(kLanes, nc - c));
        VecF32 best = VecF32::broadcast(-std::numeric_limits<float>::infinity()), arg = VecF32::broadcast(first);
        for (int64_t h = hs.begin; h < hs.end; h += hs.step)
            for (int64_t w = ws.begin; w < ws.end; w += ws.step) {
                const T* px = xb + h * xhs + w * xws + c;
                const VecF32 v = lanes == kLanes ? VecF32::load(px) : VecF32::load_partial(px, lanes);
                const VecF32 tap = VecF32::broadcast(static_cast<float>(h * width + w));
                const simd::MaskF32 take = simd::cmp_lt(best, v) | simd::is_nan(v);
                best = simd::select(take, v, best);
                if constexpr (kIndices) arg = simd::select(take, tap, arg);
            }
        if (lanes == kLanes) best.store(y + c);
        else best.store_partial(y + c, lanes);
        if constexpr (kIndices) store_index_lanes(arg, lanes, idx + c * idx_cs, idx_cs);
    }
}

template <bool kIndices, class T>
void forward_typed(const PoolParams& p) {
    const TensorView &x = p.x, &y = p.out, &iv = p.indices;
    const Geometry g(x, y, channels_inner(x, y));
    const bool exact_taps = g.H * g.W < (int64_t(1) << 24);
    const T* xd = static_cast<const T*>(x.data);
    T* yd = static_cast<T*>(y.data);
    int64_t* idx = static_cast<int64_t*>(iv.data);

    parallel_for(g.N * g.ncb, 1, [&](int64_t u0, int64_t u1) {
        float best[kChannelBlock];
        int64_t arg[kChannelBlock];
        PlaneScratch plane;
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / g.ncb, c0 = u % g.ncb * g.cblock;
            const int64_t nc = std::min(g.cblock, g.C - c0);
            const T* xb = xd + n * x.strides[0] + c0 * x.strides[1];
            if (g.cblock == 1) {
                max_plane<kIndices>(p, g, xb, yd + n * y.strides[0] + c0 * y.strides[1],
                                    kIndices ? idx + n * iv.strides[0] + c0 * iv.strides[1] : nullptr, plane);
                continue;
            }
            // Channels-last: unit channel strides.
            for (int64_t oh = 0; oh < g.OH; ++oh) {
                const Span hs = window_span(p.window, 0, oh, g.H, g.OH);
                for (int64_t ow = 0; ow < g.OW; ++ow) {
                    const Span ws = window_span(p.window, 1, ow, g.W, g.OW);
                    T* yp = yd + n * y.strides[0] + c0 + oh * y.strides[2] + ow * y.strides[3];
                    int64_t* ip = kIndices ? idx + n * iv.strides[0] + c0 * iv.strides[1] + oh * iv.strides[2] +
                                                 ow * iv.strides[3]
                                           : nullptr;
                    if (exact_taps) {
                        max_pixel_channels_last<kIndices>(xb, x.strides[2], x.strides[3], hs, ws, g.W, nc, yp, ip,
                                                          iv.strides[1]);
                        continue;
                    }
                    // Planes of 2^24 pixels or more: flat indices as integers.
                    const int64_t first = (hs.begin < hs.end && ws.begin < ws.end) ? hs.begin * g.W + ws.begin : 0;
                    std::fill_n(best, nc, -std::numeric_limits<float>::infinity());
                    std::fill_n(arg, nc, first);
                    for (int64_t h = hs.begin; h < hs.end; h += hs.step)
                        for (int64_t w = ws.begin; w < ws.end; w += ws.step) {
                            const T* px = xb + h * x.strides[2] + w * x.strides[3];
                            for (int64_t c = 0; c < nc; ++c) {
                                const float v = simd::to_float(px[c]);
                                const bool take = v > best[c] || std::isnan(v);
                                best[c] = take ? v : best[c];
                                if constexpr (kIndices) arg[c] = take ? h * g.W + w : arg[c];
                            }
                        }
                    for (int64_t c = 0; c < nc; ++c) {
                        yp[c] = simd::from_float<T>(best[c]);
                        if constexpr (kIndices) ip[c * iv.strides[1]] = arg[c];
                    }
                }
            }
        }
    });
}

// The max backward of one unit (image n, channels c0 .. c0 + nc) into a
// float slice: element (h, w, c) at dst + h * hs + w * ws + c * cs. The slice
// is zeroed, then receives each output gradient at its argmax (a flat
// h * W + w index).
template <class T>
void max_backward_unit(const PoolBackwardParams& p, const Geometry& g, int64_t n, int64_t c0, int64_t nc, float* dst,
                       int64_t hs, int64_t ws, int64_t cs) {
    const TensorView &gy = p.grad_out, &iv = p.indices;
    const T* gyd = static_cast<const T*>(gy.data);
    const int64_t* idx = static_cast<const int64_t*>(iv.data);
    const int64_t pixels = g.H * g.W;
    if (nc == 1 && ws == 1 && hs == g.W) {
        // A dense plane (NCHW): one fill, and the flat index is the offset.
        // (A fill per row and the general loop's per-element stride
        // arithmetic were half of this case's time.)
        std::fill_n(dst, pixels, 0.0f);
        const int64_t gs = gy.strides[3], is = iv.strides[3];
        for (int64_t oh = 0; oh < g.OH; ++oh) {
            const T* gy_row = gyd + n * gy.strides[0] + c0 * gy.strides[1] + oh * gy.strides[2];
            const int64_t* idx_row = idx + n * iv.strides[0] + c0 * iv.strides[1] + oh * iv.strides[2];
            for (int64_t ow = 0; ow < g.OW; ++ow) {
                const int64_t pixel = idx_row[ow * is];
                if (static_cast<uint64_t>(pixel) < static_cast<uint64_t>(pixels))
                    dst[pixel] += simd::to_float(gy_row[ow * gs]);
            }
        }
        return;
    }
    for (int64_t h = 0; h < g.H; ++h) {
        float* row = dst + h * hs;
        if (nc == 1 && ws == 1) {
            std::fill(row, row + g.W, 0.0f);  // a plane's row (NCHW)
            continue;
        }
        for (int64_t w = 0; w < g.W; ++w) {
            float* px = row + w * ws;
            if (cs == 1) std::fill(px, px + nc, 0.0f);  // a pixel's channels (channels-last)
            else
                for (int64_t c = 0; c < nc; ++c) px[c * cs] = 0.0f;
        }
    }
    // Rows of the slice W elements apart (dense planes): the flat index is
    // the offset, no division.
    const bool dense = hs == g.W * ws;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
        const T* gy_row = gyd + n * gy.strides[0] + c0 * gy.strides[1] + oh * gy.strides[2];
        const int64_t* idx_row = idx + n * iv.strides[0] + c0 * iv.strides[1] + oh * iv.strides[2];
        for (int64_t ow = 0; ow < g.OW; ++ow) {
            const T* gy_px = gy_row + ow * gy.strides[3];
            const int64_t* idx_px = idx_row + ow * iv.strides[3];
            for (int64_t c = 0; c < nc; ++c) {
                const int64_t pixel = idx_px[c * iv.strides[1]];
                if (pixel < 0 || pixel >= pixels) continue;
                const int64_t off = dense ? pixel * ws : (pixel / g.W) * hs + (pixel % g.W) * ws;
                dst[off + c * cs] += simd::to_float(gy_px[c * gy.strides[1]]);
            }
        }
    }
}

// The outputs whose window along one axis holds input position i, in
// increasing order: o with o * stride - pad + r * dilation = i, r < kernel.
int covering_outputs(const PoolWindow& w, int axis, int64_t i, int64_t out, int64_t* o) {
    int count = 0;
    for (int64_t r = w.kernel[axis] - 1; r >= 0; --r) {
        const int64_t t = i + w.pad[axis] - r * w.dilation[axis];
        if (t >= 0 && t % w.stride[axis] == 0 && t / w.stride[axis] < out) o[count++] = t / w.stride[axis];
    }
    return count;
}

// Adds, for every channel c < nc, g[c] into acc[c] where index[c] == pixel;
// returns how many matched.
int64_t add_matching(const int64_t* index, const float* g, int64_t pixel, int64_t nc, float* acc) {
    int64_t matched = 0;
    for (int64_t c = 0; c < nc; ++c) {
        const bool hit = index[c] == pixel;
        acc[c] += hit ? g[c] : 0.0f;
        matched += hit;
    }
    return matched;
}

// The lanes of one vector of channels whose index is pixel, and their count.
struct IndexHits {
    simd::MaskF32 mask;
    int count;
};

inline IndexHits index_hits(const int64_t* index, int64_t pixel) {
#if FASTNN_SIMD_AVX512
    const __m512i target = _mm512_set1_epi64(pixel);
    const __mmask16 hit = static_cast<__mmask16>(
        _mm512_cmpeq_epi64_mask(_mm512_loadu_si512(index), target) |
        (_mm512_cmpeq_epi64_mask(_mm512_loadu_si512(index + 8), target) << 8));
    return {{hit}, __builtin_popcount(hit)};
#elif FASTNN_SIMD_AVX2
    const __m256i target = _mm256_set1_epi64x(pixel);
    const __m256i lo = _mm256_cmpeq_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(index)), target);
    const __m256i hi = _mm256_cmpeq_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(index + 4)), target);
    // Per 128-bit lane the low halves of lo's two channels, then hi's; the
    // permute puts the four pairs back in channel order.
    const __m256 pairs = _mm256_shuffle_ps(_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi), 0x88);
    const __m256 hit = _mm256_castsi256_ps(_mm256_permute4x64_epi64(_mm256_castps_si256(pairs), 0xd8));
    return {{hit}, __builtin_popcount(static_cast<unsigned>(_mm256_movemask_ps(hit)))};
#else
    IndexHits hits{{}, 0};
    for (int c = 0; c < simd::VecF32::width; ++c) {
        hits.mask.m[c] = index[c] == pixel;
        hits.count += hits.mask.m[c];
    }
    return hits;
#endif
}

// The max backward of one channels-last float unit written in one pass, each
// input gradient pulled from the outputs whose window holds it: the sum of
// the gradients whose index is this pixel, added in the outputs' row-major
// order, the order in which max_backward_unit's scatter adds them (the same
// bits). The scatter zeroes the slice first and then adds to it at random:
// 0.67x torch at N8 C64 112x112 (k3 s2).
// The backward op takes its indices from the caller. Every index of an
// output lies in that output's window when it came from the forward with
// this window, and then each is matched by exactly one pixel: `matched`
// reaches OH * OW * nc. Otherwise (an index from elsewhere or out of range)
// false is returned and the caller scatters instead.
template <int kNC>
bool max_backward_pull(const PoolBackwardParams& p, const Geometry& g, int64_t n, int64_t c0, int64_t nc,
                       float* gx) {
    using simd::VecF32;
    const TensorView &gy = p.grad_out, &iv = p.indices, &gxv = p.grad_in;
    const float* gyd = static_cast<const float*>(gy.data) + n * gy.strides[0] + c0;
    const int64_t* idx = static_cast<const int64_t*>(iv.data) + n * iv.strides[0] + c0;
    int64_t matched = 0;
    int64_t oh_list[kMaxKernelTaps], ow_list[kMaxKernelTaps];
    for (int64_t h = 0; h < g.H; ++h) {
        const int nh = covering_outputs(p.window, 0, h, g.OH, oh_list);
        for (int64_t w = 0; w < g.W; ++w) {
            const int nw = covering_outputs(p.window, 1, w, g.OW, ow_list);
            float* out = gx + h * gxv.strides[2] + w * gxv.strides[3];
            const int64_t pixel = h * g.W + w;
            if constexpr (kNC > 0 && kNC % VecF32::width == 0) {
                // A block's sums stay in registers: zeroing the pixel's slice
                // in memory (a rep stos of 256 bytes) and adding into it took a
                // fifth of the AVX2 backward's time.
                constexpr int kVecs = kNC / VecF32::width;
                VecF32 acc[kVecs];
                for (VecF32& sum : acc) sum = VecF32::zero();
                for (int a = 0; a < nh; ++a)
                    for (int b = 0; b < nw; ++b) {
                        const int64_t* index = idx + oh_list[a] * iv.strides[2] + ow_list[b] * iv.strides[3];
                        const float* grad = gyd + oh_list[a] * gy.strides[2] + ow_list[b] * gy.strides[3];
                        for (int v = 0; v < kVecs; ++v) {
                            const IndexHits hits = index_hits(index + v * VecF32::width, pixel);
                            acc[v] = acc[v] + simd::select(hits.mask, VecF32::load(grad + v * VecF32::width),
                                                           VecF32::zero());
                            matched += hits.count;
                        }
                    }
                for (int v = 0; v < kVecs; ++v) acc[v].store(out + v * VecF32::width);
            } else {
                std::fill_n(out, nc, 0.0f);
                for (int a = 0; a < nh; ++a)
                    for (int b = 0; b < nw; ++b)
                        matched += add_matching(idx + oh_list[a] * iv.strides[2] + ow_list[b] * iv.strides[3],
                                                gyd + oh_list[a] * gy.strides[2] + ow_list[b] * gy.strides[3],
                                                pixel, nc, out);
            }
        }
    }
    return matched == g.OH * g.OW * nc;
}

template <class T>
void backward_typed(const PoolBackwardParams& p) {
    const TensorView &gy = p.grad_out, &gx = p.grad_in;
    const Geometry g(gx, gy, channels_inner(gx, gy));
    T* gxd = static_cast<T*>(gx.data);

    // Pulling needs unit channel strides (vector loads over channels) and
    // windows of at most kMaxKernelTaps taps per axis.
    const bool pull = g.cblock > 1 && p.indices.strides[1] == 1 && gy.strides[1] == 1 &&
                      p.window.kernel[0] <= kMaxKernelTaps && p.window.kernel[1] <= kMaxKernelTaps;
    parallel_for(g.N * g.ncb, 1, [&](int64_t u0, int64_t u1) {
        std::vector<float> buf(std::is_same_v<T, float> ? 0 : static_cast<size_t>(g.H * g.W * g.cblock));
        for (int64_t u = u0; u < u1; ++u) {
            const int64_t n = u / g.ncb, c0 = u % g.ncb * g.cblock;
            const int64_t nc = std::min(g.cblock, g.C - c0);
            T* gb = gxd + n * gx.strides[0] + c0 * gx.strides[1];
            if constexpr (std::is_same_v<T, float>) {
                const bool pulled = pull && (nc == kChannelBlock ? max_backward_pull<kChannelBlock>(p, g, n, c0, nc, gb)
                                                                 : max_backward_pull<0>(p, g, n, c0, nc, gb));
                if (!pulled)
                    max_backward_unit<T>(p, g, n, c0, nc, gb, gx.strides[2], gx.strides[3], gx.strides[1]);
            } else {
                max_backward_unit<T>(p, g, n, c0, nc, buf.data(), g.W * g.cblock, g.cblock, 1);
                for (int64_t pixel = 0; pixel < g.H * g.W; ++pixel) {
                    T* o = gb + (pixel / g.W) * gx.strides[2] + (pixel % g.W) * gx.strides[3];
                    for (int64_t c = 0; c < nc; ++c)
                        o[c * gx.strides[1]] = simd::from_float<T>(buf[pixel * g.cblock + c]);
                }
            }
        }
    });
}

}  // namespace

void max_forward(const PoolParams& p) {
    const bool indices = p.indices.data != nullptr;
    if (p.x.dtype == DType::bf16) indices ? forward_typed<true, bf16>(p) : forward_typed<false, bf16>(p);
    else indices ? forward_typed<true, float>(p) : forward_typed<false, float>(p);
}

void max_backward(const PoolBackwardParams& p) {
    if (p.grad_out.dtype == DType::bf16) backward_typed<bf16>(p);
    else backward_typed<float>(p);
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE::pool
