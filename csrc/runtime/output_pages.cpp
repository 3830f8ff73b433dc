#include "fastnn/output_pages.h"

#include <cstdint>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace fastnn {
namespace {

constexpr uintptr_t kHugePage = uintptr_t(2) << 20;  // x86-64 PMD size

// [lo, hi) spanned by the view, or an empty range when its elements do not
// tile the span (gaps, overlaps from zero strides).
void dense_span(const TensorView& t, uintptr_t& lo, uintptr_t& hi) {
    const int64_t size = static_cast<int64_t>(dtype_size(t.dtype));
    int64_t first = 0, last = 0;
    for (int d = 0; d < t.ndim; ++d) {
        if (t.shape[d] == 0) {
            lo = hi = 0;
            return;
        }
        const int64_t extent = (t.shape[d] - 1) * t.strides[d];
        (extent < 0 ? first : last) += extent;
    }
    const auto base = reinterpret_cast<uintptr_t>(t.data);
    lo = base + static_cast<uintptr_t>(first * size);
    hi = base + static_cast<uintptr_t>((last + 1) * size);
    if (static_cast<int64_t>(hi - lo) != numel(t) * size) lo = hi = 0;
}

}  // namespace

bool advise_huge_pages(const TensorView& out) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    uintptr_t lo = 0, hi = 0;
    dense_span(out, lo, hi);
    const uintptr_t begin = (lo + kHugePage - 1) & ~(kHugePage - 1), end = hi & ~(kHugePage - 1);
    if (end <= begin || end - begin < kHugePage) return false;
    unsigned char resident = 0;
    if (mincore(reinterpret_cast<void*>(begin), static_cast<size_t>(sysconf(_SC_PAGESIZE)), &resident) != 0 ||
        (resident & 1))
        return false;
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
    return true;
#else
    (void)out;
    return false;
#endif
}

}  // namespace fastnn
