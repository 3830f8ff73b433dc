// Which x86 instruction sets this CPU and OS support, and which kernel path is
// in use. The path can be lowered (FASTNN_ISA or set_active_isa) so every path
// is testable on one machine, never raised above what the CPU runs.
#pragma once

#include <cstdint>

namespace fastnn {

// Ordered: a higher path needs everything a lower one needs.
enum class Isa : int {
    generic = 0,  // portable C++; the oracle for the SIMD paths
    avx2 = 1,     // AVX2 + FMA + F16C
    avx512 = 2,   // AVX-512 F/BW/VL/DQ (+ VNNI and BF16 where present)
};

struct CpuFeatures {
    bool avx2 = false, fma = false, f16c = false;
    bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
    bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
    bool amx_bf16 = false;  // AMX-TILE + AMX-BF16, with the OS's tile state granted
    bool amx_int8 = false;  // AMX-TILE + AMX-INT8, likewise
};

const CpuFeatures& cpu_features();

// Data cache sizes in bytes as the OS reports them (per core for L1/L2, per
// shared slice for L3), with conservative defaults where unknown.
// Kernels derive their cache blocking from these.
struct CacheSizes {
    int64_t l1d = 32 << 10;
    int64_t l2 = 1 << 20;
    int64_t l3 = 16 << 20;
};
const CacheSizes& cache_sizes();
const char* isa_name(Isa isa);
bool parse_isa(const char* name, Isa* out);

// The best path this build and CPU can run.
Isa detected_isa();
// The path kernels dispatch to. Starts at min(detected, FASTNN_ISA).
Isa active_isa();
// Returns false (and changes nothing) when isa is above detected_isa().
bool set_active_isa(Isa isa);
// What FASTNN_ISA asked for, or nullptr when unset.
const char* requested_isa_env();

}  // namespace fastnn
