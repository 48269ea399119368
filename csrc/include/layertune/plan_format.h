// The on-disk plan (.ltplan): a model's graph, its weights and the kernel chosen for each
// convolution. Written by layertune/graph/plan.py, read here; those are the only two places
// that know the layout.
//
// Layout (little-endian):
//   header   char magic[8] = "LTPLAN\0\0"; u32 version; u32 reserved;
//            u64 file_size; u64 meta_offset; u64 meta_size; u64 blob_offset; u64 blob_size
//   meta     str model_name
//            u32 n_tensors, then per tensor: str name; u32 rank; i32 dims[rank];
//                u8 constant; u64 offset (bytes into the blob); u64 nbytes;
//                (version 2:) u8 dtype (0 float32, 1 int8, 2 int32); the source model's
//                quantization: str its dtype ("" if none; "int8", "uint8", ...); u32 n;
//                f32 scales[n]; u32 n; i32 zero_points[n]; i32 axis (one scale per tensor, or one
//                per channel along axis for weights and biases; every int8 / int32 tensor has one)
//            u32 n_nodes, then per node: str op; str name; u32 n_in; i32 in[n_in] (-1: absent);
//                u32 n_out; i32 out[n_out]; u32 n_attrs, then per attribute:
//                str key; u8 kind (0 ints, 1 floats, 2 string); kind 0: u32 n, i64 v[n];
//                kind 1: u32 n, f32 v[n]; kind 2: str
//            u32 n_inputs; i32 inputs[]; u32 n_outputs; i32 outputs[]
//   blob     constants in their dtype, each at a 64-byte aligned offset
//   str = u32 length + bytes.
// Float constants are float32 (fp16 weights are converted at import); int8 / int32 tensors are
// those of the quantized layers the engine computes in int8 (kernels/int8/). A
// convolution's kernel choice is stored as attributes "kernel.method" (string) and
// "kernel.<parameter>" (one int each), e.g. "kernel.winograd_tile".
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "layertune/aligned_buffer.h"

namespace layertune {

inline constexpr char kPlanMagic[8] = {'L', 'T', 'P', 'L', 'A', 'N', 0, 0};
inline constexpr uint32_t kPlanVersion = 2;

enum class DType : uint8_t { kFloat32 = 0, kInt8 = 1, kInt32 = 2 };
inline int dtype_size(DType d) { return d == DType::kInt8 ? 1 : 4; }
const char* dtype_name(DType d);  // "float32", "int8", "int32"

struct PlanTensor {
  std::string name;
  std::vector<int> shape;
  bool constant = false;
  uint64_t offset = 0, nbytes = 0;
  DType dtype = DType::kFloat32;
  // real = scale * (q - zero_point); per channel (weights, biases): one pair per output channel.
  std::string quant_dtype;  // the source's type ("" when the tensor was not quantized)
  std::vector<float> scales;
  std::vector<int32_t> zero_points;
  int32_t quant_axis = 0;
  int64_t elements() const {
    int64_t n = 1;
    for (int d : shape) n *= d;
    return n;
  }
  int64_t bytes() const { return elements() * dtype_size(dtype); }
  bool is_int8() const { return dtype == DType::kInt8; }
};

struct PlanAttr {
  enum Kind : uint8_t { kInts = 0, kFloats = 1, kString = 2 } kind = kInts;
  std::vector<int64_t> ints;
  std::vector<float> floats;
  std::string str;
};

struct PlanNode {
  std::string op, name;
  std::vector<int> inputs, outputs;
  std::map<std::string, PlanAttr> attrs;

  bool has(const std::string& key) const { return attrs.count(key) != 0; }
  // Typed attribute access; a missing or mistyped required attribute throws InvalidArgument
  // naming the node.
  std::vector<int64_t> ints(const std::string& key) const;
  int64_t int_attr(const std::string& key) const;
  int64_t int_attr(const std::string& key, int64_t fallback) const;
  float float_attr(const std::string& key, float fallback) const;
  std::vector<float> floats(const std::string& key) const;
  std::string str(const std::string& key, const std::string& fallback) const;
  std::string where() const;  // "node 'name' (OP)" for messages
};

struct Plan {
  uint32_t version = kPlanVersion;
  std::string name;
  std::vector<PlanTensor> tensors;
  std::vector<PlanNode> nodes;
  std::vector<int> inputs, outputs;
  // Each constant tensor's data (float32, or the int8 / int32 of quantized layers) in a buffer of
  // its own (empty for the other tensors), so that the engine can release a constant once the
  // kernels that read it have packed their copies.
  std::vector<AlignedBuffer> constants;

  const float* constant(int tensor) const { return constants[tensor].data(); }
  template <class T>
  const T* constant_as(int tensor) const { return reinterpret_cast<const T*>(constants[tensor].data()); }
  void release(int tensor) { constants[tensor] = AlignedBuffer(); }
  size_t constant_bytes() const {
    size_t n = 0;
    for (const AlignedBuffer& c : constants) n += c.size() * sizeof(float);
    return n;
  }
};

// Throws InvalidArgument with a one-line reason for a wrong magic number, a newer format
// version, a truncated file or references out of range.
Plan parse_plan(const uint8_t* data, size_t size);
// The same from a file, read straight into the constants' buffers (the file is never held whole
// beside them).
Plan load_plan(const std::string& path);

}  // namespace layertune
