#include "fastnn/parallel.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
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

// The OpenMP runtime PyTorch brought into this process, if any. Its workers
// spin for milliseconds after each of PyTorch's parallel ops (libgomp's
// default spin count of pauses), and a pool of our own beside them fights
// them for the cores: on 2 cores, an attention backward after autograd's
// parallel gradient accumulation took 2.2 ms longer than alone. So while such
// a runtime is loaded, jobs run on its team (GOMP_parallel, the entry point
// GCC emits for `#pragma omp parallel`, also exported by Intel's and LLVM's
// runtimes): the threads PyTorch uses, already awake. fastnn never loads a
// runtime itself (RTLD_NOLOAD), so it never adds a second one.
struct OpenMPRuntime {
    void (*parallel)(void (*fn)(void*), void* data, unsigned num_threads, unsigned flags) = nullptr;
    int (*thread_num)() = nullptr;
    char name[64] = {};
};

class OpenMPLookup {
public:
    // nullptr while no runtime is loaded. Looked up again at most every
    // kRecheck (torch may be imported after fastnn's first kernel), then kept:
    // a loaded runtime is never unloaded while its users live.
    const OpenMPRuntime* get() {
        if (disabled_.load(std::memory_order_relaxed)) return nullptr;
        if (found_.load(std::memory_order_acquire)) return &runtime_;
        const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
        int64_t next = next_check_.load(std::memory_order_relaxed);
        if (now < next || !next_check_.compare_exchange_strong(next, now + kRecheck.count()))
            return nullptr;
        // By file name among the loaded objects, not by soname: wheels
        // repaired by auditwheel carry the runtime as libgomp-<hash>.so.1.
        dl_iterate_phdr(
            [](dl_phdr_info* info, size_t, void* self) {
                return static_cast<OpenMPLookup*>(self)->try_object(info->dlpi_name) ? 1 : 0;
            },
            this);
        return found_.load(std::memory_order_acquire) ? &runtime_ : nullptr;
    }

    const char* name() { return get() ? runtime_.name : nullptr; }

    // libgomp is not fork-safe: in a child forked after its team ran, a
    // parallel region waits forever for the parent's threads. The child runs
    // on fastnn's own workers.
    void forget_after_fork() { disabled_.store(true, std::memory_order_relaxed); }

private:
    bool try_object(const char* path) {
        const char* slash = path ? std::strrchr(path, '/') : nullptr;
        const char* base = slash ? slash + 1 : path;
        if (!base || !(std::strncmp(base, "libgomp", 7) == 0 || std::strncmp(base, "libiomp5", 8) == 0 ||
                       std::strncmp(base, "libomp", 6) == 0))
            return false;
        void* lib = dlopen(path, RTLD_LAZY | RTLD_NOLOAD);
        if (!lib) return false;
        runtime_.parallel = reinterpret_cast<decltype(runtime_.parallel)>(dlsym(lib, "GOMP_parallel"));
        runtime_.thread_num = reinterpret_cast<decltype(runtime_.thread_num)>(dlsym(lib, "omp_get_thread_num"));
        if (!runtime_.parallel || !runtime_.thread_num) return false;
        std::snprintf(runtime_.name, sizeof(runtime_.name), "%s", base);
        found_.store(true, std::memory_order_release);
        return true;
    }

    static constexpr std::chrono::steady_clock::duration kRecheck =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::milliseconds(100));
    // FASTNN_THREAD_POOL=own keeps fastnn's own workers even beside a loaded
    // runtime (tests compare the two; a process may prefer separate pools).
    std::atomic<bool> disabled_{[] {
        const char* v = std::getenv("FASTNN_THREAD_POOL");
        return v && std::strcmp(v, "own") == 0;
    }()};
    std::atomic<bool> found_{false};
    std::atomic<int64_t> next_check_{0};
    OpenMPRuntime runtime_;
};

OpenMPLookup& openmp() {
    static OpenMPLookup* lookup = new OpenMPLookup();
    return *lookup;
}

