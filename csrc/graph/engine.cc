#include "layertune/engine.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "../kernels/int8/qconv.h"
#include "layertune/fpu.h"
#include "layertune/status.h"
#include "layertune/thread_pool.h"
#include "op.h"

namespace layertune {

std::vector<int64_t> plan_memory(const Plan& plan, int64_t* arena_floats) {
  const int n_tensors = int(plan.tensors.size());
  const int end = int(plan.nodes.size());
  std::vector<int> first(n_tensors, -2), last(n_tensors, -2);
  for (int t : plan.inputs) first[t] = last[t] = -1;
  for (int i = 0; i < end; ++i) {
    // A fused group's op reads and writes its tensors at any of its nodes: they live across it.
    int span0 = i, span1 = i;
    for (int g = std::max(0, i - int(kMaxGroupNodes) + 1); g <= i; ++g) {
      const int count = int(fused_group_nodes(plan.nodes[g]));
      if (count > 1 && g + count > i && g + count <= end) span0 = std::min(span0, g), span1 = std::max(span1, g + count - 1);
    }
    for (int t : plan.nodes[i].inputs)
      if (t >= 0) last[t] = std::max(last[t], span1);
    for (int t : plan.nodes[i].outputs) {
      if (first[t] == -2) first[t] = span0;
      last[t] = std::max(last[t], span1);
    }
  }
  for (int t : plan.outputs) last[t] = end;  // graph outputs live to the end

  struct Item { int tensor; int64_t size; };
  std::vector<Item> items;
  for (int t = 0; t < n_tensors; ++t)
    if (!plan.tensors[t].constant && first[t] != -2)
      items.push_back({t, ((plan.tensors[t].bytes() + 3) / 4 + 15) / 16 * 16});  // in floats
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) { return a.size > b.size; });

  std::vector<int64_t> offset(n_tensors, -1);
  std::vector<Item> placed;
  int64_t total = 0;
  for (const Item& it : items) {
    // Placed tensors alive at the same time, by offset: take the lowest gap that fits.
    std::vector<std::pair<int64_t, int64_t>> busy;
    for (const Item& p : placed)
      if (first[p.tensor] <= last[it.tensor] && first[it.tensor] <= last[p.tensor])
        busy.push_back({offset[p.tensor], offset[p.tensor] + p.size});
    std::sort(busy.begin(), busy.end());
    int64_t at = 0;
    for (const auto& [lo, hi] : busy) {
      if (lo - at >= it.size) break;
      at = std::max(at, hi);
    }
    offset[it.tensor] = at;
    total = std::max(total, at + it.size);
    placed.push_back(it);
  }
  *arena_floats = total;
  return offset;
}

namespace {
// Inputs an op reads only while it is prepared: the weights and bias that convolution and
// fully-connected ops pack (or copy) into kernels of their own.
bool read_only_to_prepare(const PlanNode& node, size_t input) {
  return (input == 1 || input == 2) && (node.op == "CONV_2D" || node.op == "DEPTHWISE_CONV_2D" ||
                                        node.op == "FULLY_CONNECTED" || node.op == "TRANSPOSE_CONV");
}
}  // namespace

