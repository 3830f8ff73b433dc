// Row quantization and the packed layouts of the int8 GEMM (see quant.h for
// the weight layouts). Included by every quant kernel translation unit; all
// of it lives in that unit's ISA namespace.
//
// A panels: rows [p*MR, p*MR + MR) of A as [K4 / G][MR][G * 4] bytes, K4 =
// ceil(K/4) rounded up to a multiple of G: a k-group is the 4-byte word that
// one vpdpbusd lane consumes, and a panel line holds G consecutive groups of
// one row. G = 1 for the vector kernels (the MR words of a group adjacent,
// so the micro-kernel walks one sequential stream); G = 16 for AMX (a line
// is a 64-byte tile row, 64 k of one row). Missing rows and the K tail hold
// the value 0 (stored as 0x80 on the unsigned-A paths).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "fastnn/parallel.h"
#include "fastnn/tensor.h"
#include "quant_simd.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace fastnn::FASTNN_ISA_NAMESPACE {

inline constexpr int kStrip = 16;          // columns per packed strip
inline constexpr int64_t kRowChunk = 256;  // row elements handled per stack buffer

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Consecutive 64-byte-aligned arrays carved out of one workspace.
class WorkspaceLayout {
public:
    template <class T>
    std::size_t add(int64_t count) {
        const std::size_t at = size_;
        size_ += (static_cast<std::size_t>(count) * sizeof(T) + 63) / 64 * 64;
        return at;
    }
    std::size_t size() const { return size_; }

private:
    std::size_t size_ = 0;
};

template <class T>
const T* elem(const TensorView& t, int64_t i, int64_t j) {
    return static_cast<const T*>(t.data) + i * t.strides[0] + j * t.strides[1];
}

// A thread's share of a GEMM's (column tiles x row blocks) grid. The grid is
// cut into tn x tm rectangles, one per thread, choosing the cut whose largest
// rectangle is smallest; ties go to more column cuts (each thread then reads
// only its own part of the weight).
struct TileGrid {
    int64_t n_tiles, m_blocks, tn = 1, tm = 1;

    TileGrid(int64_t n_tiles_, int64_t m_blocks_, int64_t threads) : n_tiles(n_tiles_), m_blocks(m_blocks_) {
        int64_t best = -1;
        for (int64_t cn = threads; cn >= 1; --cn) {
            if (threads % cn) continue;
            const int64_t cm = threads / cn;
            const int64_t work = ceil_div(n_tiles, cn) * ceil_div(m_blocks, cm);
            if (best < 0 || work < best) best = work, tn = cn, tm = cm;
        }
        tn = std::min(tn, std::max<int64_t>(n_tiles, 1));
        tm = std::min(tm, std::max<int64_t>(m_blocks, 1));
    }
    int64_t workers() const { return tn * tm; }
    void share(int64_t w, int64_t* n0, int64_t* n1, int64_t* m0, int64_t* m1) const {
        const int64_t i = w / tm, j = w % tm;
        *n0 = i * n_tiles / tn, *n1 = (i + 1) * n_tiles / tn;
        *m0 = j * m_blocks / tm, *m1 = (j + 1) * m_blocks / tm;
    }
};

// Calls fn(src, n, k0) on chunks of a row of k elements; src is unit-stride:
// the row itself when it is dense, else a float32 copy of the chunk.
template <class T, class Fn>
void for_each_chunk(const T* x, int64_t stride, int64_t k, Fn&& fn) {
    if (stride == 1) {
        for (int64_t k0 = 0; k0 < k; k0 += kRowChunk) fn(x + k0, std::min(kRowChunk, k - k0), k0);
        return;
    }
    alignas(64) float buf[kRowChunk];
    for (int64_t k0 = 0; k0 < k; k0 += kRowChunk) {
        const int64_t n = std::min(kRowChunk, k - k0);
        for (int64_t i = 0; i < n; ++i) buf[i] = simd::to_float(x[(k0 + i) * stride]);
        fn(static_cast<const float*>(buf), n, k0);
    }
}

