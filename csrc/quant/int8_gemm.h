// The int8 GEMM driver, written once over a "Dot" policy that each variant
// (AVX512-VNNI, AVX-VNNI, AVX-512 / AVX2 vpmaddwd, portable) supplies in its
// own translation unit.
//
// Floor: 2*M*N*K int8 ops; bytes M*K + K*N + 4*M*N (int32) or less. At
// 1024^3 that is 2.1 GOP against ~3 MB: compute-bound, so the goal is the
// vpdpbusd issue rate.
//
// Tiling: an MR x (NV vectors) register tile of int32 accumulators; per 4-byte
// k-group it loads NV vectors of B (16 columns x 4 k each on AVX-512), and
// broadcasts one 4-byte word of A per row. AVX-512 VNNI: 6 x 64 columns = 24
// accumulators + 4 B registers, 24 vpdpbusd per 4 loads + 6 broadcasts. The
// whole K runs in registers (no K blocking): a 64-column B tile of K = 4096 is
// 256 KB and stays in L2 while a thread sweeps every A panel past it; A panels
// stream from L2/L3 at 24 bytes per 24 vpdpbusd. Threads split columns (each
// keeps its own B tiles), and rows as well when there are fewer column tiles
// than threads.
//
// Signedness: vpdpbusd multiplies unsigned by signed bytes. The VNNI policies
// store A + 128 (as a ^ 0x80) and subtract comp[n] = 128 * sum_k B[k][n]:
// sum (a+128) b - 128 sum b = sum a b, exact modulo 2^32, hence exact for
// every K <= kInt8GemmMaxK (quant.h). The vpmaddwd policies sign-extend both
// operands to int16 pairs (no vpmaddubsw: its int16 sum saturates) and need no
// compensation.
#pragma once

#include <cstring>

#include "fastnn/parallel.h"
#include "fastnn/quant.h"
#include "fastnn/tile_scope.h"
#include "int8_pack.h"
#include "quant_simd.h"
#include "quant_workspace.h"

// Register tiles are arrays of vectors indexed by compile-time loops; unless
// those loops are fully unrolled, GCC keeps the array in memory and stores
// every accumulator on every k step.
#define FASTNN_UNROLL _Pragma("GCC unroll 32")

