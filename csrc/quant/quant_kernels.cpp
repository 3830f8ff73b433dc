// Quantization kernels, compiled once per ISA (CMake: FASTNN_KERNEL_SOURCES):
// quantize / dequantize / dynamic per-row quantization (memory-bound: one
// read of x, one write of q), weight packing, the weight-only Linear, and the
// int8 GEMM variant for CPUs without VNNI.
//
// Weight-only Linear floor: N*K bytes of int8 weight plus M*(K+N) activations;
// at 1-16 tokens the weight dominates, so the target is copy bandwidth on a
// quarter of fp32's bytes. Tile: MR rows x 16*NS columns of fp32
// accumulators; per k it widens 16*NS weight bytes once (vpmovsxbd +
// vcvtdq2ps) and reuses them for MR rows of broadcast activations; the
// per-column scale is applied once, in the epilogue.
#include "fastnn/quant.h"
#include "int8_gemm.h"

#include <vector>

namespace fastnn::FASTNN_ISA_NAMESPACE {

#if FASTNN_SIMD_AVX512

// int8 x int8 with vpmaddwd: both operands sign-extended to int16 pairs
// (even bytes: shift left then arithmetic right; odd bytes: arithmetic right),
// two vpmaddwd give a0 b0 + a2 b2 and a1 b1 + a3 b3 exactly.
struct DotMadd {
    using V = __m512i;
    struct A { __m512i lo, hi; };
    using B = A;
    static constexpr int kLanes = 16, kMR = 4, kNV = 4;
    static constexpr bool kUnsignedA = false;
    static V zero() { return _mm512_setzero_si512(); }
    static A split(__m512i x) { return {_mm512_srai_epi16(_mm512_slli_epi16(x, 8), 8), _mm512_srai_epi16(x, 8)}; }
    static B load_b(const int8_t* p) { return split(_mm512_loadu_si512(p)); }
    static V load(const int32_t* p) { return _mm512_loadu_si512(p); }
    static A bcast_a(const uint8_t* p) {
        int32_t w;
        std::memcpy(&w, p, 4);
        return split(_mm512_set1_epi32(w));
    }
    static V dot(V acc, const A& a, const B& b) {
        return _mm512_add_epi32(acc, _mm512_add_epi32(_mm512_madd_epi16(a.lo, b.lo), _mm512_madd_epi16(a.hi, b.hi)));
    }
    static void store(int32_t* p, V v) { _mm512_storeu_si512(p, v); }
};
inline constexpr int kWoMR = 8, kWoNS = 2;

#elif FASTNN_SIMD_AVX2

struct DotMadd {
    using V = __m256i;
    struct A { __m256i lo, hi; };
    using B = A;
    static constexpr int kLanes = 8, kMR = 4, kNV = 2;
    static constexpr bool kUnsignedA = false;
    static V zero() { return _mm256_setzero_si256(); }
    static A split(__m256i x) { return {_mm256_srai_epi16(_mm256_slli_epi16(x, 8), 8), _mm256_srai_epi16(x, 8)}; }
    static B load_b(const int8_t* p) { return split(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
    static V load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static A bcast_a(const uint8_t* p) {
        int32_t w;
        std::memcpy(&w, p, 4);
        return split(_mm256_set1_epi32(w));
    }
    static V dot(V acc, const A& a, const B& b) {
        return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(a.lo, b.lo), _mm256_madd_epi16(a.hi, b.hi)));
    }
    static void store(int32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
};
inline constexpr int kWoMR = 6, kWoNS = 1;

#else

// Portable: plain int32 arithmetic. Partial sums of a signed int8 dot product
// are themselves dot products of fewer terms, so they fit int32 whenever the
// final one does (K <= kInt8GemmMaxK): no overflow.
struct DotMadd {
    struct V { int32_t v[8]; };
    struct A { int32_t v[4]; };
    struct B { int8_t v[32]; };
    static constexpr int kLanes = 8, kMR = 4, kNV = 2;
    static constexpr bool kUnsignedA = false;
    static V zero() { return {}; }
    static B load_b(const int8_t* p) {
        B b;
        std::memcpy(b.v, p, sizeof b.v);
        return b;
    }
    static V load(const int32_t* p) {
        V v;
        std::memcpy(v.v, p, sizeof v.v);
        return v;
    }
    static A bcast_a(const uint8_t* p) {
        return {{static_cast<int8_t>(p[0]), static_cast<int8_t>(p[1]), static_cast<int8_t>(p[2]),
                 static_cast<int8_t>(p[3])}};
    }
    static V dot(V acc, const A& a, const B& b) {
        for (int i = 0; i < kLanes; ++i)
            for (int t = 0; t < 4; ++t) acc.v[i] += a.v[t] * b.v[i * 4 + t];
        return acc;
    }
    static void store(int32_t* p, const V& v) { std::memcpy(p, v.v, sizeof v.v); }
};
inline constexpr int kWoMR = 4, kWoNS = 1;

#endif

namespace {

using qsimd::W;
using simd::VecF32;

float scale_at(const TensorView& s, QuantAxis axis, int64_t r) {
    const float* p = static_cast<const float*>(s.data);
    return axis == QuantAxis::tensor ? p[0] : p[r * s.strides[0]];
}

// 1 / scale per column, for scales along the columns (quantize) or the
// scales themselves (dequantize); nullptr for the other axes.
std::vector<float> column_factors(const TensorView& s, QuantAxis axis, int64_t cols, bool inverse) {
    std::vector<float> f;
    if (axis != QuantAxis::cols) return f;
    f.resize(static_cast<std::size_t>(cols));
    const float* p = static_cast<const float*>(s.data);
    for (int64_t c = 0; c < cols; ++c) f[c] = inverse ? 1.0f / p[c * s.strides[0]] : p[c * s.strides[0]];
    return f;
}

int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)); }

