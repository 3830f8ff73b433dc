// Scratch memory kept per thread: each calling thread and each pool worker
// owns one buffer per slot, grown when a call needs more and kept for the
// next call. A fresh allocation of a few MB per call would pay its page
// faults every time (1-2 us each on a VM), which at small problem sizes costs
// more than the kernel.
#pragma once

#include <cstddef>

namespace fastnn {

// One slot per user, so that buffers live at the same time never share one.
enum class WorkspaceSlot {
    gemm_pack_a, gemm_pack_b, gemm_scratch, quant, attention,
    conv_input, conv_grad, conv_weights, conv_tiles, conv_block,
    count
};

// At least `bytes` bytes aligned to a page, owned by the calling thread and
// valid until its next request for the same slot; nullptr when the memory
// cannot be had (the caller reports it, outside any parallel region).
void* thread_workspace(WorkspaceSlot slot, std::size_t bytes) noexcept;

template <class T>
T* thread_workspace(WorkspaceSlot slot, std::size_t count) noexcept {
    return static_cast<T*>(thread_workspace(slot, count * sizeof(T)));
}

}  // namespace fastnn