namespace fastnn::FASTNN_ISA_NAMESPACE {

struct Int8Epilogue {
    const int32_t* comp = nullptr;  // subtracted per column (padded to whole strips), or nullptr
    DType out_dtype = DType::i32;
    void* out = nullptr;
    int64_t out_rs = 0, out_cs = 0;  // elements
    const float* row_scale = nullptr;
    int64_t row_scale_stride = 0;
    const float* col_scale = nullptr;  // padded to whole strips
    const float* bias = nullptr;       // padded to whole strips, or nullptr
};

template <class T>
void store_f32_row(const Int8Epilogue& e, int64_t m, int64_t n0, const int32_t* c, int nc) {
    using qsimd::VecI32;
    using simd::VecF32;
    constexpr int W = qsimd::W;
    T* out = static_cast<T*>(e.out) + m * e.out_rs + n0 * e.out_cs;
    const VecF32 rs = VecF32::broadcast(e.row_scale[m * e.row_scale_stride]);
    for (int j = 0; j < nc; j += W) {
        VecI32 acc = VecI32::load(c + j);
        if (e.comp) acc = acc - VecI32::load(e.comp + n0 + j);
        const VecF32 scale = rs * VecF32::load(e.col_scale + n0 + j);
        const VecF32 y = e.bias ? simd::fmadd(acc.to_f32(), scale, VecF32::load(e.bias + n0 + j))
                                : acc.to_f32() * scale;
        const int cnt = nc - j < W ? nc - j : W;
        if (e.out_cs == 1) {
            if (cnt == W) y.store(out + j);
            else y.store_partial(out + j, cnt);
        } else {
            float tmp[W];
            y.store(tmp);
            for (int i = 0; i < cnt; ++i) out[(j + i) * e.out_cs] = simd::from_float<T>(tmp[i]);
        }
    }
}

inline void store_i32_row(const Int8Epilogue& e, int64_t m, int64_t n0, const int32_t* c, int nc) {
    using qsimd::VecI32;
    constexpr int W = qsimd::W;
    int32_t* out = static_cast<int32_t*>(e.out) + m * e.out_rs + n0 * e.out_cs;
    for (int j = 0; j < nc; j += W) {
        VecI32 acc = VecI32::load(c + j);
        if (e.comp) acc = acc - VecI32::load(e.comp + n0 + j);
        const int cnt = nc - j < W ? nc - j : W;
        if (e.out_cs == 1) {
            if (cnt == W) acc.store(out + j);
            else acc.store_partial(out + j, cnt);
        } else {
            int32_t tmp[W];
            acc.store(tmp);
            for (int i = 0; i < cnt; ++i) out[(j + i) * e.out_cs] = tmp[i];
        }
    }
}

// Dot is a vector policy (V, A, B, load_b, bcast_a, dot, ...: the register
// tile below runs it) or a tile-unit policy (AMX), which declares Scope (its
// per-thread state), kPanelGroup (groups per A panel line, int8_pack.h) and
// its own tile routines, pick(rows, vectors), and its K block kKcGroups.
template <class Dot>
struct Int8Gemm {
    static constexpr int MR = Dot::kMR, NV = Dot::kNV, L = Dot::kLanes, NR = NV * L;
    static constexpr bool kTileUnit = !std::is_same_v<typename ScopeOf<Dot>::type, NoScope>;
    static constexpr int panel_group() {
        if constexpr (kTileUnit) return Dot::kPanelGroup;
        else return 1;
    }
    static constexpr int G = panel_group();
    static_assert(NR % kStrip == 0 && L <= kStrip && qsimd::W <= kStrip, "tiles are whole strips");
    using TileFn = void (*)(const uint8_t* a, const int8_t* b, int64_t k4, int64_t strip_bytes, int32_t* c,
                            bool accumulate);

    // c (R x NR int32) (+)= A panel rows [0, R) times the J vectors of B at b,
    // over k4 groups of 4.
    template <int R, int J>
    static void tile(const uint8_t* a, const int8_t* b, int64_t k4, int64_t strip_bytes, int32_t* c,
                     bool accumulate) {
        typename Dot::V acc[R][J];
        FASTNN_UNROLL for (int r = 0; r < R; ++r)
            FASTNN_UNROLL for (int j = 0; j < J; ++j) acc[r][j] = accumulate ? Dot::load(c + r * NR + j * L)
                                                                              : Dot::zero();
        const int8_t* bp[J];
        FASTNN_UNROLL for (int j = 0; j < J; ++j) bp[j] = b + (j * L / kStrip) * strip_bytes + (j * L % kStrip) * 4;
        for (int64_t g = 0; g < k4; ++g) {
            typename Dot::B bv[J];
            FASTNN_UNROLL for (int j = 0; j < J; ++j) bv[j] = Dot::load_b(bp[j] + g * 64);
            const uint8_t* ag = a + g * MR * 4;
            FASTNN_UNROLL for (int r = 0; r < R; ++r) {
                const typename Dot::A av = Dot::bcast_a(ag + r * 4);
                FASTNN_UNROLL for (int j = 0; j < J; ++j) acc[r][j] = Dot::dot(acc[r][j], av, bv[j]);
            }
        }
        FASTNN_UNROLL for (int r = 0; r < R; ++r)
            FASTNN_UNROLL for (int j = 0; j < J; ++j) Dot::store(c + r * NR + j * L, acc[r][j]);
    }

