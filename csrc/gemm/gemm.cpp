// GEMM dispatch front (baseline flags): cache sizes for the blocking, and the
// choice between the per-ISA kernels and the AVX512_BF16 build.
#include "fastnn/gemm.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace fastnn {
namespace {

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

}  // namespace

const CacheSizes& cache_sizes() {
    static const CacheSizes sizes = probe_cache_sizes();
    return sizes;
}

void gemm(const GemmParams& p) {
#if FASTNN_X86_KERNELS
    if (p.a.dtype == DType::bf16 && active_isa() == Isa::avx512 && cpu_features().avx512_bf16)
        return avx512_bf16::gemm_bf16_dot(p, cache_sizes());
#endif
    FASTNN_SELECT_KERNELS(gemm_kernels).gemm(p, cache_sizes());
}

void column_sum(const ColumnSumParams& p) { FASTNN_SELECT_KERNELS(gemm_kernels).column_sum(p); }

}  // namespace fastnn