class ThreadPool {
public:
    ThreadPool()
        : nthreads_(std::min(default_num_threads(), (1 << kThreadBits) - 1)), claims_(new Claim[size()]) {
        pthread_atfork(nullptr, nullptr, [] {
            openmp().forget_after_fork();
            instance().reset_after_fork();
        });
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
        nthreads_.store(std::clamp(n, 1, (1 << kThreadBits) - 1), std::memory_order_relaxed);
        claims_.reset(new Claim[size()]);
        busy_.store(false, std::memory_order_release);
    }

    void run(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
        const int64_t max_chunks = (n + grain - 1) / grain;
        if (max_chunks <= 1 || size() <= 1 || t_inside_task || busy_.exchange(true, std::memory_order_acquire)) {
            fn(ctx, 0, n);
            return;
        }
        // Read while holding busy_: resize() (which reallocates claims_) waits
        // for it.
        const int threads = static_cast<int>(std::min<int64_t>(size(), max_chunks));
        if (threads <= 1) {
            busy_.store(false, std::memory_order_release);
            fn(ctx, 0, n);
            return;
        }
        const OpenMPRuntime* team = openmp().get();
        if (!team && static_cast<int>(workers_.size()) + 1 < size()) start_workers();

        // No thread may still hold a chunk of the previous job here (run()
        // returned only once all of them were done), so the job can be
        // rewritten before the claim words announce it.
        const int64_t nchunks = std::min<int64_t>(max_chunks, int64_t(threads) * kChunksPerThread);
        job_fn_.store(fn, std::memory_order_relaxed);
        job_ctx_.store(ctx, std::memory_order_relaxed);
        job_n_.store(n, std::memory_order_relaxed);
        job_chunks_.store(nchunks, std::memory_order_relaxed);
        done_.store(0, std::memory_order_relaxed);
        const uint64_t id = ++job_id_ & kIdMask;
        for (int t = 0; t < threads; ++t)
            claims_[t].word.store(claim_word(id, nchunks * t / threads, nchunks * (t + 1) / threads),
                                  std::memory_order_release);
        if (team) {
            // Team member i runs share i, then steals; a team smaller than
            // asked for (nested inside another OpenMP region, a thread limit)
            // leaves its missing members' shares to the stealing.
            struct TeamJob {
                ThreadPool* pool;
                const OpenMPRuntime* team;
                int threads;
                uint64_t id;
            } job{this, team, threads, id};
            team->parallel(
                [](void* data) {
                    const auto& j = *static_cast<const TeamJob*>(data);
                    j.pool->run_chunks(j.team->thread_num(), j.threads, j.id);
                },
                &job, static_cast<unsigned>(threads), 0);
        } else {
            publish(threads);
            if (sleepers_.load(std::memory_order_seq_cst) > 0) {
                { std::lock_guard<std::mutex> lock(mutex_); }
                wake_.notify_all();
            }
            run_chunks(0, threads, id);
        }
        while (done_.load(std::memory_order_acquire) != nchunks) FASTNN_CPU_RELAX();
        busy_.store(false, std::memory_order_release);
    }

private:
    // Each participating thread (the caller is thread 0) owns an even share
    // of up to kChunksPerThread chunks per thread and runs it front to back;
    // a thread done with its share takes chunks from the back of the others'
    // shares. When every thread runs, each runs exactly its own share, the
    // same one on every call (what a thread wrote in one kernel is in its
    // core's caches for the next); a worker slow to wake, or descheduled by
    // another process's threads (PyTorch's OpenMP workers spin for
    // milliseconds after each of its ops), delays the job by at most the one
    // chunk it holds instead of by its whole share. Chunk boundaries depend
    // on n, grain and the thread count only; which thread runs a chunk does
    // not change any result.
    static constexpr int64_t kChunksPerThread = 4;

