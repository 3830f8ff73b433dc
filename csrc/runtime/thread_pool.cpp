#include "fastnn/parallel.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FASTNN_CPU_RELAX() _mm_pause()
#else
#define FASTNN_CPU_RELAX() std::this_thread::yield()
#endif

namespace fastnn {
namespace {

// A worker spins this long after a job before sleeping: long enough to catch
// the next kernel of a layer-by-layer model, short enough not to steal a core
// from PyTorch's own threads between fastnn calls.
constexpr auto kSpinTime = std::chrono::microseconds(200);

thread_local bool t_inside_task = false;

class ThreadPool {
public:
    ThreadPool() : nthreads_(std::min(default_num_threads(), (1 << kChunkBits) - 1)) {
        pthread_atfork(nullptr, nullptr, [] { instance().reset_after_fork(); });
    }

    static ThreadPool& instance() {
        // Never destroyed: joining workers during interpreter shutdown is how
        // pools deadlock at exit.
        static ThreadPool* pool = new ThreadPool();
        return *pool;
    }

    int size() const { return nthreads_.load(std::memory_order_relaxed); }

    void resize(int n) {
        acquire_blocking();
        stop_workers();
        nthreads_.store(std::clamp(n, 1, (1 << kChunkBits) - 1), std::memory_order_relaxed);
        busy_.store(false, std::memory_order_release);
    }

    void run(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
        const int64_t max_chunks = (n + grain - 1) / grain;
        const int nchunks = static_cast<int>(std::min<int64_t>(size(), max_chunks));
        if (nchunks <= 1 || t_inside_task || busy_.exchange(true, std::memory_order_acquire)) {
            fn(ctx, 0, n);
            return;
        }
        if (static_cast<int>(workers_.size()) + 1 < size()) start_workers();

        job_ = {fn, ctx, n, nchunks};
        pending_.store(nchunks - 1, std::memory_order_relaxed);
        publish(nchunks);
        if (sleepers_.load(std::memory_order_seq_cst) > 0) {
            { std::lock_guard<std::mutex> lock(mutex_); }
            wake_.notify_all();
        }
        run_chunk(0);
        while (pending_.load(std::memory_order_acquire) != 0) FASTNN_CPU_RELAX();
        busy_.store(false, std::memory_order_release);
    }

private:
    struct Job {
        RangeFn fn = nullptr;
        void* ctx = nullptr;
        int64_t n = 0;
        int nchunks = 0;
    };

    // The generation word carries the job's chunk count in its low bits, so a
    // worker that is not needed for a job learns so without reading job_, which
    // the next job may already be rewriting.
    static constexpr int kChunkBits = 16;
    static int chunks_of(uint64_t generation) {
        return static_cast<int>(generation & ((1u << kChunkBits) - 1));
    }
    void publish(int nchunks) {
        const uint64_t next = ((generation_.load(std::memory_order_relaxed) >> kChunkBits) + 1);
        generation_.store((next << kChunkBits) | static_cast<uint64_t>(nchunks),
                          std::memory_order_seq_cst);
    }

    void run_chunk(int chunk) {
        const int64_t begin = job_.n * chunk / job_.nchunks;
        const int64_t end = job_.n * (chunk + 1) / job_.nchunks;
        t_inside_task = true;
        job_.fn(job_.ctx, begin, end);
        t_inside_task = false;
    }

    void worker_loop(int index, uint64_t seen) {
        for (;;) {
            seen = wait_for_generation(seen);
            if (stop_.load(std::memory_order_acquire)) return;
            if (index < chunks_of(seen)) {
                run_chunk(index);
                pending_.fetch_sub(1, std::memory_order_release);
            }
        }
    }

    uint64_t wait_for_generation(uint64_t seen) {
        const auto spin_until = std::chrono::steady_clock::now() + kSpinTime;
        for (int i = 0;; ++i) {
            const uint64_t g = generation_.load(std::memory_order_acquire);
            if (g != seen) return g;
            if ((i & 63) == 63 && std::chrono::steady_clock::now() > spin_until) break;
            FASTNN_CPU_RELAX();
        }
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        uint64_t g;
        wake_.wait(lock, [&] { return (g = generation_.load(std::memory_order_seq_cst)) != seen; });
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        return g;
    }

    void start_workers() {
        stop_.store(false, std::memory_order_relaxed);
        const uint64_t g = generation_.load(std::memory_order_relaxed);
        for (int i = static_cast<int>(workers_.size()) + 1; i < size(); ++i)
            workers_.emplace_back([this, i, g] { worker_loop(i, g); });
    }

    void stop_workers() {
        if (workers_.empty()) return;
        stop_.store(true, std::memory_order_release);
        publish(0);
        { std::lock_guard<std::mutex> lock(mutex_); }
        wake_.notify_all();
        for (auto& t : workers_) t.join();
        workers_.clear();
    }

    void acquire_blocking() {
        while (busy_.exchange(true, std::memory_order_acquire)) std::this_thread::yield();
    }

    // In a forked child only the forking thread exists. The workers' std::thread
    // objects are abandoned (destroying a joinable one would terminate), and the
    // locks are rebuilt in case a worker held one at the fork.
    void reset_after_fork() {
        new (&workers_) std::vector<std::thread>();
        new (&mutex_) std::mutex();
        new (&wake_) std::condition_variable();
        busy_.store(false);
        sleepers_.store(0);
        pending_.store(0);
        stop_.store(false);
    }

    std::atomic<int> nthreads_;
    std::atomic<bool> busy_{false};
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> generation_{0};
    std::atomic<int> pending_{0};
    std::atomic<int> sleepers_{0};
    Job job_;
    std::vector<std::thread> workers_;
    std::mutex mutex_;
    std::condition_variable wake_;
};

}  // namespace

int default_num_threads() {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}

int num_threads() { return ThreadPool::instance().size(); }

void set_num_threads(int n) { ThreadPool::instance().resize(n); }

void parallel_for_impl(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
    if (n <= 0) return;
    ThreadPool::instance().run(n, std::max<int64_t>(grain, 1), fn, ctx);
}

}  // namespace fastnn
