// layertune-profiler: the on-device half of layertune; no Python, so it cross-compiles for ARM.
//
//   layertune-profiler run --plan FILE [--threads N] [--warmup W] [--repeats R] [--seed S]
//       [--check N] [--layers 0|1] [--tolerance REL] [--reference FILE] [--kernels I=method[,k=v...];...]
//   layertune-profiler job --file JOB | --text JOB_TEXT [--warmup W] [--rounds N] [--repeats R] [--seed S]
//       [--tolerance REL] [--flush-bytes N] [--memory-mib M]
//   layertune-profiler compare --plans A,B,... [--threads T | TA,TB,...] [--warmup W] [--rounds N]
//       [--repeats R] [--seed S] [--layers 0|1] [--first-round K]
//   layertune-profiler infer --plan FILE --inputs IN.f32 --count N --outputs OUT.f32 [--threads N] [--warmup W]
//   layertune-profiler info
//   layertune-profiler methods      (the method table as JSON)
//   layertune-profiler peak [--threads N] [--seconds S]
//   layertune-profiler conv --input NxHxWxC --filters K --kernel KHxKW [--stride SHxSW]
//       [--dilation DHxDW] [--padding same|valid|T,B,L,R] [--groups G] [--activation A] [--epilogue E]
//       --method M [--threads N] [--param name=value ...] [--warmup W] [--repeats R]
//       [--seed S] [--tolerance REL]
//
// `job` times many (layer, variant) pairs from a job file, one JSON line per pair as it is
// measured (flushed, so a runner can stream them). A layer's first variant is its baseline: the
// others are timed in interleaved rounds with it, and each line carries both round series
// (`rounds_ms`, `baseline_rounds_ms`) for the host's ratio statistics. `compare` does the same
// for whole plans. The lines:
//   L <layer key> n h w c out_c kh kw sh sw dh dw pad_t pad_b pad_l pad_r groups activation [float32|int8 [tflite|xnnpack]]
// (an int8 layer: seeded int8 data, requantized in the arithmetic named (tflite when none),
// its variants checked exactly against int8_reference)
//   V <layer key> <variant key> <method> [name=value ...]
// --flush-bytes N writes N bytes before every timed run, so that weights are as cold as inside
// a whole model. An invalid variant or a wrong answer is a record with "error", never a stop.
// Each other command prints one JSON line. `run` times a whole plan on seeded random inputs; --check N
// also runs it on N seeded inputs (the first the timed one) with every convolution on the reference
// kernel too and reports the largest difference and output (with --reference FILE, the reference
// outputs are read from FILE when it exists, else saved there);
// --kernels replaces the kernel choice of the nodes it names (by index) first;
// --layers 1 adds each node's median time. `conv` times one variant of one layer (inputs and weights
// are seeded random values), checks its output against the reference kernel, and reports
// median / min / mean / std milliseconds. `infer` runs a plan on N given samples (IN.f32: each
// sample's inputs in order, raw float32), writes each sample's first output to OUT.f32 and prints
// each run's time, and every 50 ms the CPU busy share over that window and the resident memory:
// what a search trial measures on a device. Bad arguments: one line on stderr, exit code 2.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <map>
#include <sstream>
#include <thread>
#include <string>
#include <vector>

#include "../kernels/int8/qconv.h"
#include "layertune/aligned_buffer.h"
#include "layertune/conv.h"
#include "layertune/engine.h"
#include "layertune/json.h"
#include "layertune/plan_format.h"
#include "layertune/measure.h"
#include "layertune/simd.h"
#include "layertune/status.h"

using namespace layertune;