    template <int R, int J = NV>
    static TileFn pick_j(int j) {
        if constexpr (J == 1) return &tile<R, 1>;
        else return j == J ? &tile<R, J> : pick_j<R, J - 1>(j);
    }
    template <int R = MR>
    static TileFn pick_rows(int r, int j) {
        if constexpr (R == 1) return pick_j<1>(j);
        else return r == R ? pick_j<R>(j) : pick_rows<R - 1>(r, j);
    }
    static TileFn pick(int r, int j) {
        if constexpr (kTileUnit) return Dot::pick(r, j);
        else return pick_rows(r, j);
    }

    // Blocking. K runs in blocks of kKcGroups 4-byte groups; the 64-column B
    // tile of one block (128 KB) stays in L2 while a thread sweeps a block of
    // A panels past it; the partial int32 tiles of those panels wait in a
    // per-thread scratch (at most kCBlockBytes, L2) until the last K block
    // runs the epilogue. The A block (its rows x all of K) is kept within
    // kABlockBytes so it stays in L2 (1 MB per core here) while the thread
    // moves from one B tile to the next. The tile loop loads 4 B vectors per
    // 24 vpdpbusd, few enough to stream them from L2; what a short K block
    // costs is the round trip of the 24 accumulators through the scratch
    // once per block: on 2 Zen 4 cores at 2048^3, 757 GOP/s with blocks of
    // 64 groups (B in L1), 852 with 512. A tile-unit policy sets its own
    // block (AMX: its tile loads want B in L1).
    static constexpr int64_t kc_groups() {
        if constexpr (kTileUnit) return Dot::kKcGroups;
        else return 512;
    }
    static constexpr int64_t kKcGroups = kc_groups();
    static_assert(kKcGroups % G == 0, "K blocks are whole panel lines");
    static constexpr int64_t kABlockBytes = 384 << 10, kCBlockBytes = 256 << 10;

    static int64_t block_panels(int64_t m, int64_t k4) {
        const int64_t by_a = kABlockBytes / std::max<int64_t>(panel_groups<G>(k4) * MR * 4, 1);
        const int64_t by_c = kCBlockBytes / (MR * NR * 4);
        return std::max<int64_t>(1, std::min({by_a, by_c, ceil_div(m, MR)}));
    }

    // int32 scratch run() needs for this grid (0 when K fits one block).
    static int64_t scratch_ints(const TileGrid& grid, int64_t m, int64_t k4) {
        return k4 <= kKcGroups ? 0 : grid.workers() * block_panels(m, k4) * MR * NR;
    }

    static TileGrid make_grid(int64_t m, int64_t n) { return TileGrid(ceil_div(n, NR), ceil_div(m, MR), num_threads()); }

    // out = epilogue(A panels (m rows) x B strips (n columns)).
    static void run(const TileGrid& grid, const uint8_t* a_panels, int64_t m, const int8_t* b_strips, int64_t n,
                    int64_t k4, const Int8Epilogue& e, int32_t* scratch) {
        if (m == 0 || n == 0) return;
        const int64_t strip_bytes = k4 * 64, panel_bytes = panel_groups<G>(k4) * MR * 4;
        const int64_t bp = block_panels(m, k4);
        const bool k_blocked = k4 > kKcGroups;
        parallel_for(grid.workers(), 1, [&](int64_t w0, int64_t w1) {
            [[maybe_unused]] typename ScopeOf<Dot>::type scope;
            alignas(64) int32_t c_local[MR * NR];
            for (int64_t w = w0; w < w1; ++w) {
                int64_t nt0, nt1, p0, p1;
                grid.share(w, &nt0, &nt1, &p0, &p1);
                int32_t* c_block = k_blocked ? scratch + w * bp * MR * NR : nullptr;
                for (int64_t pb = p0; pb < p1; pb += bp) {
                    const int64_t pe = std::min(p1, pb + bp);
                    for (int64_t nt = nt0; nt < nt1; ++nt) {
                        const int64_t n0 = nt * NR;
                        const int nc = static_cast<int>(std::min<int64_t>(NR, n - n0));
                        const int nv = static_cast<int>(ceil_div(nc, L));
                        const int8_t* b = b_strips + (n0 / kStrip) * strip_bytes;
                        auto rows = [&](int64_t p) { return static_cast<int>(std::min<int64_t>(MR, m - p * MR)); };
                        if (!k_blocked) {
                            for (int64_t p = pb; p < pe; ++p) {
                                pick(rows(p), nv)(a_panels + p * panel_bytes, b, k4, strip_bytes, c_local, false);
                                store_tile(e, p * MR, rows(p), n0, nc, c_local);
                            }
                            continue;
                        }
                        for (int64_t kb = 0; kb < k4; kb += kKcGroups) {
                            const int64_t kn = std::min(kKcGroups, k4 - kb);
                            for (int64_t p = pb; p < pe; ++p)
                                pick(rows(p), nv)(a_panels + p * panel_bytes + kb * MR * 4, b + kb * 64, kn,
                                                  strip_bytes, c_block + (p - pb) * MR * NR, kb > 0);
                        }
                        for (int64_t p = pb; p < pe; ++p)
                            store_tile(e, p * MR, rows(p), n0, nc, c_block + (p - pb) * MR * NR);
                    }
                }
            }
        });
    }

