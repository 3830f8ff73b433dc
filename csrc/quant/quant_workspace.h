// Scratch memory for the quant kernels (packed activations, packed B of a
// plain int8 GEMM, padded copies of scale vectors). One buffer per calling
// thread, grown when a call needs more and kept for the next call: a fresh
// allocation of a few MB per call would pay its page faults every time.
// Compiled once (baseline flags); the kernels only receive the pointer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fastnn {

// Returns at least `bytes` bytes aligned to 64, owned by the calling thread
// and valid until its next call. Pool workers write into it only inside a
// parallel_for issued by that thread.
void* quant_workspace(std::size_t bytes);

}  // namespace fastnn