namespace {

constexpr const char* kVersion = "0.1.0";

int parse_int(const std::string& flag, const std::string& text) {
  try {
    size_t used = 0;
    int v = std::stoi(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  fail(flag, ": expected an integer, got '", text, "'");
}

std::vector<int> parse_ints(const std::string& flag, const std::string& text, char sep, size_t count) {
  std::vector<int> out;
  size_t start = 0;
  while (true) {
    size_t end = text.find(sep, start);
    out.push_back(parse_int(flag, text.substr(start, end - start)));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (out.size() != count) fail(flag, ": expected ", count, " values separated by '", sep, "', got '", text, "'");
  return out;
}

struct Args {
  std::string command;
  std::map<std::string, std::string> flags;
  std::vector<std::string> params;  // --param name=value (repeatable)

  std::string get(const std::string& name, const std::string& fallback) const {
    auto it = flags.find(name);
    return it == flags.end() ? fallback : it->second;
  }
  std::string require(const std::string& name) const {
    auto it = flags.find(name);
    if (it == flags.end()) fail("--", name, " is required for '", command, "'");
    return it->second;
  }
};

Args parse_args(int argc, char** argv, const std::map<std::string, std::vector<std::string>>& allowed) {
  if (argc < 2) fail("missing command (expected one of: info, methods, peak, conv, run, job, compare, infer)");
  Args a;
  a.command = argv[1];
  auto cmd = allowed.find(a.command);
  if (cmd == allowed.end()) fail("unknown command '", a.command, "' (expected one of: info, methods, peak, conv, run, job, compare, infer)");
  for (int i = 2; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag.rfind("--", 0) != 0) fail("unexpected argument '", flag, "'");
    flag = flag.substr(2);
    bool known = false;
    for (const auto& f : cmd->second) known |= f == flag;
    if (!known) fail("--", flag, ": not an option of '", a.command, "'");
    if (i + 1 >= argc) fail("--", flag, ": missing value");
    if (flag == "param") a.params.push_back(argv[++i]);
    else a.flags[flag] = argv[++i];
  }
  return a;
}

// The lines of /proc/cpuinfo that name the processor (joined with "; "), for the target check.
std::string cpuinfo_summary() {
  std::ifstream f("/proc/cpuinfo");
  std::string line, out;
  std::map<std::string, bool> seen;
  while (std::getline(f, line)) {
    for (const char* key : {"model name", "Hardware", "Processor", "CPU architecture", "CPU part", "Model", "isa"}) {
      if (line.rfind(key, 0) == 0 && !seen[line]) {
        seen[line] = true;
        out += (out.empty() ? "" : "; ") + line;
      }
    }
  }
  for (auto& ch : out)
    if (ch == '\t') ch = ' ';
  return out;
}

// The architecture this binary was built for, as Python's platform.machine() starts on it (so that
// the host can tell whether a device's Python runs natively beside the profiler, or on an emulator).
constexpr const char* kArch =
#if defined(__aarch64__)
    "aarch64";
#elif defined(__arm__)
    "arm";
#elif defined(__x86_64__)
    "x86_64";
#else
    "unknown";
#endif

int cmd_info() {
  std::printf("{\"version\": %s, \"arch\": %s, \"isa\": %s, \"simd_lanes\": %d, \"int8_isa\": %s, \"cores\": %u, "
              "\"unavailable_methods\": %s, \"cpuinfo\": %s}\n",
              json_string(kVersion).c_str(), json_string(kArch).c_str(), json_string(simd::isa_name()).c_str(), simd::kLanes,
              json_string(int8::qgemm_isa()).c_str(), std::max(1u, std::thread::hardware_concurrency()),
              unavailable_methods_json().c_str(), json_string(cpuinfo_summary()).c_str());
  return 0;
}

// The method table as JSON: what this build of the profiler can run, and with which parameters.
int cmd_methods() {
  std::printf("%s\n", methods_json().c_str());
  return 0;
}

int cmd_peak(const Args& a) {
  const int threads = parse_int("--threads", a.get("threads", "1"));
  const double seconds = std::stod(a.get("seconds", "0.5"));
  std::printf("{\"peak_gflops\": %s, \"threads\": %d, \"isa\": %s}\n",
              json_number(measure_peak_gflops(threads, seconds)).c_str(), threads, json_string(simd::isa_name()).c_str());
  return 0;
}

int cmd_conv(const Args& a) {
  auto in = parse_ints("--input", a.require("input"), 'x', 4);
  auto k = parse_ints("--kernel", a.require("kernel"), 'x', 2);
  auto st = parse_ints("--stride", a.get("stride", "1x1"), 'x', 2);
  auto dil = parse_ints("--dilation", a.get("dilation", "1x1"), 'x', 2);
  ConvShape::Fields f = {in[0], in[1], in[2], in[3], parse_int("--filters", a.require("filters")), k[0], k[1],
                         st[0], st[1], dil[0], dil[1], 0, 0, 0, 0, parse_int("--groups", a.get("groups", "1"))};
  std::string padding = a.get("padding", "same");
  if (padding.find(',') != std::string::npos) {
    auto p = parse_ints("--padding", padding, ',', 4);
    std::copy(p.begin(), p.end(), f.begin() + 11);
    padding.clear();
  }
  const ConvShape s = ConvShape::from_fields(f, parse_activation(a.get("activation", "none")), padding);

  MethodParams p;
  p.method = find_method(a.require("method")).name;
  if (a.flags.count("threads")) p.set("threads", parse_int("--threads", a.flags.at("threads")));
  for (const auto& kv : a.params) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) fail("--param: expected name=value, got '", kv, "'");
    p.set(kv.substr(0, eq), parse_int("--param " + kv.substr(0, eq), kv.substr(eq + 1)));
  }
  const int warmup = parse_int("--warmup", a.get("warmup", "2"));
  const int repeats = parse_int("--repeats", a.get("repeats", "10"));
  if (warmup < 0 || repeats < 1) fail("--warmup must be >= 0 and --repeats >= 1");
  const uint32_t seed = uint32_t(parse_int("--seed", a.get("seed", "0")));
  const double tolerance = std::stod(a.get("tolerance", "1e-3"));

  AlignedBuffer input(s.input_size()), weights(s.weight_size()), bias(s.out_c);
  fill_uniform(input.data(), input.size(), seed, -1.f, 1.f);
  fill_uniform(weights.data(), weights.size(), seed + 1, -1.f, 1.f);
  fill_uniform(bias.data(), bias.size(), seed + 2, -1.f, 1.f);
  AlignedBuffer out(s.output_size()), ref(s.output_size());
  const PostOps post = parse_post_ops(a.get("epilogue", ""));
  AlignedBuffer residual(post_ops_need_residual(post) ? s.output_size() : 0);
  fill_uniform(residual.data(), residual.size(), seed + 3, -1.f, 1.f);
  const float* res = residual.size() ? residual.data() : nullptr;

  MethodParams ref_params;
  ref_params.method = "reference";
  ref_params.threads = p.threads;
  auto reference = make_conv_kernel(s, ref_params, weights.data(), bias.data());
  reference->set_post_ops(post);
  reference->run(input.data(), ref.data(), res);
  auto kernel = make_conv_kernel(s, p, weights.data(), bias.data());
  kernel->set_post_ops(post);
  TimingStats t = summarize(time_repeated([&] { kernel->run(input.data(), out.data(), res); }, warmup, repeats));
  Comparison c = compare(out.data(), ref.data(), out.size());
  const bool ok = c.within(tolerance);
  const double ms = 1e3;
  std::printf(
      "{\"layer\": %s, \"flops\": %lld, \"variant\": %s, \"method\": %s, \"threads\": %d, "
      "\"median_ms\": %s, \"min_ms\": %s, \"mean_ms\": %s, \"std_ms\": %s, \"repeats\": %d, "
      "\"max_abs_diff\": %s, \"max_abs_ref\": %s, \"error\": %s}\n",
      json_string(s.describe()).c_str(), static_cast<long long>(s.flops()), json_string(p.describe()).c_str(),
      json_string(p.method).c_str(), p.threads, json_number(t.median * ms).c_str(),
      json_number(t.min * ms).c_str(), json_number(t.mean * ms).c_str(), json_number(t.std * ms).c_str(), t.repeats,
      json_number(c.max_abs_diff).c_str(), json_number(c.max_abs_ref).c_str(),
      ok ? "null" : json_string("wrong-answer").c_str());
  return ok ? 0 : 3;
}

// Peak resident memory of this process. VmHWM belongs to the address space that exec created;
// ru_maxrss is kept across fork + exec (a profiler started from a big parent would report the
// parent's peak), so it is only the fallback.
long long peak_rss_bytes() {
  if (FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    long long kib = -1;
    while (std::fgets(line, sizeof line, f))
      if (std::sscanf(line, "VmHWM: %lld kB", &kib) == 1) break;
    std::fclose(f);
    if (kib >= 0) return kib * 1024;
  }
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<long long>(usage.ru_maxrss) * 1024;  // Linux reports KiB
}

std::string json_doubles(const std::vector<double>& v, double scale) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + json_number(v[i] * scale);
  return s + "]";
}

