#include "fuzz_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace gad::fuzz {
namespace {

// The folder lives for the whole process (libFuzzer runs every input in one process); it is
// removed when the process exits normally.
struct TempFolder {
  std::string path;
  TempFolder() {
    // Memory-backed when the system has it: a disk-backed /tmp makes file-reading targets ~50x slower.
    std::error_code ec;
    const std::filesystem::path base =
        std::filesystem::is_directory("/dev/shm", ec) ? std::filesystem::path("/dev/shm") : std::filesystem::temp_directory_path();
    std::string pattern = (base / "gad-fuzz-XXXXXX").string();
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("cannot create a temporary folder");
    path = pattern;
  }
  ~TempFolder() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

std::string write_input_file(const uint8_t* data, size_t size, const std::string& name) {
  static TempFolder folder;
  const std::string path = folder.path + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
  return path;
}

std::vector<std::string> split_parts(const uint8_t* data, size_t size, size_t max_parts) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const std::string sep = kPartSeparator;
  std::vector<std::string> parts;
  size_t start = 0;
  while (parts.size() + 1 < max_parts) {
    const size_t at = text.find(sep, start);
    if (at == std::string::npos) break;
    parts.push_back(text.substr(start, at - start));
    start = at + sep.size();
  }
  parts.push_back(text.substr(start));
  return parts;
}

void note(const std::exception& e) {
  static const bool verbose = std::getenv("GAD_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "error: %s\n", e.what());
}

}  // namespace gad::fuzz