void write_q_chunk(const TensorView& q, int64_t r, const int8_t* src, int64_t n, int64_t k0) {
    int8_t* dst = static_cast<int8_t*>(q.data) + r * q.strides[0] + k0 * q.strides[1];
    if (q.strides[1] == 1) std::memcpy(dst, src, static_cast<std::size_t>(n));
    else for (int64_t i = 0; i < n; ++i) dst[i * q.strides[1]] = src[i];
}

template <class T>
void quantize_typed(const QuantizeParams& p) {
    const int64_t rows = p.x.shape[0], cols = p.x.shape[1];
    const std::vector<float> inv_cols = column_factors(p.scale, p.axis, cols, true);
    parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const bool per_col = p.axis == QuantAxis::cols;
            const float inv = per_col ? 1.0f : 1.0f / scale_at(p.scale, p.axis, r);
            quantize_row(elem<T>(p.x, r, 0), p.x.strides[1], cols, per_col ? inv_cols.data() : nullptr, inv,
                         [&](const int8_t* q, int64_t n, int64_t k0) { write_q_chunk(p.q, r, q, n, k0); });
        }
    });
}

void quantize_kernel(const QuantizeParams& p) {
    if (p.x.dtype == DType::bf16) quantize_typed<bf16>(p);
    else quantize_typed<float>(p);
}

template <class T>
void dequantize_typed(const DequantizeParams& p) {
    const int64_t rows = p.q.shape[0], cols = p.q.shape[1];
    const std::vector<float> col_scale = column_factors(p.scale, p.axis, cols, false);
    parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
        alignas(64) int8_t qbuf[kRowChunk];
        alignas(64) float ybuf[kRowChunk];
        for (int64_t r = r0; r < r1; ++r) {
            const int8_t* q = elem<int8_t>(p.q, r, 0);
            T* out = static_cast<T*>(p.x.data) + r * p.x.strides[0];
            const VecF32 row_scale =
                VecF32::broadcast(p.axis == QuantAxis::cols ? 1.0f : scale_at(p.scale, p.axis, r));
            for (int64_t k0 = 0; k0 < cols; k0 += kRowChunk) {
                const int64_t n = std::min(kRowChunk, cols - k0);
                for (int64_t i = 0; i < n; ++i) qbuf[i] = q[(k0 + i) * p.q.strides[1]];
                for (int64_t i = 0; i < n; i += W) {
                    const int cnt = static_cast<int>(std::min<int64_t>(W, n - i));
                    VecF32 v = (cnt == W ? qsimd::load_i8(qbuf + i) : qsimd::load_i8_partial(qbuf + i, cnt)) * row_scale;
                    if (!col_scale.empty()) v = v * VecF32::load_partial(col_scale.data() + k0 + i, cnt);
                    v.store_partial(ybuf + i, cnt);
                }
                for (int64_t i = 0; i < n; ++i) out[(k0 + i) * p.x.strides[1]] = simd::from_float<T>(ybuf[i]);
            }
        }
    });
}

void dequantize_kernel(const DequantizeParams& p) {
    if (p.x.dtype == DType::bf16) dequantize_typed<bf16>(p);
    else dequantize_typed<float>(p);
}

