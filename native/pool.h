// A persistent pool of worker threads for data-parallel kernels.
//
// parallel_for(n, fn) splits [0, n) into one contiguous chunk per thread and runs
// fn(begin, end, thread_index) on each; the calling thread takes chunk 0. Workers spin
// briefly between jobs (kernels arrive back to back during a training step) and then
// sleep, so an idle process does not burn a core.
#pragma once
#include <cstdint>
#include <functional>

namespace keel {

using RangeFn = std::function<void(int64_t begin, int64_t end, int thread)>;

// Number of threads kernels use (the caller included): KEEL_THREADS if set, else
// min(hardware threads, 2).
int pool_threads();
void pool_set_threads(int n);

// Runs fn over [0, n) split into pool_threads() chunks (fewer if n is small; `grain` is
// the smallest chunk worth a thread). Blocks until every chunk is done.
void parallel_for(int64_t n, const RangeFn& fn, int64_t grain = 1);

}  // namespace keel
