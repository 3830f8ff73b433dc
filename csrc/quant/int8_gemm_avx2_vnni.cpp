// The int8 GEMM on AVX-VNNI: the VEX-encoded vpdpbusd (ymm) of AVX2-class
// CPUs that have it (and of AVX-512 CPUs, where the avx512_vnni file is
// preferred). Compiled with -mavxvnni (CMake: the _avx2_vnni suffix) and
// reached only when cpu_features().avx_vnni says the CPU has it. Same
// unsigned-A offset trick as the AVX-512 variant: see int8_gemm.h.
#include "int8_gemm.h"

#if !defined(__AVXVNNI__)
#error "compile with -mavxvnni"
#endif

namespace fastnn::FASTNN_ISA_NAMESPACE {

struct DotAvxVnni {
    using V = __m256i;
    using A = __m256i;
    using B = __m256i;
    // 6 x 2 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers.
    static constexpr int kLanes = 8, kMR = 6, kNV = 2;
    static constexpr bool kUnsignedA = true;
    static V zero() { return _mm256_setzero_si256(); }
    static B load_b(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static V load(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    static A bcast_a(const uint8_t* p) {
        int32_t w;
        std::memcpy(&w, p, 4);
        return _mm256_set1_epi32(w);
    }
    static V dot(V acc, A a, B b) { return _mm256_dpbusd_avx_epi32(acc, a, b); }
    static void store(int32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
    static void peak_loop(long iterations, A a, B b, V& c0, V& c1, V& c2, V& c3, V& c4, V& c5, V& c6, V& c7,
                          V& c8, V& c9, V& c10, V& c11) {
        FASTNN_DPBUSD_LOOP_X12("%{vex%} vpdpbusd");
    }
};

const Int8GemmKernels int8_gemm_kernels = make_vnni_gemm_kernels<DotAvxVnni>("avx2_vnni");

}  // namespace fastnn::FASTNN_ISA_NAMESPACE
