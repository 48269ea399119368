// A persistent pool of worker threads shared by every kernel: spawning threads per call would
// cost more than a small layer takes. Idle workers spin for a short while before they sleep, so
// back-to-back layers (a model, a timing loop) start without a wake-up delay. The caller works
// too, and once every task is taken it waits only for the helpers that joined: a helper still
// asleep (or not yet scheduled) when the work runs out stays out of that job, so a small layer
// never waits for a thread to wake up just to find nothing left to do.
//
// Tasks are handed out as pthreadpool does: each worker owns a contiguous range of the task
// indices (the caller the first) and takes from its front, then takes what is left of the other
// ranges. So consecutive ops over the same rows give each thread the same part of the tensor, the
// part it wrote and holds in its own cache (a single counter handed tasks out in whatever order
// the threads came: EfficientNetB0's squeeze-excite MULs then read half of their input from the
// other core's cache, and took 2-5x their one-thread time on two threads).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "layertune/fpu.h"

namespace layertune {

class ThreadPool {
 public:
  static ThreadPool& global();

  // Helpers asleep start spinning (up to `threads` - 1 of them): an engine calls it as a run
  // begins, so that its first op does not find them asleep after an idle gap between runs.
  void wake(int threads);

  // Runs fn(task, worker) for every task in [0, n) on up to `threads` threads. The caller is
  // worker 0; worker ids are < threads, so callers can index per-thread scratch with them.
  // Denormals are flushed to zero on every thread while it runs (fpu.h).
  template <class F>
  void parallel_for(int threads, int64_t n, F&& fn) {
    const DenormalsFlushed flushed;
    if (threads <= 1 || n <= 1) {
      for (int64_t t = 0; t < n; ++t) fn(t, 0);
      return;
    }
    using Fn = std::remove_reference_t<F>;
    run(threads, n, [](void* ctx, int64_t t, int w) { (*static_cast<Fn*>(ctx))(t, w); },
        const_cast<void*>(static_cast<const void*>(&fn)));
  }

 private:
  struct alignas(64) Range {  // a worker's own tasks: [next, end), taken from the front by anyone
    std::atomic<int64_t> next{0};
    int64_t end = 0;
  };
  using TaskFn = void (*)(void* ctx, int64_t task, int worker);
  ThreadPool() = default;
  void run(int threads, int64_t n, TaskFn fn, void* ctx);
  void ensure_workers(int count);
  void worker_loop(int id);
  void work(int worker);
  void take(Range& range, int worker);

  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;  // cv_'s: sleeping helpers and wake_
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  uint64_t wake_ = 0;  // under mu_: bumped by wake()
  int active_helpers_ = 0;
  std::atomic<bool> closed_{true};  // the job takes no more helpers (its fields may be rewritten)
  std::atomic<int> sleeping_{0};    // helpers waiting on cv_ (or about to): a job must notify them
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::vector<Range> ranges_;  // one per worker (the caller's first); sized before a job starts
  int parts_ = 1;              // the current job's ranges
  std::atomic<int> inside_{0};  // helpers that joined the job and are not done with it
};

}  // namespace layertune
