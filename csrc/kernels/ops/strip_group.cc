// An inverted-residual strip group (graph/fusion.py, form `inverted_residual`): a 1x1 expand convolution, the
// depthwise convolution that reads it and the 1x1 project convolution that reads that, computed
// a strip of output rows at a time, so that the expanded tensor (MobileNetV2's is 4.8 MB at
// 224x224) never leaves the cache: each strip expands only the input rows its depthwise window
// needs, into a small buffer, and rows shared with the next strip stay there. The first
// convolution may also be any dense one (MobileNetV2's 3x3 stride-2 stem before its first
// depthwise): a strip then computes the rows of its output the window needs from the input rows
// those read.
//
// Threads work in pairs on a segment of the strips (two threads: all of them), one from the top
// down and one from the bottom up, each claiming the next strip at its end until they meet; each
// runs with kernels and buffers of its own (prepared for one thread) and keeps the expanded rows
// its next strip shares with its last. So a pair splits its rows where its threads' speeds put the
// split, and recomputes only the rows the two strips at the meeting point share: fixed halves
// (one chunk per thread) took as long as the slower thread, and on a shared machine one core
// often runs at half speed for a while (MobileNetV2's groups, traced: one thread's half 1.7-2x
// the other's). The buffers are the arena slots of the two tensors the group never writes (the
// expanded and the depthwise output): the arena is warm in cache, buffers of the op's own would
// come from memory at every run (measured: a 28x28 group took 1.4x the unfused chain's time with
// them).
#include <atomic>
#include <cstring>
#include <map>
#include <memory>
#include <tuple>

#include "../gemm/gemm.h"
#include "common.h"
#include "layertune/conv.h"
#include "layertune/thread_pool.h"