template <class T>
void quantize_rows_typed(const QuantizeRowsParams& p) {
    const int64_t rows = p.x.shape[0], cols = p.x.shape[1];
    const float* smooth = static_cast<const float*>(p.smooth_inv.data);
    float* scales = static_cast<float*>(p.scale.data);
    parallel_for(rows, row_grain(cols), [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            const T* x = elem<T>(p.x, r, 0);
            const float scale = dynamic_scale(row_absmax(x, p.x.strides[1], cols, smooth));
            scales[r * p.scale.strides[0]] = scale;
            quantize_row(x, p.x.strides[1], cols, smooth, inverse_scale(scale),
                         [&](const int8_t* q, int64_t n, int64_t k0) { write_q_chunk(p.q, r, q, n, k0); });
        }
    });
}

void quantize_rows_kernel(const QuantizeRowsParams& p) {
    if (p.x.dtype == DType::bf16) quantize_rows_typed<bf16>(p);
    else quantize_rows_typed<float>(p);
}

void pack_weight_kernel(const QuantPackWeightParams& p) {
    const int64_t n = p.w.shape[0], k = p.w.shape[1];
    auto* out = static_cast<int8_t*>(p.packed.data);
    if (p.layout == QuantWeightLayout::weight_only) return pack_weight_only(p.w, out);
    const int64_t strip_bytes = ceil_div(k, 4) * 64;
    auto* comp = reinterpret_cast<int32_t*>(out + ceil_div(n, kStrip) * strip_bytes);
    pack_b_strips(static_cast<const int8_t*>(p.w.data), p.w.strides[1], p.w.strides[0], k, n, out, comp);
}

// ---- weight-only Linear ----------------------------------------------------

constexpr int kWoNR = kWoNS * kStrip;
constexpr int kWoV = kWoNR / W;  // vectors per tile row

// Each accumulator sums kWoSumSteps products, then joins the tile's total:
// the rounding error grows like kWoSumSteps + K / kWoSumSteps instead of K.
// PyTorch's matrix-vector path (one token) sums a dot product in many
// interleaved partial sums; one running sum per output was up to 4 ulps off
// at K = 64 where PyTorch's was under one. One add per 16 FMAs.
constexpr int64_t kWoSumSteps = 16;

template <class T, int R, int V>
void wo_tile(const T* x, int64_t xrs, int64_t xcs, const int8_t* w, int64_t strip_bytes, int64_t k, float* c) {
    VecF32 total[R][V];
    FASTNN_UNROLL for (int r = 0; r < R; ++r)
        FASTNN_UNROLL for (int v = 0; v < V; ++v) total[r][v] = VecF32::zero();
    const int8_t* wp[V];
    FASTNN_UNROLL for (int v = 0; v < V; ++v) wp[v] = w + (v * W / kStrip) * strip_bytes + (v * W) % kStrip;
    for (int64_t k0 = 0; k0 < k; k0 += kWoSumSteps) {
        const int64_t k1 = std::min(k, k0 + kWoSumSteps);
        VecF32 acc[R][V];
        FASTNN_UNROLL for (int r = 0; r < R; ++r)
            FASTNN_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = VecF32::zero();
        for (int64_t kk = k0; kk < k1; ++kk) {
            VecF32 wv[V];
            FASTNN_UNROLL for (int v = 0; v < V; ++v) wv[v] = qsimd::load_i8(wp[v] + kk * kStrip);
            FASTNN_UNROLL for (int r = 0; r < R; ++r) {
                const VecF32 xb = VecF32::broadcast(simd::to_float(x[r * xrs + kk * xcs]));
                FASTNN_UNROLL for (int v = 0; v < V; ++v) acc[r][v] = simd::fmadd(xb, wv[v], acc[r][v]);
            }
        }
        FASTNN_UNROLL for (int r = 0; r < R; ++r)
            FASTNN_UNROLL for (int v = 0; v < V; ++v) total[r][v] = total[r][v] + acc[r][v];
    }
    FASTNN_UNROLL for (int r = 0; r < R; ++r)
        FASTNN_UNROLL for (int v = 0; v < V; ++v) total[r][v].store(c + r * kWoNR + v * W);
}

template <class T>
using WoTileFn = void (*)(const T*, int64_t, int64_t, const int8_t*, int64_t, int64_t, float*);

template <class T, int R, int V = kWoV>
WoTileFn<T> wo_pick_v(int v) {
    if constexpr (V == 1) return &wo_tile<T, R, 1>;
    else return v == V ? &wo_tile<T, R, V> : wo_pick_v<T, R, V - 1>(v);
}
template <class T, int R = kWoMR>
WoTileFn<T> wo_pick(int r, int v) {
    if constexpr (R == 1) return wo_pick_v<T, 1>(v);
    else return r == R ? wo_pick_v<T, R>(v) : wo_pick<T, R - 1>(r, v);
}