template <class S>
simd::VecF32 load_scaled(const S* src, const float* smooth, int64_t i, int n) {
    using simd::VecF32;
    VecF32 v = n == qsimd::W ? VecF32::load(src + i) : VecF32::load_partial(src + i, n);
    if (smooth) v = v * (n == qsimd::W ? VecF32::load(smooth + i) : VecF32::load_partial(smooth + i, n));
    return v;
}

// max_k |x[k] * smooth[k]|, or NaN when the row holds NaN or +-inf.
template <class T>
float row_absmax(const T* x, int64_t stride, int64_t k, const float* smooth) {
    using simd::VecF32;
    VecF32 m = VecF32::zero(), nonfinite = VecF32::zero();
    const VecF32 zero = VecF32::zero();
    for_each_chunk(x, stride, k, [&](auto src, int64_t n, int64_t k0) {
        const float* s = smooth ? smooth + k0 : nullptr;
        for (int64_t i = 0; i < n; i += qsimd::W) {
            const VecF32 v = load_scaled(src, s, i, static_cast<int>(std::min<int64_t>(qsimd::W, n - i)));
            m = simd::max(m, qsimd::abs(v));
            nonfinite = simd::fmadd(v, zero, nonfinite);  // inf * 0 and NaN * 0 are NaN
        }
    });
    const float flag = simd::reduce_add(nonfinite);
    return flag == flag ? simd::reduce_max(m) : flag;
}

// Dynamic per-row scale; its inverse is computed as torch computes 1 / scale.
inline float dynamic_scale(float absmax) { return absmax / 127.0f; }
inline float inverse_scale(float scale) { return scale > 0.0f ? 1.0f / scale : 0.0f; }

// Quantizes a row chunk by chunk into int8 (see quant.h for the rounding);
// sink(q, n, k0) receives each chunk, zero-padded to a multiple of 4 bytes.
template <class T, class Sink>
void quantize_row(const T* x, int64_t stride, int64_t k, const float* smooth, float inv, Sink&& sink) {
    using simd::VecF32;
    alignas(64) int8_t q[kRowChunk];
    const VecF32 s = VecF32::broadcast(inv);
    for_each_chunk(x, stride, k, [&](auto src, int64_t n, int64_t k0) {
        const float* sm = smooth ? smooth + k0 : nullptr;
        int64_t i = 0;
        for (; i + qsimd::W <= n; i += qsimd::W) qsimd::store_i8(load_scaled(src, sm, i, qsimd::W) * s, q + i);
        if (i < n) {
            const int rest = static_cast<int>(n - i);
            qsimd::store_i8_partial(load_scaled(src, sm, i, rest) * s, q + i, rest);
        }
        for (int64_t j = n; j % 4; ++j) q[j] = 0;
        sink(static_cast<const int8_t*>(q), n, k0);
    });
}

// Where group g of row r lies in a panel of mr rows and G groups per line.
template <int G>
inline uint8_t* panel_word(uint8_t* panel, int mr, int r, int64_t g) {
    return panel + ((g / G * mr + r) * G + g % G) * 4;
}

// Writes 4-byte words of row r of an A panel, a line's worth at a time;
// xor32 is 0x80808080 on the unsigned-A paths (a + 128 as uint8 == a ^ 0x80).
template <int G>
inline void put_panel_words(uint8_t* panel, int mr, int r, int64_t g0, const int8_t* q, int64_t words,
                            uint32_t xor32) {
    for (int64_t d = 0; d < words;) {
        const int64_t g = g0 + d, run = std::min<int64_t>(words - d, G - g % G);
        uint8_t* dst = panel_word<G>(panel, mr, r, g);
        if (run == G) std::memcpy(dst, q + 4 * d, 4 * G);  // a whole line: a fixed-size copy
        else std::memcpy(dst, q + 4 * d, static_cast<size_t>(run * 4));
        for (int64_t i = 0; xor32 && i < run; ++i) {
            uint32_t w;
            std::memcpy(&w, dst + 4 * i, 4);
            w ^= xor32;
            std::memcpy(dst + 4 * i, &w, 4);
        }
        d += run;
    }
}