// A plan's inputs (seeded random values, the same for every plan of a model) and outputs.
struct PlanIO {
  std::vector<AlignedBuffer> inputs, outputs;
  std::vector<Engine::Input> in;  // real values: the engine quantizes an int8 input's as QUANTIZE does
  std::vector<float*> out;

  PlanIO(const Plan& plan, uint32_t seed) {
    for (size_t i = 0; i < plan.inputs.size(); ++i) {
      inputs.emplace_back(plan.tensors[plan.inputs[i]].elements());
      fill_uniform(inputs.back().data(), inputs.back().size(), seed + uint32_t(i), -1.f, 1.f);
    }
    for (int o : plan.outputs) outputs.emplace_back(plan.tensors[o].elements());
    for (auto& b : inputs) in.push_back(b.data());
    for (auto& b : outputs) out.push_back(b.data());
  }
};

// --reference FILE: the reference outputs of `run --check N` (seeded inputs), kept between runs of
// plans of one model so that the slow reference kernels run once (the tuner's output-error gate
// checks several plans of a model in turn). The file is each input's outputs as raw float32, in order.
bool read_reference(const std::string& path, std::vector<AlignedBuffer>& outputs) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) return false;
  size_t total = 0;
  for (auto& o : outputs) total += o.size() * sizeof(float);
  if (size_t(f.tellg()) != total) fail("--reference ", path, ": ", size_t(f.tellg()), " bytes, the plan's outputs are ", total);
  f.seekg(0);
  for (auto& o : outputs) f.read(reinterpret_cast<char*>(o.data()), std::streamsize(o.size() * sizeof(float)));
  return bool(f);
}

void write_reference(const std::string& path, const std::vector<AlignedBuffer>& outputs) {
  const std::string partial = path + ".partial";  // renamed when whole: a killed run leaves no short file
  {
    std::ofstream f(partial, std::ios::binary);
    for (auto& o : outputs) f.write(reinterpret_cast<const char*>(o.data()), std::streamsize(o.size() * sizeof(float)));
    if (!f) fail("--reference ", path, ": cannot write");
  }
  if (std::rename(partial.c_str(), path.c_str()) != 0) fail("--reference ", path, ": cannot write");
}

std::vector<std::string> split(const std::string& text, char sep);

// --kernels "I=method[,name=value...][;...]": node I's kernel replaced before the engine is built,
// so that the output-error gate checks many kernel choices of one uploaded plan (tuner/accuracy.py).
void override_kernels(Plan& plan, const std::string& spec) {
  for (const std::string& item : split(spec, ';')) {
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    if (eq == std::string::npos) fail("--kernels: expected I=method[,name=value...], got '", item, "'");
    const int index = parse_int("--kernels", item.substr(0, eq));
    if (index < 0 || size_t(index) >= plan.nodes.size())
      fail("--kernels: node ", index, " is out of range (the plan has ", plan.nodes.size(), ")");
    PlanNode& node = plan.nodes[size_t(index)];
    if (!node.has("kernel.method")) fail("--kernels: ", node.where(), " has no kernel choice");
    for (auto it = node.attrs.begin(); it != node.attrs.end();)
      it = it->first.rfind("kernel.", 0) == 0 ? node.attrs.erase(it) : std::next(it);
    const std::vector<std::string> fields = split(item.substr(eq + 1), ',');
    PlanAttr method;
    method.kind = PlanAttr::kString;
    method.str = fields.empty() ? "" : fields[0];
    node.attrs["kernel.method"] = method;
    for (size_t i = 1; i < fields.size(); ++i) {
      const size_t at = fields[i].find('=');
      if (at == std::string::npos) fail("--kernels: expected name=value, got '", fields[i], "'");
      PlanAttr value;
      value.ints = {parse_int("--kernels", fields[i].substr(at + 1))};
      node.attrs["kernel." + fields[i].substr(0, at)] = value;
    }
  }
}