namespace layertune {
namespace {

// How a strip's expanded rows get into the buffer, given what the buffer holds: the rows of the
// strip above it (its thread works down), of the strip below (works up), or nothing.
struct Fill {
  int kept = 0;              // rows of the last strip's buffer this one reuses
  int kept_from = 0, kept_to = 0;  // their first row in the old buffer, and in the new one
  int expand_at = 0;         // the buffer row the expanded rows go to
  int expand_in_r0 = 0;      // the first input row the expand kernel reads for them
  int expand_kernel = -1;    // index into a worker's expand kernels (-1: nothing to expand)
};

// One strip of output rows, planned at prepare time.
struct Strip {
  Fill fresh, after_above, after_below;
  int depthwise_kernel = 0;
  int project_kernel = 0;
  int o0 = 0, o1 = 0;       // the depthwise's (and the group's) output rows
};

// A segment of an image's strips shared by a pair of threads: strips [top, bottom) are unclaimed.
// One 64-bit word, so that a claim from either end is one compare-and-swap.
struct alignas(64) Claims {
  std::atomic<uint64_t> word{0};
  static uint64_t pack(int top, int bottom) { return uint64_t(uint32_t(top)) << 32 | uint32_t(bottom); }
  void reset(int top, int bottom) { word.store(pack(top, bottom), std::memory_order_relaxed); }
  // The strip claimed from the top (or the bottom), -1 when none is left.
  int claim(bool from_top) {
    uint64_t w = word.load(std::memory_order_relaxed);
    for (;;) {
      const int top = int(w >> 32), bottom = int(uint32_t(w));
      if (top >= bottom) return -1;
      const uint64_t next = from_top ? pack(top + 1, bottom) : pack(top, bottom - 1);
      if (word.compare_exchange_weak(w, next, std::memory_order_relaxed)) return from_top ? top : bottom - 1;
    }
  }
};

struct Worker {
  std::vector<std::unique_ptr<ConvKernel>> expand, depthwise, project;
};

class StripGroupOp final : public Op {
 public:
  StripGroupOp(const Plan& plan, size_t first, int threads)
      : expand_(plan.nodes[first]), depthwise_(plan.nodes[first + 1]), project_(plan.nodes[first + 2]) {
    const OpContext ce{plan, expand_, 1, false}, cd{plan, depthwise_, 1, false}, cp{plan, project_, 1, false};
    const ConvShape se = ops::conv_shape(ce), sd = ops::conv_shape(cd), sp = ops::conv_shape(cp);
    check(se, sd, sp, ce, cd, cp);
    in_ = ce.input(0);
    out_ = cp.output(0);
    expanded_ = ce.output(0);
    depthwise_out_ = cd.output(0);
    const PostOps post_e = post_ops_of(expand_), post_d = post_ops_of(depthwise_), post_p = post_ops_of(project_);
    if (post_ops_need_residual(post_e) || post_ops_need_residual(post_d))
      fail(expand_.where(), ": strip group: only the project convolution may add a residual");
    if (post_ops_need_residual(post_p)) residual_ = cp.input(3);
    for (const OpContext* c : {&ce, &cd, &cp})
      if (c->has_input(4)) fail(c->node.where(), ": strip group: a convolution of the group may not scale its input");
    batch_ = se.batch, in_h_ = se.in_h, in_w_ = se.in_w, in_c_ = se.in_c;
    mid_h_ = sd.in_h, mid_w_ = sd.in_w, mid_c_ = se.out_c;
    out_h_ = sd.out_h(), out_w_ = sd.out_w(), out_c_ = sp.out_c;
    stride_ = sd.stride_h, kernel_h_ = sd.kernel_h, pad_top_ = sd.pad_top;
    const int rows = int(expand_.int_attr("strip_rows"));
    if (rows <= 0) fail(expand_.where(), ": strip_rows must be positive, got ", rows);
    // The strip height: at most `rows`, and low enough that every worker's buffers fit in the two
    // tensors' slots (the expanded rows of two chunks overlap by the depthwise's window).
    strip_rows_ = rows;
    int workers = threads;
    while (!plan_strips(se, sd, sp, workers)) {
      if (strip_rows_ > 1) --strip_rows_;
      else --workers, strip_rows_ = rows;  // one worker always fits: its buffers are parts of a whole image
    }

    // Kernels for every strip shape, one set per worker (a kernel's scratch is its own).
    const MethodParams pe = one_thread(ce, se), pd = one_thread(cd, sd), pp = one_thread(cp, sp);
    const float *we = ce.constant(ce.input(1)), *wd = cd.constant(cd.input(1)), *wp = cp.constant(cp.input(1));
    const float* be = ce.has_input(2) ? ce.constant(ce.input(2)) : nullptr;
    const float* bd = cd.has_input(2) ? cd.constant(cd.input(2)) : nullptr;
    const float* bp = cp.has_input(2) ? cp.constant(cp.input(2)) : nullptr;
    workers_.resize(size_t(roles_));
    for (Worker& w : workers_) {
      try {
        for (const ConvShape& s : expand_shapes_) w.expand.push_back(prepared(s, pe, we, be, post_e));
        for (const ConvShape& s : depthwise_shapes_) w.depthwise.push_back(prepared(s, pd, wd, bd, post_d));
        for (const ConvShape& s : project_shapes_) w.project.push_back(prepared(s, pp, wp, bp, post_p));
      } catch (const InvalidArgument& e) {
        fail(expand_.where(), ": strip group: ", e.what());
      }
    }
  }

