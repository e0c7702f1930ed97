// Verified downloads over HTTP(S) with libcurl: a file appears at its destination only complete
// and with the expected sha256.
//
// The body is streamed into a temporary file next to the destination while it is hashed; the
// temporary is renamed over the destination only after the transfer completed (HTTP status < 400,
// every byte the server announced) and the hash matched. Any failure removes the temporary and
// throws one gad::Error line naming the URL and the cause (cannot resolve/connect, HTTP status,
// transfer cut short, stalled, hash mismatch), so no partial or unverified file is ever left.
#pragma once

#include <string>

namespace gad {

struct DownloadOptions {
  // Expected sha256 in hex: all 64 digits, or a prefix of at least 8 (OpenCLIP's release files
  // carry the first 8 digits in their names and are checked that way).
  // Empty only for catalog files whose publisher gives no checksum (see engine/catalog.h).
  std::string sha256;
  bool progress = false;     // draw a bytes/ETA bar on stderr
  long connect_timeout_s = 30;
  long stall_timeout_s = 60;  // abort when under 1 byte/s for this long
};

// Downloads `url` to `path`; returns the file's full sha256.
std::string download_file(const std::string& url, const std::string& path, const DownloadOptions& options);

// Whether `hex` (a full sha256) matches `expected` (full or a prefix, case-insensitive). Throws
// gad::Error when `expected` is not 8..64 hex digits.
bool sha256_matches(const std::string& hex, const std::string& expected);

}  // namespace gad
