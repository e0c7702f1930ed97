// Small file helpers: whole-file reads and all-or-nothing writes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gad {

// Reads a whole file; throws gad::Error naming the path when it cannot.
std::vector<uint8_t> read_file_bytes(const std::string& path);
std::string read_file_text(const std::string& path);

// Writes `path` atomically: `write` fills a temporary file next to it, which is renamed over
// `path` only when `write` returns normally. On any failure the temporary is removed, so no
// partial output is ever left behind.
void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& write);

// Hex sha256 of a byte range (used for file hashes in metadata and fetch checks).
std::string sha256_hex(const uint8_t* data, size_t size);

// Hex sha256 of a file's bytes, read in chunks; throws gad::Error naming the path.
std::string file_sha256(const std::string& path);

// Incremental sha256, for hashing many pieces.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  std::string hex();  // finishes the hash

 private:
  void* ctx_;
};

}  // namespace gad
