// How a binary element-wise op walks its two inputs broadcast to the output's shape (numpy's rules,
// right-aligned): the shapes collapsed to [outer dims..., inner] with per-input strides (0 where an
// input is broadcast), and the output handed out to threads in tasks of about kChunk elements.
// Shared by the float ops (ADD, MUL, ...) and the int8 MUL, which differ only in the row they compute.
#pragma once
#include <algorithm>
#include <vector>

#include "common.h"
#include "layertune/thread_pool.h"

namespace layertune::ops {

class Broadcast {
 public:
  Broadcast(const OpContext& ctx, int a, int b, int out) {
    const auto& os = ctx.shape(out);
    const size_t rank = os.size();
    auto aligned = [&](int t) {  // the input's shape right-aligned to the output's rank
      const auto& s = ctx.shape(t);
      if (s.size() > rank) fail(ctx.node.where(), ": input rank exceeds the output's");
      std::vector<int> r(rank - s.size(), 1);
      r.insert(r.end(), s.begin(), s.end());
      for (size_t d = 0; d < rank; ++d)
        if (r[d] != os[d] && r[d] != 1) fail(ctx.node.where(), ": inputs do not broadcast to the output shape");
      return r;
    };
    auto as = aligned(a), bs = aligned(b);
    // Merge trailing dims while both inputs agree on broadcasting them, so the inner loop is as
    // long as possible.
    std::vector<int> a_dims, b_dims;
    for (size_t d = 0; d < rank; ++d) {
      const bool can_merge = !dims_.empty() && (a_dims.back() == dims_.back()) == (as[d] == os[d]) &&
                             (b_dims.back() == dims_.back()) == (bs[d] == os[d]);
      if (can_merge) {
        dims_.back() *= os[d], a_dims.back() *= as[d], b_dims.back() *= bs[d];
      } else {
        dims_.push_back(os[d]), a_dims.push_back(as[d]), b_dims.push_back(bs[d]);
      }
    }
    if (dims_.empty()) dims_ = a_dims = b_dims = {1};
    a_strides_ = strides(a_dims);
    b_strides_ = strides(b_dims);
  }

  int64_t inner() const { return dims_.back(); }
  int64_t outer() const { return product(dims_, 0, dims_.size() - 1); }
  // The inner strides: 1, or 0 where that input is one value along the row.
  int64_t inner_a() const { return a_strides_.back(); }
  int64_t inner_b() const { return b_strides_.back(); }

  // row_fn(ia, ib, o, len) for every piece of the output: elements [o, o + len) of the output,
  // from a + ia and b + ib. On `threads` when the output has at least 8 Ki elements. Tasks of about
  // kChunk elements: a long row in chunks (so that even a fully merged shape, one row, splits), short
  // rows in groups (a squeeze-excite MUL has H*W rows of C: one task a row spends more on handing
  // out tasks than on the rows).
  template <class RowFn>
  void for_each_piece(int threads, const RowFn& row_fn) const {
    const int64_t inner = this->inner(), outer = this->outer();
    threads = outer * inner >= (1 << 13) ? threads : 1;
    constexpr int64_t kChunk = 1 << 14;
    const int64_t chunks = threads > 1 ? (inner + kChunk - 1) / kChunk : 1;
    const int64_t rows_per_task = threads > 1 && chunks == 1 ? std::max<int64_t>(1, kChunk / std::max<int64_t>(inner, 1)) : 1;
    const int64_t tasks = chunks > 1 ? outer * chunks : (outer + rows_per_task - 1) / rows_per_task;
    auto piece = [&](int64_t row, int64_t c0, int64_t len) {
      int64_t ia = c0 * inner_a(), ib = c0 * inner_b(), rem = row;
      for (int d = int(dims_.size()) - 2; d >= 0; --d) {
        const int64_t idx = rem % dims_[size_t(d)];
        rem /= dims_[size_t(d)];
        ia += idx * a_strides_[size_t(d)];
        ib += idx * b_strides_[size_t(d)];
      }
      row_fn(ia, ib, row * inner + c0, len);
    };
    ThreadPool::global().parallel_for(threads, tasks, [&](int64_t task, int) {
      if (chunks > 1) {
        const int64_t c0 = (task % chunks) * kChunk;
        piece(task / chunks, c0, std::min(kChunk, inner - c0));
        return;
      }
      const int64_t r1 = std::min(outer, (task + 1) * rows_per_task);
      for (int64_t row = task * rows_per_task; row < r1; ++row) piece(row, 0, inner);
    });
  }

 private:
  std::vector<int64_t> strides(const std::vector<int>& dims) const {
    std::vector<int64_t> s = strides_of(dims);
    for (size_t d = 0; d < dims.size(); ++d)
      if (dims[d] == 1 && dims_[d] != 1) s[d] = 0;
    return s;
  }

  std::vector<int> dims_;  // the output's, collapsed
  std::vector<int64_t> a_strides_, b_strides_;
};

}  // namespace layertune::ops
