// CPUID and XGETBV probing. A feature counts only when the CPU reports it AND
// the OS saves the register state it needs (XCR0): a hypervisor may expose
// AVX-512 in CPUID while not enabling ZMM state, and executing it then faults.
#include "fastnn/cpu_features.h"

#include <atomic>
#include <cstdio>
#include <string>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define FASTNN_HOST_X86 1
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#else
#define FASTNN_HOST_X86 0
#endif

namespace fastnn {
namespace {

#if FASTNN_HOST_X86
// Linux enables the 8 KB AMX tile-data state per process, on request
// (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); without the grant
// the first tile instruction faults. Other OSes: no AMX.
bool request_amx_tile_state() {
#if defined(__linux__) && defined(SYS_arch_prctl)
    constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
}

unsigned long long read_xcr0() {
    unsigned eax = 0, edx = 0;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (static_cast<unsigned long long>(edx) << 32) | eax;
}

CpuFeatures probe() {
    CpuFeatures f;
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
    const bool osxsave = c & (1u << 27);
    if (!osxsave) return f;
    const unsigned long long xcr0 = read_xcr0();
    const bool ymm_state = (xcr0 & 0x6) == 0x6;          // SSE + AVX state
    const bool zmm_state = (xcr0 & 0xe6) == 0xe6;        // + opmask, ZMM0-15 hi, ZMM16-31
    const bool avx = (c & (1u << 28)) && ymm_state;
    f.fma = avx && (c & (1u << 12));
    f.f16c = avx && (c & (1u << 29));

    unsigned max_leaf = __get_cpuid_max(0, nullptr);
    if (max_leaf < 7) return f;
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = avx && (b & (1u << 5));
    const bool z = avx && zmm_state;
    f.avx512f = z && (b & (1u << 16));
    f.avx512dq = z && (b & (1u << 17));
    f.avx512bw = z && (b & (1u << 30));
    f.avx512vl = z && (b & (1u << 31));
    f.avx512_vnni = z && (c & (1u << 11));
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    f.avx512_bf16 = z && (a1 & (1u << 5));
    f.avx_vnni = avx && (a1 & (1u << 4));
    // AMX-TILE, AMX-BF16 and AMX-INT8 (leaf 7 EDX bits 24, 22, 25), the tile
    // config and data state enabled in XCR0 (bits 17, 18), and the process's
    // grant. The kernels' epilogues are AVX-512 code.
    const bool tiles = z && (d & (1u << 24)) && (xcr0 & (3ull << 17)) == (3ull << 17) && request_amx_tile_state();
    f.amx_bf16 = tiles && f.avx512_bf16 && (d & (1u << 22));
    f.amx_int8 = tiles && (d & (1u << 25));
    return f;
}
#else
CpuFeatures probe() { return {}; }
#endif


// Reads one line of a sysfs file; empty when it does not exist.
std::string read_line(const std::string& path) {
    std::string line;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
        char buf[64];
        if (std::fgets(buf, sizeof buf, f)) line = buf;
        std::fclose(f);
    }
    while (!line.empty() && (line.back() == '\n' || line.back() == ' ')) line.pop_back();
    return line;
}

// "48K", "1024K", "32M" -> bytes; 0 when unparsable.
int64_t parse_size(const std::string& s) {
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (end == s.c_str() || v <= 0) return 0;
    if (*end == 'K') return v << 10;
    if (*end == 'M') return v << 20;
    if (*end == 'G') return v << 30;
    return v;
}

// Linux reports each cache level of cpu0 under sysfs; a VM or a non-Linux
// host may report nothing, and then the defaults (typical of current x86
// server cores) stand.
CacheSizes probe_cache_sizes() {
    CacheSizes c;
    for (int index = 0; index < 8; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
        const std::string level = read_line(dir + "level");
        if (level.empty()) break;
        const std::string type = read_line(dir + "type");
        const int64_t size = parse_size(read_line(dir + "size"));
        if (size <= 0 || type == "Instruction") continue;
        if (level == "1") c.l1d = size;
        else if (level == "2") c.l2 = size;
        else if (level == "3") c.l3 = size;
    }
    return c;
}

Isa best_isa(const CpuFeatures& f) {
#if FASTNN_X86_KERNELS
    if (f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c) return Isa::avx512;
    if (f.avx2 && f.fma && f.f16c) return Isa::avx2;
#else
    (void)f;
#endif
    return Isa::generic;
}

Isa initial_isa() {
    Isa isa = detected_isa();
    Isa requested;
    const char* env = requested_isa_env();
    if (env && parse_isa(env, &requested) && requested < isa) isa = requested;
    return isa;
}

std::atomic<int>& active_slot() {
    static std::atomic<int> slot{static_cast<int>(initial_isa())};
    return slot;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures features = probe();
    return features;
}

const CacheSizes& cache_sizes() {
    static const CacheSizes sizes = probe_cache_sizes();
    return sizes;
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::avx512: return "avx512";
        case Isa::avx2: return "avx2";
        default: return "generic";
    }
}

bool parse_isa(const char* name, Isa* out) {
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512}) {
        if (std::strcmp(name, isa_name(isa)) == 0) {
            *out = isa;
            return true;
        }
    }
    return false;
}

Isa detected_isa() {
    static const Isa isa = best_isa(cpu_features());
    return isa;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

bool set_active_isa(Isa isa) {
    if (isa > detected_isa()) return false;
    active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
    return true;
}

const char* requested_isa_env() {
    const char* env = std::getenv("FASTNN_ISA");
    return (env && *env) ? env : nullptr;
}

}  // namespace fastnn