    static void store_tile(const Int8Epilogue& e, int64_t m0, int mr, int64_t n0, int nc, const int32_t* c) {
        for (int r = 0; r < mr; ++r) {
            const int32_t* crow = c + r * NR;
            switch (e.out_dtype) {
                case DType::f32: store_f32_row<float>(e, m0 + r, n0, crow, nc); break;
                case DType::bf16: store_f32_row<bf16>(e, m0 + r, n0, crow, nc); break;
                default: store_i32_row(e, m0 + r, n0, crow, nc); break;
            }
        }
    }

    static constexpr uint32_t a_xor() { return Dot::kUnsignedA ? 0x80808080u : 0u; }

    // Copies a (N,) float32 vector into a zero-padded, unit-stride array.
    static void pad_copy(const TensorView& v, int64_t n, float* dst, int64_t padded) {
        const float* src = static_cast<const float*>(v.data);
        for (int64_t i = 0; i < padded; ++i) dst[i] = i < n ? src[i * v.strides[0]] : 0.0f;
    }

    static void matmul(const Int8MatmulParams& p) {
        const int64_t m = p.a.shape[0], k = p.a.shape[1], n = p.b.shape[1];
        if (m == 0 || n == 0) return;
        const int64_t k4 = ceil_div(k, 4), n_pad = ceil_div(n, kStrip) * kStrip;
        WorkspaceLayout ws;
        const std::size_t a_at = ws.add<uint8_t>(ceil_div(m, MR) * MR * panel_groups<G>(k4) * 4);
        const std::size_t b_at = ws.add<int8_t>(n_pad * k4 * 4);
        const std::size_t comp_at = ws.add<int32_t>(n_pad);
        const std::size_t cs_at = ws.add<float>(n_pad), bias_at = ws.add<float>(n_pad);
        const TileGrid grid = make_grid(m, n);
        const std::size_t scratch_at = ws.add<int32_t>(scratch_ints(grid, m, k4));
        char* base = static_cast<char*>(quant_workspace(ws.size()));
        auto* a = reinterpret_cast<uint8_t*>(base + a_at);
        auto* b = reinterpret_cast<int8_t*>(base + b_at);
        auto* comp = reinterpret_cast<int32_t*>(base + comp_at);
        pack_a_panels<G>(p.a, MR, a_xor(), a);
        pack_b_strips(static_cast<const int8_t*>(p.b.data), p.b.strides[0], p.b.strides[1], k, n, b, comp);

        Int8Epilogue e;
        e.comp = Dot::kUnsignedA ? comp : nullptr;
        e.out_dtype = p.out.dtype;
        e.out = p.out.data;
        e.out_rs = p.out.strides[0];
        e.out_cs = p.out.strides[1];
        if (p.row_scale.data) {
            e.row_scale = static_cast<const float*>(p.row_scale.data);
            e.row_scale_stride = p.row_scale.strides[0];
            auto* cs = reinterpret_cast<float*>(base + cs_at);
            pad_copy(p.col_scale, n, cs, n_pad);
            e.col_scale = cs;
            if (p.bias.data) {
                auto* bias = reinterpret_cast<float*>(base + bias_at);
                pad_copy(p.bias, n, bias, n_pad);
                e.bias = bias;
            }
        }
        run(grid, a, m, b, n, k4, e, reinterpret_cast<int32_t*>(base + scratch_at));
    }