  void run(float* const* b) override {
    const float* x = b[in_];
    float* y = b[out_];
    const float* residual = residual_ >= 0 ? b[residual_] : nullptr;
    for (int n = 0; n < batch_; ++n)
      for (int seg = 0; seg < segments(); ++seg)
        claims_[size_t(n * segments() + seg)].reset(segment_begin(seg), segment_begin(seg + 1));
    // Task r is role r: segment r / 2, from the top for even r; a thread that runs two roles (a
    // helper that never woke) finds the second's strips taken by the first.
    ThreadPool::global().parallel_for(roles_, roles_, [&](int64_t role, int worker) {
      const bool from_top = role % 2 == 0;
      const int seg = int(role / 2);
      Worker& w = workers_[size_t(worker)];
      const int64_t in_row = int64_t(in_w_) * in_c_, mid_row = int64_t(mid_w_) * mid_c_;
      const int64_t out_row = int64_t(out_w_) * out_c_;
      float* buf = b[expanded_] + worker * expanded_stride_;
      float* dw_out = b[depthwise_out_] + worker * depthwise_stride_;
      for (int n = 0; n < batch_; ++n) {
        const float* xn = x + int64_t(n) * in_h_ * in_row;
        float* yn = y + int64_t(n) * out_h_ * out_row;
        const float* rn = residual ? residual + int64_t(n) * out_h_ * out_row : nullptr;
        Claims& claims = claims_[size_t(n * segments() + seg)];
        int last = -2;  // the strip this role ran last (of this image)
        for (int i = claims.claim(from_top); i >= 0; i = claims.claim(from_top)) {
          const Strip& st = strips_[size_t(i)];
          const Fill& f = last == i - 1 ? st.after_above : last == i + 1 ? st.after_below : st.fresh;
          if (f.kept && f.kept_from != f.kept_to)
            std::memmove(buf + f.kept_to * mid_row, buf + f.kept_from * mid_row,
                         size_t(f.kept * mid_row) * sizeof(float));
          if (f.expand_kernel >= 0)
            w.expand[size_t(f.expand_kernel)]->run(xn + f.expand_in_r0 * in_row, buf + f.expand_at * mid_row, nullptr);
          w.depthwise[size_t(st.depthwise_kernel)]->run(buf, dw_out, nullptr);
          w.project[size_t(st.project_kernel)]->run(dw_out, yn + st.o0 * out_row, rn ? rn + st.o0 * out_row : nullptr);
          last = i;
        }
      }
    });
  }

 private:
  static PostOps post_ops_of(const PlanNode& node) {
    try {
      return parse_post_ops(node.str("epilogue", ""));
    } catch (const InvalidArgument& e) {
      fail(node.where(), ": ", e.what());
    }
  }

  static int64_t round16(int64_t n) { return (n + 15) / 16 * 16; }

  // The segments of the strips: one per pair of roles (the last may have one), in proportion to
  // their roles.
  int segments() const { return (roles_ + 1) / 2; }
  int segment_begin(int seg) const {
    return int(int64_t(strips_.size()) * std::min(roles_, 2 * seg) / std::max(roles_, 1));
  }

