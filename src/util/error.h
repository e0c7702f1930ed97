// gad::Error — the one exception type the engine throws for bad input.
//
// Every message is a single line that names the file (or option) and the problem, so the CLI can
// print it verbatim and exit non-zero. Internal invariants use assert/TORCH_CHECK instead.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace gad {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Builds a message from streamable parts: fail("file.png: ", "cannot decode").
template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  throw Error(out.str());
}

}  // namespace gad