    template <class T>
    static void quantize_into_panels(const QuantLinearParams& p, uint8_t* a, float* row_scale) {
        const TensorView& x = p.x;
        const int64_t m = x.shape[0], k = x.shape[1], k4 = ceil_div(k, 4), kg = panel_groups<G>(k4);
        const float* smooth = static_cast<const float*>(p.smooth_inv.data);
        parallel_for(ceil_div(m, MR), std::max<int64_t>(1, 8192 / std::max<int64_t>(k, 1)),
                     [&](int64_t p0, int64_t p1) {
            for (int64_t pi = p0; pi < p1; ++pi) {
                uint8_t* panel = a + pi * kg * MR * 4;
                for (int r = 0; r < MR; ++r) {
                    const int64_t row = pi * MR + r;
                    if (row >= m) {
                        fill_panel_row<G>(panel, MR, r, 0, kg, a_xor());
                        continue;
                    }
                    const T* src = elem<T>(x, row, 0);
                    const float scale = dynamic_scale(row_absmax(src, x.strides[1], k, smooth));
                    row_scale[row] = scale;
                    quantize_row(src, x.strides[1], k, smooth, inverse_scale(scale),
                                 [&](const int8_t* q, int64_t n, int64_t k0) {
                                     put_panel_words<G>(panel, MR, r, k0 / 4, q, ceil_div(n, 4), a_xor());
                                 });
                    fill_panel_row<G>(panel, MR, r, k4, kg, a_xor());
                }
            }
        });
    }