  // Plans the strips (`strip_rows_` high at most, a whole number of them for each role so that
  // threads of equal speed meet between two) and the three ways to fill each one's buffer; false
  // when the workers' buffers would not fit in the expanded and depthwise tensors' slots.
  bool plan_strips(const ConvShape& se, const ConvShape& sd, const ConvShape& sp, int workers) {
    const int count = std::min(out_h_, gemm::ceil_div(gemm::ceil_div(out_h_, strip_rows_), workers) * workers);
    strips_.clear();
    expand_shapes_.clear(), depthwise_shapes_.clear(), project_shapes_.clear();
    std::map<int, int> project_keys;
    std::map<std::tuple<int, int, int>, int> expand_keys, depthwise_keys;
    auto key_index = [](auto& keys, const auto& key, auto& shapes, const ConvShape& shape) {
      auto [it, added] = keys.emplace(key, int(shapes.size()));
      if (added) shapes.push_back(shape);
      return it->second;
    };
    // The expanded rows a strip's depthwise window spans, [lo, hi), and of those the ones inside
    // the tensor, [a, b).
    struct Window {
      int lo, hi, a, b;
    };
    auto window = [&](int o0, int o1) {
      const int lo = o0 * stride_ - pad_top_, hi = (o1 - 1) * stride_ - pad_top_ + kernel_h_;
      return Window{lo, hi, std::max(0, lo), std::min(mid_h_, hi)};
    };
    // Expanding rows [r0, r1) into buffer row `at`: the input rows they read, and the padding the
    // strip keeps of the layer's.
    auto expand = [&](Fill& f, int r0, int r1, int at) {
      f.expand_at = at;
      if (r1 <= r0) return;
      const int in_lo = r0 * se.stride_h - se.pad_top, in_hi = (r1 - 1) * se.stride_h - se.pad_top + se.kernel_h;
      const int ia = std::max(0, in_lo), ib = std::min(in_h_, in_hi);
      ConvShape s1 = se;  // strips are of one image
      s1.batch = 1, s1.in_h = ib - ia, s1.pad_top = ia - in_lo, s1.pad_bottom = in_hi - ib;
      f.expand_in_r0 = ia;
      f.expand_kernel =
          key_index(expand_keys, std::make_tuple(s1.in_h, s1.pad_top, s1.pad_bottom), expand_shapes_, s1);
    };
    auto first_row = [&](int strip) { return int(int64_t(strip) * out_h_ / count); };  // even heights
    int max_buffer_rows = 0, max_out_rows = 0;
    for (int i = 0; i < count; ++i) {
      Strip st;
      st.o0 = first_row(i), st.o1 = first_row(i + 1);
      const auto [lo, hi, a, b] = window(st.o0, st.o1);
      expand(st.fresh, a, b, 0);
      if (i > 0) {  // the buffer holds the strip above's rows [pa, pb): keep [a, pb), expand [pb, b)
        const Window above = window(first_row(i - 1), st.o0);
        Fill& f = st.after_above;
        f.kept = std::max(0, above.b - a), f.kept_from = a - above.a, f.kept_to = 0;
        expand(f, a + f.kept, b, f.kept);
      } else {
        st.after_above = st.fresh;
      }
      if (i + 1 < count) {  // the buffer holds the strip below's rows [na, nb): keep [na, b), expand [a, na)
        const Window below = window(st.o1, first_row(i + 2));
        Fill& f = st.after_below;
        f.kept = std::max(0, b - below.a), f.kept_from = 0, f.kept_to = b - a - f.kept;
        expand(f, a, b - f.kept, 0);
      } else {
        st.after_below = st.fresh;
      }
      ConvShape s2 = sd;
      s2.batch = 1, s2.in_h = b - a, s2.pad_top = a - lo, s2.pad_bottom = hi - b;
      st.depthwise_kernel = key_index(depthwise_keys, std::make_tuple(s2.in_h, s2.pad_top, s2.pad_bottom),
                                      depthwise_shapes_, s2);
      ConvShape s3 = sp;
      s3.batch = 1, s3.in_h = st.o1 - st.o0;
      st.project_kernel = key_index(project_keys, s3.in_h, project_shapes_, s3);
      max_buffer_rows = std::max(max_buffer_rows, b - a);
      max_out_rows = std::max(max_out_rows, st.o1 - st.o0);
      strips_.push_back(st);
    }
    roles_ = std::min(workers, count);
    claims_ = std::make_unique<Claims[]>(size_t(batch_) * segments());
    // Each worker's part of the two slots (16-float aligned, as the arena's).
    expanded_stride_ = round16(int64_t(max_buffer_rows) * mid_w_ * mid_c_);
    depthwise_stride_ = round16(int64_t(max_out_rows) * out_w_ * mid_c_);
    return roles_ * expanded_stride_ <= round16(int64_t(batch_) * mid_h_ * mid_w_ * mid_c_) &&
           roles_ * depthwise_stride_ <= round16(int64_t(batch_) * out_h_ * out_w_ * mid_c_);
  }

