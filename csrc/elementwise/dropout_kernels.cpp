// Dropout: y = x * (keep ? 1/(1-p) : 0), the mask from Philox4x32-10 (the
// mapping is in fastnn/dropout.h). Memory floor: read x, write y, 8 bytes
// per fp32 element, no mask traffic at all (the backward regenerates it).
// Arithmetic: 10 rounds of 2 32x32->64-bit multiplies per 4 elements, about
// 12 vector integer operations per 16 elements per round, which keeps the
// AVX-512 path near memory speed on 2 cores; AVX2 is compute-bound (~2.5
// cycles per element on Zen 3). Work is split into 64-element blocks, the RNG's unit, so
// that a thread's range never splits one.
#include "fastnn/dropout.h"
#include "fastnn/parallel.h"
#include "fastnn/simd.h"

namespace fastnn::FASTNN_ISA_NAMESPACE {
namespace {

using simd::MaskF32;
using simd::VecF32;
using simd::VecU32;

constexpr int kBlock = 64;  // elements per block: 16 counters x 4 words
constexpr int W = VecF32::width;
static_assert(16 % W == 0, "a block's 16 counters must fill whole vectors");

// mult[k] = scale or 0 for the 64 elements of block b. The block's counters
// fill kChains vectors whose rounds are independent: with two (AVX2) their
// multiply latencies overlap instead of running one 10-round chain after
// the other.
void block_multipliers(const DropoutStream& rng, uint64_t b, float* mult) {
    constexpr int kChains = 16 / W;
    const VecU32 m0 = VecU32::broadcast(0xD2511F53u), m1 = VecU32::broadcast(0xCD9E8D57u);
    const VecU32 threshold = VecU32::broadcast(rng.threshold);
    const VecF32 keep = VecF32::broadcast(rng.scale), drop = VecF32::zero();
    const VecU32 c_hi = VecU32::broadcast(static_cast<uint32_t>((16 * b) >> 32));
    const VecU32 off0 = VecU32::broadcast(rng.offset[0]), off1 = VecU32::broadcast(rng.offset[1]);
    VecU32 x[kChains][4];
    for (int h = 0; h < kChains; ++h) {
        const uint64_t c = 16 * b + static_cast<uint64_t>(h * W);
        x[h][0] = VecU32::broadcast(static_cast<uint32_t>(c)) + VecU32::lane_index();
        x[h][1] = c_hi;
        x[h][2] = off0;
        x[h][3] = off1;
    }
    uint32_t k0 = rng.key[0], k1 = rng.key[1];
    for (int round = 0; round < 10; ++round) {
        const VecU32 key0 = VecU32::broadcast(k0), key1 = VecU32::broadcast(k1);
        for (int h = 0; h < kChains; ++h) {
            VecU32* s = x[h];
            const VecU32 hi0 = mul_hi(m0, s[0]), lo0 = mul_lo(m0, s[0]);
            const VecU32 hi1 = mul_hi(m1, s[2]), lo1 = mul_lo(m1, s[2]);
            s[0] = hi1 ^ s[1] ^ key0;
            s[1] = lo1;
            s[2] = hi0 ^ s[3] ^ key1;
            s[3] = lo0;
        }
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    for (int h = 0; h < kChains; ++h)
        for (int j = 0; j < 4; ++j) {
            const MaskF32 kept = cmp_lt(x[h][j] >> 8, threshold);
            simd::select(kept, keep, drop).store(mult + 16 * j + h * W);
        }
}

// True when t's elements lie at their row-major positions (size-1 dims aside).
bool row_major(const TensorView& t) {
    int64_t expected = 1;
    for (int d = t.ndim - 1; d >= 0; --d) {
        if (t.shape[d] != 1 && t.strides[d] != expected) return false;
        expected *= t.shape[d];
    }
    return true;
}

// Element offsets of x and y for consecutive row-major indices.
struct LogicalWalker {
    const TensorView &x, &y;
    int64_t index[kMaxDims] = {};
    int64_t x_off = 0, y_off = 0;

    LogicalWalker(const TensorView& x_, const TensorView& y_, int64_t start) : x(x_), y(y_) {
        for (int d = x.ndim - 1; d >= 0; --d) {
            index[d] = start % x.shape[d];
            start /= x.shape[d];
            x_off += index[d] * x.strides[d];
            y_off += index[d] * y.strides[d];
        }
    }
    void advance() {
        for (int d = x.ndim - 1; d >= 0; --d) {
            x_off += x.strides[d];
            y_off += y.strides[d];
            if (++index[d] < x.shape[d]) return;
            x_off -= index[d] * x.strides[d];
            y_off -= index[d] * y.strides[d];
            index[d] = 0;
        }
    }
};

template <class T>
void apply_typed(const DropoutParams& p, const DropoutStream& rng) {
    const int64_t n = numel(p.x);
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    const bool dense = row_major(p.x) && row_major(p.y);
    const T* x = static_cast<const T*>(p.x.data);
    T* y = static_cast<T*>(p.y.data);
    parallel_for(blocks, 16384 / kBlock, [&](int64_t b0, int64_t b1) {
        float mult[kBlock];
        if (dense) {
            for (int64_t b = b0; b < b1; ++b) {
                block_multipliers(rng, static_cast<uint64_t>(b), mult);
                const int64_t base = b * kBlock;
                const int count = static_cast<int>(n - base < kBlock ? n - base : kBlock);
                for (int k = 0; k < count; k += W) {
                    const int r = count - k < W ? count - k : W;
                    const VecF32 v = VecF32::load_partial(x + base + k, r) * VecF32::load(mult + k);
                    v.store_partial(y + base + k, r);
                }
            }
            return;
        }
        LogicalWalker walk(p.x, p.y, b0 * kBlock);
        for (int64_t b = b0; b < b1; ++b) {
            block_multipliers(rng, static_cast<uint64_t>(b), mult);
            const int64_t base = b * kBlock;
            const int count = static_cast<int>(n - base < kBlock ? n - base : kBlock);
            for (int k = 0; k < count; ++k, walk.advance())
                y[walk.y_off] = simd::from_float<T>(simd::to_float(x[walk.x_off]) * mult[k]);
        }
    });
}

void apply_kernel(const DropoutParams& p) {
    const DropoutStream rng = dropout_stream(p);
    if (p.x.dtype == DType::bf16) apply_typed<bf16>(p, rng);
    else apply_typed<float>(p, rng);
}

}  // namespace

const DropoutKernels dropout_kernels = {apply_kernel};

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