// Groups [g0, g1) of row r hold the value 0.
template <int G>
inline void fill_panel_row(uint8_t* panel, int mr, int r, int64_t g0, int64_t g1, uint32_t xor32) {
    for (int64_t g = g0; g < g1; ++g) std::memcpy(panel_word<G>(panel, mr, r, g), &xor32, 4);
}

// Groups per panel row: K4 = ceil(K / 4) rounded up to whole panel lines.
template <int G>
inline int64_t panel_groups(int64_t k4) { return ceil_div(k4, G) * G; }

// A (M, K) int8, any strides, into panels of mr rows.
template <int G>
void pack_a_panels(const TensorView& a, int mr, uint32_t xor32, uint8_t* out) {
    const int64_t m = a.shape[0], k = a.shape[1], k4 = ceil_div(k, 4), kg = panel_groups<G>(k4);
    const int64_t panels = ceil_div(m, mr);
    const int64_t cs = a.strides[1];
    parallel_for(panels, std::max<int64_t>(1, 4096 / std::max<int64_t>(k4, 1)), [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; ++p) {
            uint8_t* panel = out + p * kg * mr * 4;
            for (int r = 0; r < mr; ++r) {
                const int64_t row = p * mr + r;
                if (row >= m) {
                    fill_panel_row<G>(panel, mr, r, 0, kg, xor32);
                    continue;
                }
                const int8_t* src = elem<int8_t>(a, row, 0);
                int64_t g = 0;
                if (cs == 1) {
                    put_panel_words<G>(panel, mr, r, 0, src, k / 4, xor32);
                    g = k / 4;
                }
                for (; g < k4; ++g) {
                    int8_t w[4] = {0, 0, 0, 0};
                    const int64_t kk = 4 * g, n = std::min<int64_t>(4, k - kk);
                    for (int64_t i = 0; i < n; ++i) w[i] = src[(kk + i) * cs];
                    put_panel_words<G>(panel, mr, r, g, w, 1, xor32);
                }
                fill_panel_row<G>(panel, mr, r, k4, kg, xor32);
            }
        }
    });
}

// One full 16-column strip of a row-major B (unit column stride): each k-group
// is a 4 x 16 byte transpose (two rounds of unpacks), and the column sums
// come from the transposed words (bytes 0+2 and 1+3 sign-extended to int16,
// then vpmaddwd by ones adds the pairs into int32).
inline constexpr int64_t kStripPrefetchGroups = 32;
inline void pack_strip_rows(const int8_t* b, int64_t sk, int64_t k, int8_t* dst, int32_t* colsum) {
    const int64_t k4 = ceil_div(k, 4);
#if defined(__SSE2__)
    const __m128i ones = _mm_set1_epi16(1);
    __m128i sums[4] = {_mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128(), _mm_setzero_si128()};
    for (int64_t g = 0; g < k4; ++g) {
        // The rows kStripPrefetchGroups groups ahead: a strip walks B down a
        // column of lines, a stride the hardware prefetcher may not follow.
        for (int i = 0; i < 4 && 4 * (g + kStripPrefetchGroups) + i < k; ++i)
            __builtin_prefetch(b + (4 * (g + kStripPrefetchGroups) + i) * sk, 0, 3);
        __m128i r[4];
        for (int i = 0; i < 4; ++i) {
            const int64_t kk = 4 * g + i;
            r[i] = kk < k ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kk * sk)) : _mm_setzero_si128();
        }
        const __m128i t0 = _mm_unpacklo_epi8(r[0], r[1]), t1 = _mm_unpackhi_epi8(r[0], r[1]);
        const __m128i t2 = _mm_unpacklo_epi8(r[2], r[3]), t3 = _mm_unpackhi_epi8(r[2], r[3]);
        const __m128i o[4] = {_mm_unpacklo_epi16(t0, t2), _mm_unpackhi_epi16(t0, t2), _mm_unpacklo_epi16(t1, t3),
                              _mm_unpackhi_epi16(t1, t3)};
        for (int q = 0; q < 4; ++q) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + g * 64 + q * 16), o[q]);
            const __m128i even = _mm_srai_epi16(_mm_slli_epi16(o[q], 8), 8), odd = _mm_srai_epi16(o[q], 8);
            sums[q] = _mm_add_epi32(sums[q], _mm_madd_epi16(_mm_add_epi16(even, odd), ones));
        }
    }
    for (int q = 0; q < 4; ++q) _mm_storeu_si128(reinterpret_cast<__m128i*>(colsum + q * 4), sums[q]);
