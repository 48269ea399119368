#include "layertune/thread_pool.h"

#include <algorithm>
#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace layertune {
namespace {

// A spin-wait hint: the core yields its pipeline to the other hyper-thread and waits a little.
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__) || (defined(__ARM_ARCH) && __ARM_ARCH >= 7)
  __asm__ __volatile__("yield");
#endif
}

}  // namespace

ThreadPool& ThreadPool::global() {
  // Never destroyed: worker threads may outlive static destruction order at process exit.
  static ThreadPool* pool = new ThreadPool();
  return *pool;
}

void ThreadPool::ensure_workers(int count) {
  while (static_cast<int>(workers_.size()) < count) {
    int id = static_cast<int>(workers_.size()) + 1;
    workers_.emplace_back([this, id] { worker_loop(id); });
    workers_.back().detach();
  }
}

void ThreadPool::wake(int threads) {
  if (threads <= 1) return;
  std::lock_guard<std::mutex> call(call_mu_);
  ensure_workers(threads - 1);
  if (sleeping_.load(std::memory_order_seq_cst) == 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++wake_;
  }
  cv_.notify_all();
}

void ThreadPool::take(Range& range, int worker) {
  for (int64_t t = range.next.fetch_add(1, std::memory_order_relaxed); t < range.end;
       t = range.next.fetch_add(1, std::memory_order_relaxed))
    fn_(ctx_, t, worker);
}

void ThreadPool::work(int worker) {
  for (int k = 0; k < parts_; ++k) take(ranges_[size_t((worker + k) % parts_)], worker);  // its own, then the rest
}

void ThreadPool::run(int threads, int64_t n, TaskFn fn, void* ctx) {
  std::lock_guard<std::mutex> call(call_mu_);
  int helpers = static_cast<int>(std::min<int64_t>(threads, n)) - 1;
  ensure_workers(helpers);
  // The job's fields are written while it is closed: a helper late from the last job that looks
  // now sees `closed_` and stays out.
  fn_ = fn;
  ctx_ = ctx;
  parts_ = helpers + 1;
  if (ranges_.size() < size_t(parts_)) ranges_ = std::vector<Range>(size_t(parts_));
  for (int w = 0; w < parts_; ++w) {
    ranges_[size_t(w)].next.store(n * w / parts_, std::memory_order_relaxed);
    ranges_[size_t(w)].end = n * (w + 1) / parts_;
  }
  active_helpers_ = helpers;
  closed_.store(false, std::memory_order_seq_cst);
  generation_.fetch_add(1, std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_seq_cst) > 0) {
    std::lock_guard<std::mutex> lock(mu_);  // a helper between its check and its wait holds mu_
    cv_.notify_all();
  }
  work(0);
  // Every task is taken: close the job, then wait for the helpers that joined it. A helper counts
  // itself in `inside_` before it looks at `closed_`, so it either sees the job closed or is
  // waited for (both sides seq_cst).
  closed_.store(true, std::memory_order_seq_cst);
  for (int spins = 0; inside_.load(std::memory_order_seq_cst) != 0; ++spins)
    if (spins < 2000) cpu_relax(); else std::this_thread::yield();
}

void ThreadPool::worker_loop(int id) {
  DenormalsFlushed::flush_for_good();
  uint64_t seen = generation_.load(std::memory_order_acquire), woken = 0;
  for (;;) {
    // Wait about 100 us for the next job before sleeping on the condition variable: the first
    // 20 us in a busy spin (the gap between a model's ops; a yield is a system call that would
    // delay the start of every small layer by about 0.3 us), then yielding the CPU: the scheduler
    // sometimes places a woken worker on the caller's CPU, and a long busy spin there would hold
    // off the very thread that finishes the job and posts the next one.
    const auto start = std::chrono::steady_clock::now();
    const auto busy_until = start + std::chrono::microseconds(20), spin_until = start + std::chrono::microseconds(100);
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < busy_until)
      for (int i = 0; i < 32 && generation_.load(std::memory_order_acquire) == seen; ++i) cpu_relax();
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
      std::this_thread::yield();
    if (generation_.load(std::memory_order_acquire) == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_.fetch_add(1, std::memory_order_seq_cst);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_seq_cst) != seen || wake_ != woken; });
      sleeping_.fetch_sub(1, std::memory_order_relaxed);
      woken = wake_;
      if (generation_.load(std::memory_order_relaxed) == seen) continue;  // woken ahead of a job: spin again
    }
    seen = generation_.load(std::memory_order_acquire);
    inside_.fetch_add(1, std::memory_order_seq_cst);
    if (!closed_.load(std::memory_order_seq_cst) && id <= active_helpers_) work(id);
    inside_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

}  // namespace layertune
