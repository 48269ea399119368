// The two JSON writers the core needs (the profiler's output lines, the method table): no JSON
// library, so the profiler cross-compiles with nothing but a C++ compiler.
#pragma once
#include <cmath>
#include <cstdio>
#include <string>

namespace layertune {

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\', out += ch;
    else if (ch == '\n') out += "\\n";
    else if (static_cast<unsigned char>(ch) < 0x20) out += ' ';
    else out += ch;
  }
  return out + "\"";
}

inline std::string json_number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

}  // namespace layertune