#else
    for (int64_t g = 0; g < k4; ++g)
        for (int i = 0; i < 4; ++i) {
            const int64_t kk = 4 * g + i;
            for (int c = 0; c < kStrip; ++c) {
                const int8_t v = kk < k ? b[kk * sk + c] : 0;
                dst[g * 64 + c * 4 + i] = v;
                colsum[c] += v;
            }
        }
#endif
}

// B[k][n] = *(b + k*sk + n*sn), K x N, into the dynamic layout of quant.h
// (16-column strips of 4-byte k-groups) plus comp[n] = 128 * sum_k B[k][n]
// (wrapping, as the kernels' int32 arithmetic).
inline void pack_b_strips(const int8_t* b, int64_t sk, int64_t sn, int64_t k, int64_t n, int8_t* out,
                          int32_t* comp) {
    const int64_t k4 = ceil_div(k, 4), strips = ceil_div(n, kStrip);
    parallel_for(strips, std::max<int64_t>(1, 16384 / std::max<int64_t>(k, 1)), [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
            int8_t* dst = out + s * k4 * 64;
            int32_t colsum[kStrip] = {};
            const int cols = static_cast<int>(std::min<int64_t>(kStrip, n - s * kStrip));
            if (sk == 1) {  // each column's k-groups are contiguous words
                for (int c = 0; c < kStrip; ++c) {
                    const int8_t* src = b + (s * kStrip + c) * sn;
                    for (int64_t g = 0; g < k4; ++g) {
                        int8_t w[4] = {0, 0, 0, 0};
                        if (c < cols) {
                            const int64_t kk = 4 * g, cnt = std::min<int64_t>(4, k - kk);
                            std::memcpy(w, src + kk, cnt);
                            for (int64_t i = 0; i < cnt; ++i) colsum[c] += w[i];
                        }
                        std::memcpy(dst + g * 64 + c * 4, w, 4);
                    }
                }
            } else if (sn == 1 && cols == kStrip) {
                pack_strip_rows(b + s * kStrip, sk, k, dst, colsum);
            } else {
                for (int64_t g = 0; g < k4; ++g) {
                    for (int i = 0; i < 4; ++i) {
                        const int64_t kk = 4 * g + i;
                        const int8_t* src = b + kk * sk + s * kStrip * sn;
                        for (int c = 0; c < kStrip; ++c) {
                            const int8_t v = (kk < k && c < cols) ? src[c * sn] : 0;
                            dst[g * 64 + c * 4 + i] = v;
                            colsum[c] += v;
                        }
                    }
                }
            }
            for (int c = 0; c < kStrip; ++c)
                comp[s * kStrip + c] = static_cast<int32_t>(128u * static_cast<uint32_t>(colsum[c]));
        }
    });
}

// W (N, K) into the weight-only layout: per strip, one 16-byte row per k.
inline void pack_weight_only(const TensorView& w, int8_t* out) {
    const int64_t n = w.shape[0], k = w.shape[1], strips = ceil_div(n, kStrip);
    parallel_for(strips, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t s = s0; s < s1; ++s) {
            int8_t* dst = out + s * k * kStrip;
            for (int c = 0; c < kStrip; ++c) {
                const int64_t row = s * kStrip + c;
                if (row >= n) {
                    for (int64_t kk = 0; kk < k; ++kk) dst[kk * kStrip + c] = 0;
                    continue;
                }
                const int8_t* src = elem<int8_t>(w, row, 0);
                for (int64_t kk = 0; kk < k; ++kk) dst[kk * kStrip + c] = src[kk * w.strides[1]];
            }
        }
    });
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
