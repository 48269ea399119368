#include <cstring>
#include <fstream>
#include <iterator>

#include "layertune/plan_format.h"
#include "layertune/status.h"

namespace layertune {

namespace {

// Bounds-checked little-endian reader: running off the end is "truncated", never a crash.
class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : p_(data), end_(data + size) {}
  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  std::string str() {
    uint32_t n = get<uint32_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(p_), n);
    p_ += n;
    return s;
  }
  // A string of the plan (a name of the model, a tensor, a node, an op; an attribute's text):
  // valid UTF-8 without control characters, whatever the file holds, so that every message
  // quoting it is one printable line. Each byte that breaks that becomes '?'.
  std::string text() {
    std::string raw = str(), out;
    for (size_t i = 0; i < raw.size();) {
      const unsigned char c = raw[i];
      const int len = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 && c >= 0xC2 ? 2 : (c & 0xF0) == 0xE0 ? 3
                      : (c & 0xF8) == 0xF0 && c <= 0xF4 ? 4 : 0;
      bool ok = len > 0 && i + len <= raw.size() && !(len == 1 && (c < 0x20 || c == 0x7F));
      for (int k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(raw[i + k]) & 0xC0) == 0x80;
      if (ok && len >= 3) {  // no overlong forms, surrogates or code points past U+10FFFF
        const unsigned char d = raw[i + 1];
        ok = !(c == 0xE0 && d < 0xA0) && !(c == 0xED && d >= 0xA0) && !(c == 0xF0 && d < 0x90) &&
             !(c == 0xF4 && d >= 0x90);
      }
      if (ok) {
        out.append(raw, i, len);
        i += len;
      } else {
        out += '?';
        ++i;
      }
    }
    return out;
  }
  uint32_t count(size_t min_item_bytes) {  // an element count that cannot exceed the data left
    uint32_t n = get<uint32_t>();
    if (min_item_bytes && uint64_t(n) * min_item_bytes > uint64_t(end_ - p_)) fail("plan is truncated or corrupt (count ", n, ")");
    return n;
  }

 private:
  void need(size_t n) const {
    if (size_t(end_ - p_) < n) fail("plan is truncated");
  }
  const uint8_t* p_;
  const uint8_t* end_;
};

}  // namespace

std::string PlanNode::where() const { return cat("node '", name, "' (", op, ")"); }

const PlanAttr& find_attr(const PlanNode& n, const std::string& key, PlanAttr::Kind kind) {
  auto it = n.attrs.find(key);
  if (it == n.attrs.end()) fail(n.where(), ": missing attribute '", key, "'");
  if (it->second.kind != kind) fail(n.where(), ": attribute '", key, "' has the wrong type");
  return it->second;
}

std::vector<int64_t> PlanNode::ints(const std::string& key) const { return find_attr(*this, key, PlanAttr::kInts).ints; }
std::vector<float> PlanNode::floats(const std::string& key) const { return find_attr(*this, key, PlanAttr::kFloats).floats; }

int64_t PlanNode::int_attr(const std::string& key) const {
  const auto& v = find_attr(*this, key, PlanAttr::kInts).ints;
  if (v.size() != 1) fail(where(), ": attribute '", key, "' must hold one integer");
  return v[0];
}
int64_t PlanNode::int_attr(const std::string& key, int64_t fallback) const {
  return has(key) ? int_attr(key) : fallback;
}
float PlanNode::float_attr(const std::string& key, float fallback) const {
  if (!has(key)) return fallback;
  const auto& v = find_attr(*this, key, PlanAttr::kFloats).floats;
  if (v.size() != 1) fail(where(), ": attribute '", key, "' must hold one number");
  return v[0];
}
std::string PlanNode::str(const std::string& key, const std::string& fallback) const {
  return has(key) ? find_attr(*this, key, PlanAttr::kString).str : fallback;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kInt8: return "int8";
    case DType::kInt32: return "int32";
  }
  return "?";
}