int cmd_run(const Args& a) {
  const std::string path = a.require("plan");
  const int threads = parse_int("--threads", a.get("threads", "1"));
  const int warmup = parse_int("--warmup", a.get("warmup", "2"));
  const int repeats = parse_int("--repeats", a.get("repeats", "10"));
  if (threads < 1 || warmup < 0 || repeats < 1) fail("--threads and --repeats must be >= 1, --warmup >= 0");
  const uint32_t seed = uint32_t(parse_int("--seed", a.get("seed", "0")));
  const int check = parse_int("--check", a.get("check", "0"));  // seeded inputs checked
  if (check < 0) fail("--check must be >= 0, got ", check);
  const bool layers = parse_int("--layers", a.get("layers", "0")) != 0;
  const double tolerance = std::stod(a.get("tolerance", "1e-3"));

  Plan loaded = load_plan(path);
  override_kernels(loaded, a.get("kernels", ""));
  Engine engine(std::move(loaded), threads);
  const Plan& plan = engine.plan();
  PlanIO io(plan, seed);
  const auto& in = io.in;
  const auto& out = io.out;
  TimingStats t = summarize(time_repeated([&] { engine.run(in, out); }, warmup, repeats));
  std::string extra;
  if (layers) {
    std::vector<std::vector<double>> per_node(plan.nodes.size());
    for (int r = 0; r < repeats; ++r) {
      auto s = engine.run_profiled(in, out);
      for (size_t i = 0; i < s.size(); ++i) per_node[i].push_back(s[i]);
    }
    std::vector<double> medians;
    for (auto& v : per_node) medians.push_back(summarize(v).median);
    extra += ", \"layer_median_ms\": " + json_doubles(medians, 1e3);
  }
  bool ok = true;
  if (check) {
    // input k's seed: far from the inputs' own offsets (seed + tensor index)
    std::vector<PlanIO> checked;
    checked.reserve(size_t(check));  // each keeps pointers into its own buffers
    for (int k = 0; k < check; ++k) checked.emplace_back(plan, seed + 1000u * uint32_t(k));
    std::vector<AlignedBuffer> ref_out;
    std::vector<float*> ref_ptrs;
    for (int k = 0; k < check; ++k)
      for (int o : plan.outputs) {
        ref_out.emplace_back(plan.tensors[o].elements());
        ref_ptrs.push_back(ref_out.back().data());
      }
    const size_t outputs = plan.outputs.size();
    const std::string saved = a.get("reference", "");
    if (saved.empty() || !read_reference(saved, ref_out)) {
      Engine reference(load_plan(path), threads, /*reference_kernels=*/true);
      for (int k = 0; k < check; ++k)
        reference.run(checked[size_t(k)].in, std::vector<float*>(ref_ptrs.begin() + k * outputs, ref_ptrs.begin() + (k + 1) * outputs));
      if (!saved.empty()) write_reference(saved, ref_out);
    }
    Comparison worst;
    for (int k = 0; k < check; ++k) {
      PlanIO& io_k = checked[size_t(k)];
      engine.run(io_k.in, io_k.out);
      for (size_t i = 0; i < outputs; ++i) {
        Comparison c = compare(io_k.out[i], ref_ptrs[k * outputs + i], ref_out[k * outputs + i].size());
        worst.max_abs_diff = std::max(worst.max_abs_diff, c.max_abs_diff);
        worst.max_abs_ref = std::max(worst.max_abs_ref, c.max_abs_ref);
      }
    }
    ok = worst.within(tolerance);
    extra += ", \"max_abs_diff\": " + json_number(worst.max_abs_diff) + ", \"max_abs_ref\": " + json_number(worst.max_abs_ref);
  }
  std::printf(
      "{\"plan\": %s, \"model\": %s, \"nodes\": %zu, \"threads\": %d, \"median_ms\": %s, \"min_ms\": %s, "
      "\"mean_ms\": %s, \"std_ms\": %s, \"repeats\": %d, \"arena_bytes\": %zu, \"weight_bytes\": %zu, "
      "\"peak_rss_bytes\": %lld%s, \"error\": %s}\n",
      json_string(path).c_str(), json_string(plan.name).c_str(), plan.nodes.size(), threads,
      json_number(t.median * 1e3).c_str(), json_number(t.min * 1e3).c_str(), json_number(t.mean * 1e3).c_str(),
      json_number(t.std * 1e3).c_str(), t.repeats, engine.arena_bytes(), engine.weight_bytes(), peak_rss_bytes(), extra.c_str(),
      ok ? "null" : json_string("wrong-answer").c_str());
  return ok ? 0 : 3;
}

// An error message as one printable line, whatever bad input it quotes.
std::string one_line(std::string message) {
  for (char& ch : message)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7F) ch = '?';
  return message;
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}

