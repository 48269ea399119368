// Errors that the core reports to its callers.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace layertune {

// Bad input from a caller: a shape, a parameter, a method that does not apply to a layer.
// The Python binding turns it into ValueError; the profiler prints it as one line.
class InvalidArgument : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Concatenates its arguments with operator<< (message building without a format library).
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

template <class... Args>
[[noreturn]] void fail(const Args&... args) {
  throw InvalidArgument(cat(args...));
}

}  // namespace layertune