template <class T>
void wo_store_row(const QuantLinearParams& p, const float* w_scale, const float* bias, int64_t m, int64_t n0,
                  const float* c, int nc) {
    T* out = static_cast<T*>(p.out.data) + m * p.out.strides[0] + n0 * p.out.strides[1];
    for (int j = 0; j < nc; j += W) {
        const int cnt = std::min(W, nc - j);
        const VecF32 s = VecF32::load(w_scale + n0 + j);
        const VecF32 acc = VecF32::load(c + j);
        const VecF32 y = bias ? simd::fmadd(acc, s, VecF32::load(bias + n0 + j)) : acc * s;
        if (p.out.strides[1] == 1) {
            if (cnt == W) y.store(out + j);
            else y.store_partial(out + j, cnt);
        } else {
            float tmp[W];
            y.store(tmp);
            for (int i = 0; i < cnt; ++i) out[(j + i) * p.out.strides[1]] = simd::from_float<T>(tmp[i]);
        }
    }
}

template <class T>
void linear_weight_only_typed(const QuantLinearParams& p) {
    const int64_t m = p.x.shape[0], k = p.x.shape[1], n = p.w_scale.shape[0];
    const int64_t n_pad = ceil_div(n, kStrip) * kStrip, strip_bytes = k * kStrip;
    WorkspaceLayout ws;
    const std::size_t s_at = ws.add<float>(n_pad), b_at = ws.add<float>(n_pad);
    char* base = static_cast<char*>(quant_workspace(ws.size()));
    float* w_scale = reinterpret_cast<float*>(base + s_at);
    float* bias = p.bias.data ? reinterpret_cast<float*>(base + b_at) : nullptr;
    for (int64_t i = 0; i < n_pad; ++i) {
        w_scale[i] = i < n ? static_cast<const float*>(p.w_scale.data)[i * p.w_scale.strides[0]] : 0.0f;
        if (bias) bias[i] = i < n ? static_cast<const float*>(p.bias.data)[i * p.bias.strides[0]] : 0.0f;
    }
    const TileGrid grid(ceil_div(n, kWoNR), ceil_div(m, kWoMR), num_threads());
    const auto* packed = static_cast<const int8_t*>(p.packed.data);
    parallel_for(grid.workers(), 1, [&](int64_t w0, int64_t w1) {
        alignas(64) float c[kWoMR * kWoNR];
        for (int64_t wk = w0; wk < w1; ++wk) {
            int64_t nt0, nt1, b0, b1;
            grid.share(wk, &nt0, &nt1, &b0, &b1);
            for (int64_t nt = nt0; nt < nt1; ++nt) {
                const int64_t n0 = nt * kWoNR;
                const int nc = static_cast<int>(std::min<int64_t>(kWoNR, n - n0));
                const int nv = static_cast<int>(ceil_div(nc, W));
                const int8_t* w = packed + (n0 / kStrip) * strip_bytes;
                for (int64_t b = b0; b < b1; ++b) {
                    const int64_t m0 = b * kWoMR;
                    const int mr = static_cast<int>(std::min<int64_t>(kWoMR, m - m0));
                    wo_pick<T>(mr, nv)(elem<T>(p.x, m0, 0), p.x.strides[0], p.x.strides[1], w, strip_bytes, k, c);
                    for (int r = 0; r < mr; ++r) wo_store_row<T>(p, w_scale, bias, m0 + r, n0, c + r * kWoNR, nc);
                }
            }
        }
    });
}

void linear_weight_only_kernel(const QuantLinearParams& p) {
    if (p.x.shape[0] == 0 || p.w_scale.shape[0] == 0) return;
    if (p.x.dtype == DType::bf16) linear_weight_only_typed<bf16>(p);
    else linear_weight_only_typed<float>(p);
}

}  // namespace

const QuantKernels quant_kernels = {
    quantize_kernel,
    dequantize_kernel,
    quantize_rows_kernel,
    pack_weight_kernel,
    linear_weight_only_kernel,
#if FASTNN_SIMD_AVX512
    make_int8_gemm_kernels<DotMadd>("avx512"),
#elif FASTNN_SIMD_AVX2
    make_int8_gemm_kernels<DotMadd>("avx2"),
#else
    make_int8_gemm_kernels<DotMadd>("generic"),
#endif
};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