// A job's variant line after the keys: <method> [name=value ...].
MethodParams parse_variant(const std::vector<std::string>& words) {
  MethodParams p;
  p.method = find_method(words[0]).name;
  for (size_t i = 1; i < words.size(); ++i) {
    auto eq = words[i].find('=');
    if (eq == std::string::npos) fail("expected name=value, got '", words[i], "'");
    p.set(words[i].substr(0, eq), parse_int(words[i].substr(0, eq), words[i].substr(eq + 1)));
  }
  return p;
}

// One layer of a job, with seeded data: each variant's kernel as a run, its output checked against
// the layer's reference method (float32: within the tolerance; int8: exactly, as the int8 kernels
// compute TFLite's arithmetic bit for bit).
class JobLayer {
 public:
  virtual ~JobLayer() = default;
  // The variant's kernel, prepared, as a run (InvalidArgument when it cannot compute the layer).
  virtual std::function<void()> prepare(const MethodParams& p) = 0;
  // The last run's output against the reference's.
  virtual Comparison check() const = 0;
  virtual bool correct(const Comparison& c, double tolerance) const { return c.within(tolerance); }
};

class FloatJobLayer final : public JobLayer {
 public:
  FloatJobLayer(const ConvShape& s, uint32_t seed, int cores)
      : s_(s), input_(s.input_size()), weights_(s.weight_size()), bias_(s.out_c), out_(s.output_size()),
        ref_(s.output_size()) {
    fill_uniform(input_.data(), input_.size(), seed, -1.f, 1.f);
    fill_uniform(weights_.data(), weights_.size(), seed + 1, -1.f, 1.f);
    fill_uniform(bias_.data(), bias_.size(), seed + 2, -1.f, 1.f);
    MethodParams reference;
    reference.method = "reference";
    reference.threads = cores;
    make_conv_kernel(s, reference, weights_.data(), bias_.data())->run(input_.data(), ref_.data());
  }
  std::function<void()> prepare(const MethodParams& p) override {
    std::shared_ptr<ConvKernel> k = make_conv_kernel(s_, p, weights_.data(), bias_.data());
    return [this, k] { k->run(input_.data(), out_.data()); };
  }
  Comparison check() const override { return compare(out_.data(), ref_.data(), out_.size()); }

 private:
  ConvShape s_;
  AlignedBuffer input_, weights_, bias_, out_, ref_;
};

class Int8JobLayer final : public JobLayer {
 public:
  Int8JobLayer(const ConvShape& s, int8::Requantization requantization, uint32_t seed, int cores)
      : input_(size_t(s.input_size())), out_(size_t(s.output_size())), ref_(size_t(s.output_size())) {
    auto uniform = [](size_t n, uint32_t sd, float lo, float hi) {
      std::vector<float> v(n);
      fill_uniform(v.data(), n, sd, lo, hi);
      return v;
    };
    auto to_int8 = [](float v, int lo) { return int8_t(std::min(std::max(int(std::floor(v)), lo), 127)); };
    q_.shape = s;
    const auto x = uniform(input_.size(), seed, -128.f, 128.f);
    for (size_t i = 0; i < x.size(); ++i) input_[i] = to_int8(x[i], -128);
    const auto w = uniform(size_t(s.weight_size()), seed + 1, -127.f, 128.f);
    for (float v : w) q_.weights.push_back(to_int8(v, -127));
    for (float v : uniform(size_t(s.out_c), seed + 2, -2000.f, 2000.f)) q_.bias.push_back(int32_t(v));
    q_.input_zero_point = 3;
    q_.output_zero_point = -5;
    // Sums of k products of +-127 spread as 127^2 sqrt(k / 9): multipliers that map them onto the
    // int8 range with few outputs clamped, so that an exact comparison says something.
    const double k = double(s.kernel_h) * s.kernel_w * s.in_c_per_group();
    q_.requantization = requantization;
    for (float u : uniform(size_t(s.out_c), seed + 3, 0.5f, 1.5f)) {
      const double real = u * 20.0 / (127.0 * 127.0 * std::sqrt(k / 9.0));
      q_.multipliers.push_back(int8::quantize_multiplier(real));
      q_.scales.push_back(float(real));
    }
    std::tie(q_.out_min, q_.out_max) = int8::activation_bounds(s.activation, 0.05f, q_.output_zero_point);
    MethodParams reference;
    reference.method = "int8_reference";
    int8::make_qconv(q_, reference)->run(input_.data(), ref_.data(), cores);
  }
  std::function<void()> prepare(const MethodParams& p) override {
    std::shared_ptr<int8::QConvKernel> k = int8::make_qconv(q_, p);
    return [this, k, threads = p.threads] { k->run(input_.data(), out_.data(), threads); };
  }
  Comparison check() const override {
    Comparison c;
    for (size_t i = 0; i < out_.size(); ++i) {
      c.max_abs_diff = std::max(c.max_abs_diff, std::abs(double(out_[i]) - double(ref_[i])));
      c.max_abs_ref = std::max(c.max_abs_ref, std::abs(double(ref_[i])));
    }
    return c;
  }
  bool correct(const Comparison& c, double) const override { return c.max_abs_diff == 0; }

 private:
  int8::QuantizedConv q_;
  std::vector<int8_t> input_, out_, ref_;
};

