// fail() — how the library throws gad::Error, the one exception type for bad input.
//
// Every message is a single line that names the file (or option) and the problem, so the CLI can
// print it verbatim and exit non-zero. Internal invariants use assert/TORCH_CHECK instead.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include <gad/gad.hpp>

namespace gad {

// gad::Error and gad::ErrorKind are public (<gad/gad.hpp>): programs catch them.

// Builds a message from streamable parts: fail("file.png: ", "cannot decode"). The kind is
// InvalidArgument; fail_as names another one.
template <typename... Parts>
[[noreturn]] void fail_as(ErrorKind kind, Parts&&... parts) {
  std::ostringstream out;
  (out << ... << std::forward<Parts>(parts));
  throw Error(out.str(), kind);
}

template <typename... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  fail_as(ErrorKind::InvalidArgument, std::forward<Parts>(parts)...);
}

// Runs `body`; a gad::Error of the default kind (InvalidArgument) it throws is re-thrown as
// `kind`. Parsers use it with CorruptFile: whatever is wrong inside a file is the file's fault.
template <typename F>
auto with_error_kind(ErrorKind kind, F&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::InvalidArgument) throw;
    throw Error(e.what(), kind);
  }
}

}  // namespace gad
