#include "pool.h"

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KEEL_PAUSE() _mm_pause()
#else
#define KEEL_PAUSE() ((void)0)
#endif

namespace keel {
namespace {

struct Pool {
  int nthreads = 1;
  std::vector<std::thread> workers;
  // A job is published by bumping `generation`; each worker runs its chunk and
  // decrements `pending`.
  std::atomic<uint64_t> generation{0};
  std::atomic<int> pending{0};
  std::atomic<bool> stop{false};
  const RangeFn* fn = nullptr;
  int64_t n = 0;
  int chunks = 1;
  std::mutex mu;
  std::condition_variable cv;

  static void chunk_bounds(int64_t n, int chunks, int i, int64_t* b, int64_t* e) {
    *b = n * i / chunks;
    *e = n * (i + 1) / chunks;
  }

  void worker_loop(int index, uint64_t seen) {
    for (;;) {
      // Spin first: the next kernel usually follows within microseconds.
      uint64_t g = generation.load(std::memory_order_acquire);
      for (int spin = 0; g == seen && spin < 200000; ++spin) {
        KEEL_PAUSE();
        g = generation.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] {
          return stop.load() || generation.load(std::memory_order_acquire) != seen;
        });
        g = generation.load(std::memory_order_acquire);
      }
      if (stop.load()) return;
      seen = g;
      if (index < chunks) {
        int64_t b, e;
        chunk_bounds(n, chunks, index, &b, &e);
        if (b < e) (*fn)(b, e, index);
      }
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void start(int threads) {
    shutdown();
    nthreads = threads < 1 ? 1 : threads;
    stop = false;
    // New workers must not mistake the last finished job for a new one.
    uint64_t now = generation.load(std::memory_order_acquire);
    for (int i = 1; i < nthreads; ++i) workers.emplace_back([this, i, now] { worker_loop(i, now); });
  }

  void shutdown() {
    if (workers.empty()) return;
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
      generation.fetch_add(1, std::memory_order_release);
    }
    cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
    stop = false;
  }

  void run(int64_t total, const RangeFn& f, int64_t grain) {
    int want = nthreads;
    if (grain < 1) grain = 1;
    if (total / grain < want) want = (int)(total / grain);
    if (want <= 1 || workers.empty()) {
      if (total > 0) f(0, total, 0);
      return;
    }
    fn = &f;
    n = total;
    chunks = want;
    pending.store((int)workers.size(), std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mu);
      generation.fetch_add(1, std::memory_order_release);
    }
    cv.notify_all();
    int64_t b, e;
    chunk_bounds(n, chunks, 0, &b, &e);
    f(b, e, 0);
    // Spin briefly, then yield: a worker pre-empted by another process must get the core back.
    for (int spin = 0; pending.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < 20000) KEEL_PAUSE();
      else std::this_thread::yield();
    }
  }

  ~Pool() { shutdown(); }
};

Pool& pool() {
  static Pool* p = [] {
    auto* q = new Pool();
    int n = 2;
    unsigned hw = std::thread::hardware_concurrency();
    if (hw > 0 && (int)hw < n) n = (int)hw;
    if (const char* env = std::getenv("KEEL_THREADS")) {
      int v = std::atoi(env);
      if (v >= 1 && v <= 256) n = v;
    }
    q->start(n);
    return q;
  }();
  return *p;
}

}  // namespace

int pool_threads() { return pool().nthreads; }
void pool_set_threads(int n) { pool().start(n); }
void parallel_for(int64_t n, const RangeFn& fn, int64_t grain) { pool().run(n, fn, grain); }

}  // namespace keel