int cmd_job(const Args& a) {
  // The job comes in a file, or inline (--text): a runner saves an upload round trip per job.
  const bool inline_text = a.flags.count("text") != 0;
  const std::string path = inline_text ? std::string("--text") : a.require("file");
  const int warmup = parse_int("--warmup", a.get("warmup", "2"));
  const int repeats = parse_int("--repeats", a.get("repeats", "3"));
  const int rounds = parse_int("--rounds", a.get("rounds", "3"));
  if (warmup < 0 || repeats < 1 || rounds < 1) fail("--warmup must be >= 0, --repeats and --rounds >= 1");
  const uint32_t seed = uint32_t(parse_int("--seed", a.get("seed", "0")));
  const double tolerance = std::stod(a.get("tolerance", "1e-3"));
  const double memory_bytes = std::stod(a.get("memory-mib", "256")) * 1024 * 1024;
  AlignedBuffer flush(size_t(std::stoll(a.get("flush-bytes", "0"))) / sizeof(float));
  std::ifstream file;
  std::istringstream text(inline_text ? a.flags.at("text") : std::string());
  if (!inline_text) {
    file.open(path);
    if (!file) fail(path, ": cannot open the job file");
  }
  std::istream& f = inline_text ? static_cast<std::istream&>(text) : file;

  struct JobLayerSpec {
    ConvShape shape;
    std::string dtype;
    int8::Requantization requantization;
  };
  std::map<std::string, JobLayerSpec> layers;
  std::map<std::string, std::vector<std::pair<std::string, std::vector<std::string>>>> variants;
  std::vector<std::string> order;
  std::string line;
  int line_no = 0;
  while (std::getline(f, line)) {
    ++line_no;
    std::istringstream in(line);
    std::string kind, key;
    if (!(in >> kind) || kind[0] == '#') continue;
    in >> key;
    if (kind == "L") {
      ConvShape::Fields f;
      std::string act;
      for (int& v : f)
        if (!(in >> v)) fail(path, ":", line_no, ": a layer line needs 16 integers and an activation");
      if (!(in >> act)) fail(path, ":", line_no, ": missing activation");
      std::string dtype = "float32", requantization = "tflite";
      in >> dtype;  // optional: the tensors' type, float32 or int8
      if (dtype != "float32" && dtype != "int8") fail(path, ":", line_no, ": dtype must be float32 or int8, got '", dtype, "'");
      if (dtype == "int8") in >> requantization;  // optional: its arithmetic
      int8::Requantization r;
      if (!int8::parse_requantization(requantization, &r))
        fail(path, ":", line_no, ": requantization must be tflite or xnnpack, got '", requantization, "'");
      if (!layers.count(key)) order.push_back(key);
      layers[key] = {ConvShape::from_fields(f, parse_activation(act)), dtype, r};
    } else if (kind == "V") {
      std::string vkey;
      std::vector<std::string> words;
      in >> vkey;
      for (std::string w; in >> w;) words.push_back(w);
      if (words.empty()) fail(path, ":", line_no, ": a variant line needs a method");
      if (!layers.count(key)) fail(path, ":", line_no, ": variant of unknown layer '", key, "'");
      variants[key].push_back({vkey, words});
    } else {
      fail(path, ":", line_no, ": unknown line kind '", kind, "' (expected L or V)");
    }
  }

  const int cores = int(std::max(1u, std::thread::hardware_concurrency()));
  for (const std::string& key : order) {
    const auto& [s, dtype, requantization] = layers[key];
    const std::unique_ptr<JobLayer> data = dtype == "int8" ? std::unique_ptr<JobLayer>(new Int8JobLayer(s, requantization, seed, cores))
                                                           : std::unique_ptr<JobLayer>(new FloatJobLayer(s, seed, cores));
    // The layer's first variant is its baseline: every group of variants is timed interleaved
    // with it (time_interleaved), at most as many at once as `memory-mib` holds (a prepared
    // kernel is assumed to take up to 4x the weights: Winograd F(4x4)'s transformed filters).
    const auto& vs = variants[key];
    if (vs.empty()) continue;
    const size_t per_group = std::max<size_t>(1, size_t(memory_bytes / std::max(1.0, 16.0 * s.weight_size())));
    std::function<void()> baseline;
    std::string baseline_error;
    try {
      baseline = data->prepare(parse_variant(vs[0].second));
    } catch (const InvalidArgument& e) {
      baseline_error = e.what();
    }
    for (size_t g = 0; g < vs.size(); g += per_group) {
      struct Entry {
        std::string vkey, method, error = "null", message;
        int threads = 0;
        std::function<void()> run;
        Comparison c;
      };
      std::vector<Entry> group;
      for (size_t i = g; i < std::min(vs.size(), g + per_group); ++i) {
        Entry e;
        e.vkey = vs[i].first;
        e.method = vs[i].second[0];
        try {
          const MethodParams p = parse_variant(vs[i].second);
          e.threads = p.threads;
          e.run = data->prepare(p);
          e.run();
          e.c = data->check();
          if (!data->correct(e.c, tolerance)) e.error = json_string("wrong-answer");
        } catch (const InvalidArgument& ex) {
          e.error = json_string("invalid");
          e.message = ex.what();
          e.run = nullptr;
        }
        group.push_back(std::move(e));
      }
      std::vector<std::function<void()>> runs;
      if (baseline) runs.push_back(baseline);
      std::vector<Entry*> timed;
      for (auto& e : group)
        if (baseline && e.run && e.error == "null") {
          runs.push_back(e.run);
          timed.push_back(&e);
        }
      const auto flush_caches = [&] {
        volatile float* p = flush.data();
        for (size_t j = 0; j < flush.size(); j += 16) p[j] = p[j] + 1.f;
      };
      const auto series = timed.empty() ? std::vector<std::vector<double>>()
                                        : time_interleaved(runs, warmup, rounds, repeats,
                                                           flush.size() ? std::function<void()>(flush_caches) : nullptr);
      for (auto& e : group) {
        auto it = std::find(timed.begin(), timed.end(), &e);
        std::string rounds_ms = "null", base_ms = "null";
        TimingStats t;
        if (it != timed.end()) {
          const auto& mine = series[1 + (it - timed.begin())];
          t = summarize(mine);
          rounds_ms = json_doubles(mine, 1e3);
          base_ms = json_doubles(series[0], 1e3);
        } else if (e.error == "null") {
          e.error = json_string("invalid");
          e.message = "the layer's baseline variant cannot run: " + baseline_error;
        }
        std::printf(
            "{\"layer\": %s, \"variant\": %s, \"method\": %s, \"threads\": %d, \"median_ms\": %s, \"min_ms\": %s, "
            "\"mean_ms\": %s, \"std_ms\": %s, \"repeats\": %d, \"rounds_ms\": %s, \"baseline\": %s, "
            "\"baseline_rounds_ms\": %s, \"max_abs_diff\": %s, \"max_abs_ref\": %s, \"error\": %s, \"message\": %s}\n",
            json_string(key).c_str(), json_string(e.vkey).c_str(), json_string(e.method).c_str(), e.threads,
            json_number(t.median * 1e3).c_str(), json_number(t.min * 1e3).c_str(), json_number(t.mean * 1e3).c_str(),
            json_number(t.std * 1e3).c_str(), t.repeats * repeats, rounds_ms.c_str(), json_string(vs[0].first).c_str(),
            base_ms.c_str(), json_number(e.c.max_abs_diff).c_str(), json_number(e.c.max_abs_ref).c_str(), e.error.c_str(),
            json_string(e.message).c_str());
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

// Whole plans compared in interleaved rounds on seeded random inputs (the protocol of
// time_interleaved); with --layers 1 each node's median time inside the runs is reported too.
// This process's resident memory now, as a share of the machine's (what psutil's memory_percent
// reports; /proc/self/statm counts pages).
double resident_percent() {
  long long pages = 0, resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%lld %lld", &pages, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  const double total = double(sysconf(_SC_PHYS_PAGES));
  return total > 0 ? 100.0 * double(resident) / total : 0.0;
}

double cpu_seconds() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec + 1e-6 * (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

int cmd_infer(const Args& a) {
  const std::string path = a.require("plan");
  const int threads = parse_int("--threads", a.get("threads", "1"));
  const int warmup = parse_int("--warmup", a.get("warmup", "3"));
  const int count = parse_int("--count", a.require("count"));
  if (threads < 1 || warmup < 0 || count < 1) fail("--threads and --count must be >= 1, --warmup >= 0");
  Engine engine(load_plan(path), threads);
  const Plan& plan = engine.plan();
  PlanIO io(plan, 0);
  size_t per_sample = 0;
  for (auto& b : io.inputs) per_sample += b.size();
  std::ifstream in(a.require("inputs"), std::ios::binary);
  std::vector<float> samples(per_sample * size_t(count));
  if (!in.read(reinterpret_cast<char*>(samples.data()), std::streamsize(samples.size() * sizeof(float))) ||
      in.peek() != std::char_traits<char>::eof())
    fail("--inputs: ", a.require("inputs"), " does not hold exactly ", count, " samples of ", per_sample,
         " float32 values (the plan's inputs)");
  auto load_sample = [&](int i) {
    const float* src = samples.data() + per_sample * size_t(i);
    for (auto& b : io.inputs) {
      std::copy(src, src + b.size(), b.data());
      src += b.size();
    }
  };
  for (int i = 0; i < std::min(warmup, count); ++i) {
    load_sample(i);
    engine.run(io.in, io.out);
  }
  std::ofstream out(a.require("outputs"), std::ios::binary);
  const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
  // CPU and memory every 50 ms (and after the last run), not per run: the system calls between
  // runs were measured to slow the next small run by microseconds.
  using clock = std::chrono::steady_clock;
  std::vector<double> times, cpu, mem, stamps;
  const auto start = clock::now();
  auto window = start;
  double cpu_at = cpu_seconds();
  for (int i = 0; i < count; ++i) {
    load_sample(i);
    const auto t0 = clock::now();
    engine.run(io.in, io.out);
    const auto t1 = clock::now();
    times.push_back(std::chrono::duration<double>(t1 - t0).count());
    out.write(reinterpret_cast<const char*>(io.outputs[0].data()), std::streamsize(io.outputs[0].size() * sizeof(float)));
    const double span = std::chrono::duration<double>(t1 - window).count();
    if (span >= 0.05 || i == count - 1) {
      const double now_cpu = cpu_seconds();
      cpu.push_back(std::min(100.0, std::max(0.0, (now_cpu - cpu_at) / std::max(span, 1e-9) / cores * 100.0)));
      mem.push_back(resident_percent());
      stamps.push_back(std::chrono::duration<double>(t1 - start).count());
      window = clock::now();
      cpu_at = cpu_seconds();
    }
  }
  if (!out.flush()) fail("--outputs: cannot write ", a.require("outputs"));
  std::printf("{\"times_s\": %s, \"cpus_percent_avg\": %s, \"mem_percent\": %s, \"timestamps\": %s, "
              "\"peak_rss_bytes\": %lld}\n",
              json_doubles(times, 1.0).c_str(), json_doubles(cpu, 1.0).c_str(), json_doubles(mem, 1.0).c_str(),
              json_doubles(stamps, 1.0).c_str(), peak_rss_bytes());
  return 0;
}

int cmd_compare(const Args& a) {
  const auto paths = split(a.require("plans"), ',');
  const auto thread_words = split(a.get("threads", "1"), ',');
  if (thread_words.size() != paths.size() && thread_words.size() != 1)
    fail("--threads: one count, or one per plan (", paths.size(), ")");
  const int warmup = parse_int("--warmup", a.get("warmup", "2"));
  const int repeats = parse_int("--repeats", a.get("repeats", "3"));
  const int rounds = parse_int("--rounds", a.get("rounds", "5"));
  if (warmup < 0 || repeats < 1 || rounds < 1) fail("--warmup must be >= 0, --repeats and --rounds >= 1");
  const uint32_t seed = uint32_t(parse_int("--seed", a.get("seed", "0")));
  const bool layers = parse_int("--layers", a.get("layers", "0")) != 0;
  const int first_round = parse_int("--first-round", a.get("first-round", "0"));
  std::vector<std::unique_ptr<Engine>> engines;
  for (size_t i = 0; i < paths.size(); ++i) {
    const int threads = parse_int("--threads", thread_words[thread_words.size() == 1 ? 0 : i]);
    if (threads < 1) fail("--threads must be >= 1");
    engines.push_back(std::make_unique<Engine>(load_plan(paths[i]), threads));
  }
  std::vector<std::unique_ptr<PlanIO>> io;
  std::vector<std::vector<std::vector<double>>> node_times(engines.size());
  std::vector<std::function<void()>> runs;
  for (size_t e = 0; e < engines.size(); ++e) {
    const Plan& plan = engines[e]->plan();
    io.push_back(std::make_unique<PlanIO>(plan, seed));
    node_times[e].resize(plan.nodes.size());
    runs.push_back([&, e] {
      if (!layers) return engines[e]->run(io[e]->in, io[e]->out);
      const auto s = engines[e]->run_profiled(io[e]->in, io[e]->out);
      for (size_t i = 0; i < s.size(); ++i) node_times[e][i].push_back(s[i]);
    });
  }
  const auto series = time_interleaved(runs, warmup, rounds, repeats, {}, first_round);
  std::string plans = "[";
  for (size_t e = 0; e < engines.size(); ++e) {
    std::string extra;
    if (layers) {
      std::vector<double> medians;
      for (auto& v : node_times[e]) medians.push_back(summarize(v).median);
      extra = ", \"layer_median_ms\": " + json_doubles(medians, 1e3);
    }
    plans += cat(e ? ", " : "", "{\"plan\": ", json_string(paths[e]), ", \"threads\": ", engines[e]->threads(),
                 ", \"median_ms\": ", json_number(summarize(series[e]).median * 1e3), ", \"rounds_ms\": ",
                 json_doubles(series[e], 1e3), extra, "}");
  }
  std::printf("{\"plans\": %s], \"rounds\": %d, \"repeats\": %d, \"peak_rss_bytes\": %lld}\n", plans.c_str(), rounds,
              repeats, peak_rss_bytes());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::map<std::string, std::vector<std::string>> allowed = {
      {"info", {}},
      {"methods", {}},
      {"run", {"plan", "threads", "warmup", "repeats", "seed", "check", "layers", "tolerance", "reference", "kernels"}},
      {"job", {"file", "text", "warmup", "repeats", "rounds", "seed", "tolerance", "flush-bytes", "memory-mib"}},
      {"infer", {"plan", "inputs", "count", "outputs", "threads", "warmup"}},
      {"compare", {"plans", "threads", "warmup", "repeats", "rounds", "seed", "layers", "first-round"}},
      {"peak", {"threads", "seconds"}},
      {"conv", {"input", "filters", "kernel", "stride", "dilation", "padding", "groups", "activation", "epilogue", "method",
                "threads", "param", "warmup", "repeats", "seed", "tolerance"}},
  };
  try {
    if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h")) {
      std::printf("usage: layertune-profiler info | methods | peak [--threads N] | conv --input NxHxWxC --filters K "
                  "--kernel KHxKW --method M [options] | run --plan FILE [options] | job --file JOB [options] | compare "
                  "--plans A,B [options] | infer --plan FILE --inputs IN.f32 --count N --outputs OUT.f32 [options]\n");
      return 0;
    }
    if (argc >= 2 && std::string(argv[1]) == "--version") {
      std::printf("layertune-profiler %s\n", kVersion);
      return 0;
    }
    Args a = parse_args(argc, argv, allowed);
    if (a.command == "info") return cmd_info();
    if (a.command == "methods") return cmd_methods();
    if (a.command == "peak") return cmd_peak(a);
    if (a.command == "run") return cmd_run(a);
    if (a.command == "job") return cmd_job(a);
    if (a.command == "compare") return cmd_compare(a);
    if (a.command == "infer") return cmd_infer(a);
    return cmd_conv(a);
  } catch (const InvalidArgument& e) {
    std::fprintf(stderr, "layertune-profiler: error: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "layertune-profiler: error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