namespace {

// The plan from `head` (the file's first head_size bytes: at least its header and metadata when
// the file is whole) of a file of `size` bytes; each constant's bytes are read by
// read_blob(file offset, bytes, destination).
template <class ReadBlob>
Plan parse(const uint8_t* data, size_t head_size, size_t size, ReadBlob&& read_blob) {
  if (size < 8 || head_size < 8 || std::memcmp(data, kPlanMagic, 8) != 0) fail("not a layertune plan (wrong magic number)");
  Reader header(data + 8, head_size - 8);
  Plan plan;
  plan.version = header.get<uint32_t>();
  if (plan.version > kPlanVersion)
    fail("plan format version ", plan.version, " is newer than this build of layertune reads (", kPlanVersion,
         "): upgrade layertune");
  if (plan.version == 0) fail("plan format version 0 is invalid");
  header.get<uint32_t>();
  const uint64_t file_size = header.get<uint64_t>();
  const uint64_t meta_offset = header.get<uint64_t>(), meta_size = header.get<uint64_t>();
  const uint64_t blob_offset = header.get<uint64_t>(), blob_size = header.get<uint64_t>();
  if (file_size != size) fail("plan is truncated (", size, " of ", file_size, " bytes)");
  if (meta_offset > size || meta_size > size - meta_offset || blob_offset > size || blob_size > size - blob_offset ||
      meta_offset + meta_size > head_size)
    fail("plan is corrupt (sections out of range)");

  Reader r(data + meta_offset, meta_size);
  plan.name = r.text();
  const uint32_t n_tensors = r.count(25);
  plan.tensors.resize(n_tensors);
  for (auto& t : plan.tensors) {
    t.name = r.text();
    const uint32_t rank = r.count(4);
    if (rank > 8) fail("plan: tensor '", t.name, "' has rank ", rank, " (at most 8)");
    int64_t elements = 1;
    for (uint32_t i = 0; i < rank; ++i) {
      int d = r.get<int32_t>();
      if (d < 0) fail("plan: tensor '", t.name, "' has a negative dimension");
      // Every tensor has fewer than 2^31 elements (as the kernels require): checked as the
      // dimensions come, so that no product overflows.
      elements *= d;
      if (elements >= (int64_t(1) << 31)) fail("plan: tensor '", t.name, "' is too large (2^31 elements or more)");
      t.shape.push_back(d);
    }
    t.constant = r.get<uint8_t>() != 0;
    t.offset = r.get<uint64_t>();
    t.nbytes = r.get<uint64_t>();
    if (plan.version >= 2) {
      const uint8_t dtype = r.get<uint8_t>();
      if (dtype > uint8_t(DType::kInt32)) fail("plan: tensor '", t.name, "' has unknown dtype ", int(dtype));
      t.dtype = DType(dtype);
      t.quant_dtype = r.text();
      for (uint32_t i = 0, c = r.count(4); i < c; ++i) t.scales.push_back(r.get<float>());
      for (uint32_t i = 0, c = r.count(4); i < c; ++i) t.zero_points.push_back(r.get<int32_t>());
      t.quant_axis = r.get<int32_t>();
      if (t.dtype != DType::kFloat32 && (t.scales.empty() || t.scales.size() != t.zero_points.size()))
        fail("plan: ", dtype_name(t.dtype), " tensor '", t.name, "' has no quantization (scales and zero points)");
    }
    if (t.constant && (t.offset % 64 != 0 || t.offset > blob_size || t.nbytes > blob_size - t.offset ||
                       t.nbytes != uint64_t(t.bytes())))
      fail("plan: constant tensor '", t.name, "' lies outside the weight blob");
  }
  auto tensor_id = [&](int32_t id, bool optional) {
    if (optional && id == -1) return id;
    if (id < 0 || uint32_t(id) >= n_tensors) fail("plan: tensor index ", id, " out of range");
    return id;
  };
  const uint32_t n_nodes = r.count(20);
  plan.nodes.resize(n_nodes);
  for (auto& n : plan.nodes) {
    n.op = r.text();
    n.name = r.text();
    for (uint32_t i = 0, c = r.count(4); i < c; ++i) n.inputs.push_back(tensor_id(r.get<int32_t>(), true));
    for (uint32_t i = 0, c = r.count(4); i < c; ++i) n.outputs.push_back(tensor_id(r.get<int32_t>(), false));
    for (uint32_t i = 0, c = r.count(9); i < c; ++i) {
      std::string key = r.text();
      PlanAttr a;
      const uint8_t kind = r.get<uint8_t>();
      if (kind == PlanAttr::kInts) {
        a.kind = PlanAttr::kInts;
        for (uint32_t j = 0, m = r.count(8); j < m; ++j) a.ints.push_back(r.get<int64_t>());
      } else if (kind == PlanAttr::kFloats) {
        a.kind = PlanAttr::kFloats;
        for (uint32_t j = 0, m = r.count(4); j < m; ++j) a.floats.push_back(r.get<float>());
      } else if (kind == PlanAttr::kString) {
        a.kind = PlanAttr::kString;
        a.str = r.text();
      } else {
        fail("plan: ", n.where(), " has an attribute of unknown kind ", int(kind));
      }
      n.attrs.emplace(std::move(key), std::move(a));
    }
  }
  for (uint32_t i = 0, c = r.count(4); i < c; ++i) plan.inputs.push_back(tensor_id(r.get<int32_t>(), false));
  for (uint32_t i = 0, c = r.count(4); i < c; ++i) plan.outputs.push_back(tensor_id(r.get<int32_t>(), false));

  plan.constants.resize(n_tensors);
  for (uint32_t i = 0; i < n_tensors; ++i) {
    const PlanTensor& t = plan.tensors[i];
    if (!t.constant) continue;
    plan.constants[i].resize((t.nbytes + 3) / 4);
    if (t.nbytes) read_blob(blob_offset + t.offset, t.nbytes, plan.constants[i].data());
  }
  return plan;
}

}  // namespace

Plan parse_plan(const uint8_t* data, size_t size) {
  return parse(data, size, size, [&](uint64_t at, uint64_t n, float* dst) { std::memcpy(dst, data + at, n); });
}

Plan load_plan(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) fail(path, ": cannot open the plan file");
  const size_t size = size_t(f.tellg());
  try {
    // The header, then everything before the end of the metadata it names.
    std::vector<uint8_t> head(std::min<size_t>(size, 56));
    f.seekg(0);
    f.read(reinterpret_cast<char*>(head.data()), std::streamsize(head.size()));
    if (head.size() == 56 && std::memcmp(head.data(), kPlanMagic, 8) == 0) {
      uint64_t meta_offset, meta_size;
      std::memcpy(&meta_offset, head.data() + 24, 8);
      std::memcpy(&meta_size, head.data() + 32, 8);
      if (meta_offset <= size && meta_size <= size - meta_offset && meta_offset + meta_size > head.size()) {
        head.resize(size_t(meta_offset + meta_size));
        f.seekg(0);
        f.read(reinterpret_cast<char*>(head.data()), std::streamsize(head.size()));
      }
    }
    if (!f) fail("cannot read the plan file");
    return parse(head.data(), head.size(), size, [&](uint64_t at, uint64_t n, float* dst) {
      f.seekg(std::streamoff(at));
      if (!f.read(reinterpret_cast<char*>(dst), std::streamsize(n))) fail("cannot read the plan file's weights");
    });
  } catch (const InvalidArgument& e) {
    fail(path, ": ", e.what());
  }
}

}  // namespace layertune
