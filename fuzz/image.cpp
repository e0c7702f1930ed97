// Image decoding as gad does it: the header probe that enforces --max-pixels before any pixel
// buffer exists, then OpenCV's decoders (PNG, JPEG, BMP, TIFF, PNM, WebP; 16-bit, palette,
// alpha) with gad's channel and depth handling. The cap here is 4 MP, so an input that makes the
// decoder allocate past it (and past -rss_limit_mb) is a finding.
#include <cstdlib>

#include "fuzz_support.h"
#include "image/header.h"
#include "image/image.h"
#include "util/error.h"

namespace {
constexpr int64_t kMaxPixels = 4'000'000;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (auto h = gad::probe_image_header(data, size)) (void)h->pixels();
  try {
    gad::Image img = gad::decode_image_bytes(data, size, "upload", kMaxPixels);
    const size_t expected = static_cast<size_t>(img.width) * img.height * img.channels;
    if (img.width <= 0 || img.height <= 0 || static_cast<int64_t>(img.width) * img.height > kMaxPixels ||
        (img.channels != 1 && img.channels != 3 && img.channels != 4) || img.pixels.size() != expected)
      std::abort();  // the decoder broke its own contract (or the pixel cap)
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  return 0;
}