Engine::Engine(Plan plan, int threads, bool reference_kernels) : plan_(std::move(plan)), threads_(threads) {
  if (threads_ < 1) fail("threads: must be positive, got ", threads_);
  for (size_t i = 0; i < plan_.nodes.size(); ++i)
    for (int t : plan_.nodes[i].outputs)
      if (plan_.tensors[t].constant) fail(plan_.nodes[i].where(), ": writes to a constant tensor");
  // The engine's outputs are real values (a quantized model dequantizes in its last node); an
  // input is real, or int8 with one scale and zero point (Input: its bytes, or reals quantized).
  for (int t : plan_.outputs)
    if (plan_.tensors[t].dtype != DType::kFloat32)
      fail("plan: graph output '", plan_.tensors[t].name, "' is ", dtype_name(plan_.tensors[t].dtype),
           "; the engine's outputs are float32");
  for (int t : plan_.inputs) {
    const PlanTensor& in = plan_.tensors[t];
    if (in.dtype != DType::kFloat32 && !(in.dtype == DType::kInt8 && in.scales.size() == 1 && in.zero_points.size() == 1))
      fail("plan: graph input '", in.name, "' is ", dtype_name(in.dtype),
           "; the engine's inputs are float32, or int8 with one scale and zero point");
  }
  int64_t arena_floats = 0;
  const std::vector<int64_t> offsets = plan_memory(plan_, &arena_floats);
  arena_.resize(size_t(arena_floats));
  buffers_.assign(plan_.tensors.size(), nullptr);
  for (size_t t = 0; t < plan_.tensors.size(); ++t) {
    if (plan_.tensors[t].constant) buffers_[t] = const_cast<float*>(plan_.constant(int(t)));
    else if (offsets[t] >= 0) buffers_[t] = arena_.data() + offsets[t];
  }
  // A constant that every reader only packs is released once the last of them is prepared: the
  // model's weights are not held twice (a Pi Zero has 512 MB).
  std::vector<int> pending(plan_.tensors.size(), 0);
  std::vector<bool> kept(plan_.tensors.size(), false);
  for (int t : plan_.outputs) kept[t] = true;
  for (const PlanNode& node : plan_.nodes)
    for (size_t i = 0; i < node.inputs.size(); ++i)
      if (node.inputs[i] >= 0 && plan_.tensors[node.inputs[i]].constant) {
        if (read_only_to_prepare(node, i)) ++pending[node.inputs[i]];
        else kept[node.inputs[i]] = true;
      }
  ops_.reserve(plan_.nodes.size());
  for (size_t n = 0; n < plan_.nodes.size();) {
    // The nodes one op computes: a fused group's (the reference engine runs them apart).
    const size_t count = reference_kernels ? 1 : fused_group_nodes(plan_.nodes[n]);
    const bool group = count > 1;
    for (size_t k = n; k < std::min(n + count, plan_.nodes.size()); ++k)
      for (int t : plan_.nodes[k].inputs)
        if (t >= 0 && !plan_.tensors[t].constant && !buffers_[t])
          fail(plan_.nodes[k].where(), ": reads tensor '", plan_.tensors[t].name, "' that nothing produces");
    if (group) {
      ops_.push_back(starts_strip_group(plan_.nodes[n]) ? make_strip_group_op(plan_, n, threads_)
                                                         : make_squeeze_excite_op(plan_, n, threads_));
      for (size_t k = 1; k < count; ++k) ops_.push_back(make_no_op());
    } else {
      ops_.push_back(make_op(OpContext{plan_, plan_.nodes[n], threads_, reference_kernels}));
    }
    for (size_t k = n; k < n + count; ++k) {
      const PlanNode& node = plan_.nodes[k];
      for (size_t i = 0; i < node.inputs.size(); ++i) {
        const int t = node.inputs[i];
        if (t >= 0 && plan_.tensors[t].constant && read_only_to_prepare(node, i) && --pending[t] == 0 && !kept[t]) {
          plan_.release(t);
          buffers_[t] = nullptr;
        }
      }
    }
    n += count;
  }
}

Engine::~Engine() = default;

// Real values given for an int8 input, quantized as QUANTIZE does (and split across the threads as it is).
void Engine::quantize_input(const float* x, int8_t* y, const PlanTensor& tensor) const {
  constexpr int64_t kChunk = 16384;
  const int64_t n = tensor.elements();
  ThreadPool::global().parallel_for(threads_, (n + kChunk - 1) / kChunk, [&](int64_t task, int) {
    const int64_t i0 = task * kChunk;
    int8::quantize_reals(x + i0, y + i0, std::min(kChunk, n - i0), tensor.scales.at(0), float(tensor.zero_points.at(0)));
  });
}

template <class Hook>
void Engine::execute(const std::vector<Input>& inputs, const std::vector<float*>& outputs, Hook&& after_node) {
  if (inputs.size() != plan_.inputs.size()) fail("expected ", plan_.inputs.size(), " inputs, got ", inputs.size());
  if (outputs.size() != plan_.outputs.size()) fail("expected ", plan_.outputs.size(), " outputs, got ", outputs.size());
  const DenormalsFlushed flushed;  // for the ops' work outside parallel_for too (fpu.h)
  ThreadPool::global().wake(threads_);  // while the inputs are copied, not in the first op
  for (size_t i = 0; i < inputs.size(); ++i) {
    const PlanTensor& tensor = plan_.tensors[plan_.inputs[i]];
    void* dst = buffers_[plan_.inputs[i]];
    if (tensor.dtype != DType::kInt8) std::memcpy(dst, inputs[i].data, tensor.elements() * sizeof(float));
    else if (inputs[i].as_stored) std::memcpy(dst, inputs[i].data, size_t(tensor.elements()));
    else quantize_input(static_cast<const float*>(inputs[i].data), static_cast<int8_t*>(dst), tensor);
  }
  after_node(kInputsCopied);
  for (size_t i = 0; i < ops_.size(); ++i) {
    ops_[i]->run(buffers_.data());
    after_node(i);
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    const int t = plan_.outputs[i];
    std::memcpy(outputs[i], buffers_[t], plan_.tensors[t].elements() * sizeof(float));
  }
}

void Engine::run(const std::vector<Input>& inputs, const std::vector<float*>& outputs) {
  execute(inputs, outputs, [](size_t) {});
}

std::vector<double> Engine::run_profiled(const std::vector<Input>& inputs, const std::vector<float*>& outputs) {
  std::vector<double> seconds(ops_.size());
  auto t0 = std::chrono::steady_clock::now();
  execute(inputs, outputs, [&](size_t i) {
    auto t1 = std::chrono::steady_clock::now();
    if (i != kInputsCopied) seconds[i] = std::chrono::duration<double>(t1 - t0).count();
    t0 = t1;
  });
  return seconds;
}

}  // namespace layertune