  // The node's kernel choice for a strip of `whole`: on one thread (each of the group's threads
  // runs strips of its own), with what the kernel would choose from the whole layer's shape fixed
  // (a strip's pixel count could choose another GEMM tile than the layer's).
  static MethodParams one_thread(const OpContext& ctx, const ConvShape& whole) {
    MethodParams p = ops::kernel_choice(ctx, "unrolled", "reference");
    p.threads = 1;
    if (p.method == "unrolled" && p.get("gemm_tile") == 0)
      p.set("gemm_tile", gemm::tile_for_conv(whole));
    return p;
  }

  static std::unique_ptr<ConvKernel> prepared(const ConvShape& s, const MethodParams& p, const float* w,
                                              const float* bias, const PostOps& post) {
    auto kernel = make_conv_kernel(s, p, w, bias);
    kernel->set_post_ops(post);
    return kernel;
  }

  void check(const ConvShape& se, const ConvShape& sd, const ConvShape& sp, const OpContext& ce, const OpContext& cd,
             const OpContext& cp) const {
    auto pointwise = [](const ConvShape& s) {
      return s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.groups == 1 &&
             s.pad_top + s.pad_bottom + s.pad_left + s.pad_right == 0;
    };
    if (expand_.op != "CONV_2D" || se.groups != 1 || se.dilation_h != 1 || se.dilation_w != 1)
      fail(expand_.where(), ": strip group: this expand layer must be a CONV_2D without groups or dilation");
    if (!sd.is_depthwise() || sd.multiplier() != 1 || sd.dilation_h != 1 || sd.dilation_w != 1)
      fail(expand_.where(), ": strip group: the node after it, '", depthwise_.name,
           "', must be a depthwise convolution with multiplier 1 and dilation 1");
    if (project_.op != "CONV_2D" || !pointwise(sp))
      fail(expand_.where(), ": strip group: the second node after it, '", project_.name,
           "', must be a 1x1 CONV_2D with stride 1 and no padding");
    if (cd.input(0) != ce.output(0) || cp.input(0) != cd.output(0))
      fail(expand_.where(), ": strip group: '", depthwise_.name, "' must read this node's output and '", project_.name,
           "' the depthwise's");
    if (sd.batch != se.batch || sd.in_h != se.out_h() || sd.in_w != se.out_w() || sd.in_c != se.out_c ||
        sp.in_h != sd.out_h() || sp.in_w != sd.out_w() || sp.in_c != sd.out_c)
      fail(expand_.where(), ": strip group: the three layers' shapes do not chain");
  }

  const PlanNode &expand_, &depthwise_, &project_;
  int in_ = -1, out_ = -1, residual_ = -1, expanded_ = -1, depthwise_out_ = -1;
  int64_t expanded_stride_ = 0, depthwise_stride_ = 0;
  int strip_rows_ = 0;
  int batch_ = 1, in_h_ = 0, in_w_ = 0, in_c_ = 0;  // the expand's input
  int mid_h_ = 0, mid_w_ = 0, mid_c_ = 0;           // the expanded tensor (the depthwise's input)
  int out_h_ = 0, out_w_ = 0, out_c_ = 0;
  int stride_ = 1, kernel_h_ = 1, pad_top_ = 0;
  int roles_ = 1;  // threads taking part (task r runs role r)
  std::vector<Strip> strips_;  // of one image
  std::unique_ptr<Claims[]> claims_;  // per image and segment
  std::vector<ConvShape> expand_shapes_, depthwise_shapes_, project_shapes_;  // a worker's kernels
  std::vector<Worker> workers_;
};

class NoOp final : public Op {
 public:
  void run(float* const*) override {}
};

}  // namespace

bool starts_strip_group(const PlanNode& node) { return node.has("strip_rows"); }

std::unique_ptr<Op> make_strip_group_op(const Plan& plan, size_t first, int threads) {
  if (first + 2 >= plan.nodes.size())
    fail(plan.nodes[first].where(), ": strip group: needs the depthwise and project nodes after it");
  return std::make_unique<StripGroupOp>(plan, first, threads);
}

std::unique_ptr<Op> make_no_op() { return std::make_unique<NoOp>(); }

}  // namespace layertune
