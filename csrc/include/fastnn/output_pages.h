// First-touch cost of large outputs. A tensor of tens of MB is usually a fresh
// anonymous mapping (glibc maps every allocation above its 32 MiB dynamic
// threshold and unmaps it on free, so torch.empty of such a tensor comes back
// unbacked every call). Each 4 KiB page then costs a fault on its first write:
// ~1.7 us here (a VM), 14 ms for 32 MiB against ~1.5 ms for a LayerNorm over
// it. Backing the 2 MiB-aligned interior with transparent huge pages turns
// 512 faults into one and cuts that cost about 4x (the kernel still zeroes
// every page).
#pragma once

#include "fastnn/tensor.h"

namespace fastnn {

// For a dense output (its elements tile one byte range, in any order) whose
// 2 MiB-aligned interior holds at least one huge page and is not backed yet: asks the OS to back its aligned
// interior with transparent huge pages (madvise MADV_HUGEPAGE; a no-op where
// THP is disabled) and returns true. Memory that is already backed, strided
// views and small outputs are left alone (false): re-advising backed pages
// would only invite khugepaged to copy them. Contents are never changed.
bool advise_huge_pages(const TensorView& out);

}  // namespace fastnn