    // A share's claim word: job id | first unclaimed chunk | end. Chunks are
    // taken by compare-and-swap, which also checks the job id, so a worker
    // that wakes after its job finished takes nothing, and the job's fields
    // are read only by a thread holding one of its chunks (they cannot change
    // before that chunk is done).
    static constexpr int kIdShift = 40, kBeginShift = 20;
    static constexpr uint64_t kIndexMask = (uint64_t(1) << 20) - 1, kIdMask = (uint64_t(1) << 24) - 1;
    static uint64_t claim_word(uint64_t id, int64_t begin, int64_t end) {
        return id << kIdShift | static_cast<uint64_t>(begin) << kBeginShift | static_cast<uint64_t>(end);
    }
    struct alignas(64) Claim {
        std::atomic<uint64_t> word{0};
    };

    // Takes one chunk of job `id` from share t, from its front or back; -1
    // when the share is empty or belongs to another job.
    int64_t take(int t, uint64_t id, bool front) {
        std::atomic<uint64_t>& word = claims_[t].word;
        uint64_t c = word.load(std::memory_order_acquire);
        for (;;) {
            const uint64_t begin = (c >> kBeginShift) & kIndexMask, end = c & kIndexMask;
            if ((c >> kIdShift) != id || begin >= end) return -1;
            const uint64_t taken = front ? c + (uint64_t(1) << kBeginShift) : c - 1;
            if (word.compare_exchange_weak(c, taken, std::memory_order_acquire, std::memory_order_acquire))
                return static_cast<int64_t>(front ? begin : end - 1);
        }
    }

    void run_chunk(int64_t chunk) {
        const int64_t n = job_n_.load(std::memory_order_relaxed), nchunks = job_chunks_.load(std::memory_order_relaxed);
        t_inside_task = true;
        job_fn_.load(std::memory_order_relaxed)(job_ctx_.load(std::memory_order_relaxed), n * chunk / nchunks,
                                                n * (chunk + 1) / nchunks);
        t_inside_task = false;
        done_.fetch_add(1, std::memory_order_release);
    }

    void run_chunks(int self, int threads, uint64_t id) {
        for (int64_t c; (c = take(self, id, true)) >= 0;) run_chunk(c);
        for (int k = 1; k < threads; ++k)
            for (int64_t c; (c = take((self + k) % threads, id, false)) >= 0;) run_chunk(c);
    }

    // The generation word carries the number of threads the job wants in its
    // low bits, so a worker that is not needed learns so without looking at
    // the job.
    static constexpr int kThreadBits = 16;
    static int threads_of(uint64_t generation) {
        return static_cast<int>(generation & ((1u << kThreadBits) - 1));
    }
    void publish(int threads) {
        const uint64_t next = ((generation_.load(std::memory_order_relaxed) >> kThreadBits) + 1);
        generation_.store((next << kThreadBits) | static_cast<uint64_t>(threads), std::memory_order_seq_cst);
    }

    void worker_loop(int index, uint64_t seen) {
        for (;;) {
            seen = wait_for_generation(seen);
            if (stop_.load(std::memory_order_acquire)) return;
            const int threads = threads_of(seen);
            if (index < threads) run_chunks(index, threads, claims_[index].word.load(std::memory_order_acquire) >> kIdShift);
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
        done_.store(0);
        stop_.store(false);
    }

    std::atomic<int> nthreads_;
    std::atomic<bool> busy_{false};
    std::atomic<bool> stop_{false};
    std::atomic<uint64_t> generation_{0};
    std::unique_ptr<Claim[]> claims_;
    uint64_t job_id_ = 0;
    std::atomic<int64_t> done_{0};
    std::atomic<int64_t> job_chunks_{0};
    std::atomic<RangeFn> job_fn_{nullptr};
    std::atomic<void*> job_ctx_{nullptr};
    std::atomic<int64_t> job_n_{0};
    std::atomic<int> sleepers_{0};
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

const char* openmp_runtime() { return openmp().name(); }

void set_num_threads(int n) { ThreadPool::instance().resize(n); }

void parallel_for_impl(int64_t n, int64_t grain, RangeFn fn, void* ctx) {
    if (n <= 0) return;
    ThreadPool::instance().run(n, std::max<int64_t>(grain, 1), fn, ctx);
}

}  // namespace fastnn
