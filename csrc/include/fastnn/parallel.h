// fastnn's thread pool. fastnn does not link OpenMP: loading a second OpenMP
// runtime next to PyTorch's is a known source of aborts, deadlocks and
// oversubscription. When the process already has one (PyTorch's), jobs run
// on its team, the threads PyTorch's own ops use; otherwise on fastnn's own
// workers, which start lazily (nothing at import), spin briefly after a job
// so back-to-back kernels do not pay a wake-up, then sleep. One job runs at a
// time; a call made while the pool is busy (another Python thread) or from
// inside a task runs inline on the calling thread, so concurrent callers
// never deadlock and never oversubscribe the cores.
#pragma once

#include <cstdint>
#include <type_traits>

namespace fastnn {

// Threads a kernel may use, the calling thread included.
int num_threads();
// n >= 1. Waits for a running job to finish first.
void set_num_threads(int n);
// The number of cores this process may run on (its CPU affinity).
int default_num_threads();
// The loaded OpenMP runtime whose team runs fastnn's jobs ("libgomp.so.1",
// ...), or nullptr when fastnn's own workers run them.
const char* openmp_runtime();

using RangeFn = void (*)(void* ctx, int64_t begin, int64_t end);
void parallel_for_impl(int64_t n, int64_t grain, RangeFn fn, void* ctx);

// Calls body(begin, end) on disjoint ranges covering [0, n), each at least
// `grain` long (except the last), split evenly and always the same way for
// the same n, grain and thread count: up to 4 ranges per thread, claimed by
// whichever thread is free next (the calling thread included), so a thread
// may run several ranges and a late one none. body must not throw.
template <class Body>
void parallel_for(int64_t n, int64_t grain, Body&& body) {
    using B = std::remove_reference_t<Body>;
    parallel_for_impl(
        n, grain,
        [](void* ctx, int64_t begin, int64_t end) { (*static_cast<B*>(ctx))(begin, end); },
        const_cast<void*>(static_cast<const void*>(&body)));
}

}  // namespace fastnn
