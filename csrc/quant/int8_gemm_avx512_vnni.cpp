// The int8 GEMM on AVX512-VNNI: vpdpbusd (zmm), 64 unsigned x signed byte
// products summed into 16 int32 lanes per instruction. Compiled with
// -mavx512vnni (CMake: the _avx512_vnni suffix) and reached only when
// cpu_features().avx512_vnni says the CPU has it. A is stored as a + 128
// (unsigned) and the driver subtracts 128 * colsum(B): see int8_gemm.h.
#include "int8_gemm.h"

#if !defined(__AVX512VNNI__)
#error "compile with -mavx512vnni"
#endif

namespace fastnn::FASTNN_ISA_NAMESPACE {

struct DotVnni512 {
    using V = __m512i;
    using A = __m512i;
    using B = __m512i;
    // 6 x 4 accumulators + 4 B vectors + 1 broadcast of the 32 zmm registers.
    static constexpr int kLanes = 16, kMR = 6, kNV = 4;
    static constexpr bool kUnsignedA = true;
    static V zero() { return _mm512_setzero_si512(); }
    static B load_b(const int8_t* p) { return _mm512_loadu_si512(p); }
    static V load(const int32_t* p) { return _mm512_loadu_si512(p); }
    static A bcast_a(const uint8_t* p) {
        int32_t w;
        std::memcpy(&w, p, 4);
        return _mm512_set1_epi32(w);
    }
    static V dot(V acc, A a, B b) { return _mm512_dpbusd_epi32(acc, a, b); }
    static void store(int32_t* p, V v) { _mm512_storeu_si512(p, v); }
    static void peak_loop(long iterations, A a, B b, V& c0, V& c1, V& c2, V& c3, V& c4, V& c5, V& c6, V& c7,
                          V& c8, V& c9, V& c10, V& c11) {
        FASTNN_DPBUSD_LOOP_X12("vpdpbusd");
    }
};

const Int8GemmKernels int8_gemm_kernels = make_vnni_gemm_kernels<DotVnni512>("avx512_vnni");

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
