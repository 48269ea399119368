#include "layertune/thread_pool.h"

#include <algorithm>
#include <chrono>

namespace layertune {

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
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = fn;
    ctx_ = ctx;
    parts_ = helpers + 1;
    if (ranges_.size() < size_t(parts_)) ranges_ = std::vector<Range>(size_t(parts_));
    for (int w = 0; w < parts_; ++w) {
      ranges_[size_t(w)].next.store(n * w / parts_, std::memory_order_relaxed);
      ranges_[size_t(w)].end = n * (w + 1) / parts_;
    }
    active_helpers_ = helpers;
    closed_ = false;
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  work(0);
  {  // every task is taken: helpers that have not joined by now stay out
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  while (inside_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0, woken = 0;
  for (;;) {
    // Wait about 100 us for the next job before sleeping on the condition variable, yielding the
    // CPU while waiting: the scheduler sometimes places a woken worker on the caller's CPU, and a
    // busy spin there would hold off the very thread that finishes the job and posts the next one.
    const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(100);
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spin_until)
      std::this_thread::yield();
    bool participate;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load(std::memory_order_relaxed) != seen || wake_ != woken; });
      woken = wake_;
      if (generation_.load(std::memory_order_relaxed) == seen) continue;  // woken ahead of a job: spin again
      seen = generation_.load(std::memory_order_relaxed);
      participate = !closed_ && id <= active_helpers_;
      if (participate) inside_.fetch_add(1, std::memory_order_relaxed);
    }
    if (participate) {
      work(id);
      inside_.fetch_sub(1, std::memory_order_release);
    }
  }
}

}  // namespace layertune
