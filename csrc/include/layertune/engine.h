// Runs a plan: every node prepared once (weights packed / transformed at load), activations in
// one arena whose slots the memory planner reuses between tensors that are not alive together.
#pragma once
#include <memory>
#include <vector>

#include "layertune/aligned_buffer.h"
#include "layertune/plan_format.h"

namespace layertune {

class Op;

// Arena offsets (in floats, 16-float aligned) for every non-constant tensor (-1 for constants),
// and the arena size, from the tensors' lifetimes in node order.
std::vector<int64_t> plan_memory(const Plan& plan, int64_t* arena_floats);

class Engine {
 public:
  // threads: for every node whose kernel choice does not set its own. reference_kernels: run
  // every convolution with the reference kernel (the oracle for a whole plan).
  Engine(Plan plan, int threads, bool reference_kernels = false);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // One input's values: real (float32), or the bytes of an int8 input tensor as they are.
  struct Input {
    const void* data;
    bool as_stored = false;  // data is in the tensor's own dtype (int8 bytes for an int8 input)
    Input(const float* reals) : data(reals) {}  // NOLINT: real values are the common case
    Input(const void* bytes, bool stored) : data(bytes), as_stored(stored) {}
  };
  // inputs / outputs in the plan's order, each of its tensor's size. Real values given for an
  // int8 input (a quantized model's) are quantized as TFLite's QUANTIZE does; its int8 bytes are
  // copied as they are (what LiteRT takes).
  void run(const std::vector<Input>& inputs, const std::vector<float*>& outputs);
  // As run, and returns the seconds each node took (copying the inputs in and the outputs out
  // is counted in no node).
  std::vector<double> run_profiled(const std::vector<Input>& inputs, const std::vector<float*>& outputs);

  const Plan& plan() const { return plan_; }
  int threads() const { return threads_; }
  size_t arena_bytes() const { return arena_.size() * sizeof(float); }
  // The plan's constants the engine still holds: those ops read while running (the kernels hold
  // their own packed copies of the weights; those constants are released once prepared).
  size_t weight_bytes() const { return plan_.constant_bytes(); }

 private:
  // Calls after_node(kInputsCopied) once the inputs are in the arena, then after_node(i) after
  // each op i.
  static constexpr size_t kInputsCopied = ~size_t{0};
  void quantize_input(const float* x, int8_t* y, const PlanTensor& tensor) const;
  template <class Hook>
  void execute(const std::vector<Input>& inputs, const std::vector<float*>& outputs, Hook&& after_node);

  Plan plan_;
  int threads_;
  AlignedBuffer arena_;
  std::vector<float*> buffers_;
  std::vector<std::unique_ptr<Op>> ops_;
};

}  // namespace layertune