    static void linear_dynamic(const QuantLinearParams& p) {
        const int64_t m = p.x.shape[0], k = p.x.shape[1], n = p.w_scale.shape[0];
        if (m == 0 || n == 0) return;
        const int64_t k4 = ceil_div(k, 4), n_pad = ceil_div(n, kStrip) * kStrip;
        WorkspaceLayout ws;
        const std::size_t a_at = ws.add<uint8_t>(ceil_div(m, MR) * MR * panel_groups<G>(k4) * 4);
        const std::size_t rs_at = ws.add<float>(m);
        const std::size_t cs_at = ws.add<float>(n_pad), bias_at = ws.add<float>(n_pad);
        const TileGrid grid = make_grid(m, n);
        const std::size_t scratch_at = ws.add<int32_t>(scratch_ints(grid, m, k4));
        char* base = static_cast<char*>(quant_workspace(ws.size()));
        auto* a = reinterpret_cast<uint8_t*>(base + a_at);
        auto* rs = reinterpret_cast<float*>(base + rs_at);
        if (p.x.dtype == DType::bf16) quantize_into_panels<bf16>(p, a, rs);
        else quantize_into_panels<float>(p, a, rs);

        const auto* b = static_cast<const int8_t*>(p.packed.data);
        Int8Epilogue e;
        e.comp = Dot::kUnsignedA ? reinterpret_cast<const int32_t*>(b + n_pad * k4 * 4) : nullptr;
        e.out_dtype = p.out.dtype;
        e.out = p.out.data;
        e.out_rs = p.out.strides[0];
        e.out_cs = p.out.strides[1];
        e.row_scale = rs;
        e.row_scale_stride = 1;
        auto* cs = reinterpret_cast<float*>(base + cs_at);
        pad_copy(p.w_scale, n, cs, n_pad);
        e.col_scale = cs;
        if (p.bias.data) {
            auto* bias = reinterpret_cast<float*>(base + bias_at);
            pad_copy(p.bias, n, bias, n_pad);
            e.bias = bias;
        }
        run(grid, a, m, b, n, k4, e, reinterpret_cast<int32_t*>(base + scratch_at));
    }
};

// Register-only throughput probe of a VNNI policy's vpdpbusd: 12 independent
// accumulator chains cover latency x throughput (about 5 x 2 on Zen 5). The
// loop is inline assembly (the policies' peak_loop): from intrinsics, GCC
// adds register copies or stores of the accumulators to every iteration.
#define FASTNN_DPBUSD_LOOP_X12(insn)                                                                         \
    asm volatile("1:\n\t" insn " %[b], %[a], %[c0]\n\t" insn " %[b], %[a], %[c1]\n\t"                     \
                 insn " %[b], %[a], %[c2]\n\t" insn " %[b], %[a], %[c3]\n\t" insn " %[b], %[a], %[c4]\n\t"   \
                 insn " %[b], %[a], %[c5]\n\t" insn " %[b], %[a], %[c6]\n\t" insn " %[b], %[a], %[c7]\n\t"   \
                 insn " %[b], %[a], %[c8]\n\t" insn " %[b], %[a], %[c9]\n\t" insn " %[b], %[a], %[c10]\n\t"  \
                 insn " %[b], %[a], %[c11]\n\t"                                                               \
                 "dec %[n]\n\t"                                                                               \
                 "jnz 1b"                                                                                     \
                 : [c0] "+v"(c0), [c1] "+v"(c1), [c2] "+v"(c2), [c3] "+v"(c3), [c4] "+v"(c4), [c5] "+v"(c5),   \
                   [c6] "+v"(c6), [c7] "+v"(c7), [c8] "+v"(c8), [c9] "+v"(c9), [c10] "+v"(c10),               \
                   [c11] "+v"(c11), [n] "+r"(iterations)                                                      \
                 : [a] "v"(a), [b] "v"(b))

template <class Dot>
int32_t dot_peak_loop(long iterations, int32_t seed) {
    if (iterations < 1) return 0;
    int8_t bytes[64 + 12];
    for (int i = 0; i < 64 + 12; ++i) bytes[i] = static_cast<int8_t>(seed + i);
    typename Dot::V c0 = Dot::load_b(bytes), c1 = Dot::load_b(bytes + 1), c2 = Dot::load_b(bytes + 2),
                    c3 = Dot::load_b(bytes + 3), c4 = Dot::load_b(bytes + 4), c5 = Dot::load_b(bytes + 5),
                    c6 = Dot::load_b(bytes + 6), c7 = Dot::load_b(bytes + 7), c8 = Dot::load_b(bytes + 8),
                    c9 = Dot::load_b(bytes + 9), c10 = Dot::load_b(bytes + 10), c11 = Dot::load_b(bytes + 11);
    const uint8_t a_bytes[4] = {1, 2, 3, static_cast<uint8_t>(seed)};
    const typename Dot::A a = Dot::bcast_a(a_bytes);
    const typename Dot::B b = Dot::load_b(bytes);
    Dot::peak_loop(iterations, a, b, c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11);
    int32_t out[16];
    int32_t sum = 0;
    for (const typename Dot::V& c : {c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11}) {
        Dot::store(out, c);
        sum += out[0];
    }
    return sum;
}

template <class Dot>
constexpr Int8GemmKernels make_int8_gemm_kernels(const char* name) {
    return {name, &Int8Gemm<Dot>::matmul, &Int8Gemm<Dot>::linear_dynamic, nullptr, 0};
}

// The VNNI variants also carry the peak probe.
template <class Dot>
constexpr Int8GemmKernels make_vnni_gemm_kernels(const char* name) {
    return {name, &Int8Gemm<Dot>::matmul, &Int8Gemm<Dot>::linear_dynamic, &dot_peak_loop<Dot>,
            12 * Dot::kLanes * 4 * 2};
}

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
