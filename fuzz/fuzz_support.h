// Shared by the fuzz targets: the input as a file (for parsers that read a path, as the product
// does) and one input split into parts (a model.json and its shard, multipart fields, ...).
//
// Every target passes its input to the product's own function and accepts gad::Error (a clear
// error for bad input). Anything else escaping — another exception type, a crash, a sanitizer
// report, a hang past -timeout or memory past -rss_limit_mb / -malloc_limit_mb — is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace gad::fuzz {

// Writes `size` bytes to `name` in this process's own temporary folder (created once, removed at
// exit) and returns the path. The same name is overwritten by the next input.
std::string write_input_file(const uint8_t* data, size_t size, const std::string& name);

// The input cut at every kPartSeparator, at most `max_parts` parts (the last keeps the rest).
constexpr const char* kPartSeparator = "\n--gad-part--\n";
std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t max_parts);

// Prints the error when GAD_FUZZ_VERBOSE is set (to check which seeds load cleanly).
void note(const std::exception& e);

}  // namespace gad::fuzz
