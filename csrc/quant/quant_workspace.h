// Scratch memory for the quant kernels (packed activations, packed B of a
// plain int8 GEMM, padded copies of scale vectors): the calling thread's
// WorkspaceSlot::quant buffer (fastnn/workspace.h), kept for the next call.
// Compiled once (baseline flags); the kernels only receive the pointer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastnn {

// Returns at least `bytes` bytes aligned to a page, owned by the calling
// thread and valid until its next call; throws std::bad_alloc. Pool workers
// write into it only inside a parallel_for issued by that thread.
void* quant_workspace(std::size_t bytes);

}  // namespace fastnn
