#include "image/header.h"

#include <cstring>
#include <limits>

namespace gad {
namespace {

// Bounds-checked reads; `ok` turns false on the first read past the end.
struct Reader {
  const uint8_t* d;
  size_t n;
  bool big_endian = false;
  bool ok = true;

  uint64_t uint(size_t at, size_t bytes) {
    if (at > n || bytes > n - at) {
      ok = false;
      return 0;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) {
      const size_t k = big_endian ? i : bytes - 1 - i;
      v = (v << 8) | d[at + k];
    }
    return v;
  }
  bool starts_with(const char* magic, size_t at = 0) const {
    const size_t len = std::strlen(magic);
    return at <= n && len <= n - at && std::memcmp(d + at, magic, len) == 0;
  }
};

std::optional<ImageHeader> header(Reader& r, const char* format, int64_t width, int64_t height) {
  if (!r.ok) return std::nullopt;
  return ImageHeader{format, width, height};
}

std::optional<ImageHeader> probe_png(Reader r) {
  r.big_endian = true;
  if (!r.starts_with("\x89PNG\r\n\x1a\n") || !r.starts_with("IHDR", 12)) return std::nullopt;
  const auto w = static_cast<int64_t>(r.uint(16, 4)), h = static_cast<int64_t>(r.uint(20, 4));
  return header(r, "PNG", w, h);
}

// The first frame header (SOF0..SOF15 except DHT, JPG and DAC); segments are skipped by length.
std::optional<ImageHeader> probe_jpeg(Reader r) {
  r.big_endian = true;
  if (r.n < 3 || r.d[0] != 0xFF || r.d[1] != 0xD8) return std::nullopt;
  size_t i = 2;
  while (i + 1 < r.n) {
    if (r.d[i] != 0xFF) {  // stray byte between segments: skipped, as libjpeg does
      ++i;
      continue;
    }
    const uint8_t m = r.d[i + 1];
    i += 2;
    if (m == 0xFF) {  // fill byte: the marker code follows
      --i;
      continue;
    }
    if (m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no length field
    if (m == 0xD9 || m == 0xDA) return std::nullopt;      // image data before any frame header
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      const auto h = static_cast<int64_t>(r.uint(i + 3, 2)), w = static_cast<int64_t>(r.uint(i + 5, 2));
      return header(r, "JPEG", w, h);
    }
    const size_t length = r.uint(i, 2);
    if (!r.ok || length < 2) return std::nullopt;
    i += length;
  }
  return std::nullopt;
}

std::optional<ImageHeader> probe_bmp(Reader r) {
  if (!r.starts_with("BM")) return std::nullopt;
  const uint64_t info_size = r.uint(14, 4);
  if (info_size == 12) {  // OS/2 BITMAPCOREHEADER: 16-bit sizes
    const auto w = static_cast<int64_t>(r.uint(18, 2)), h = static_cast<int64_t>(r.uint(20, 2));
    return header(r, "BMP", w, h);
  }
  if (info_size < 16) return std::nullopt;
  const auto w = static_cast<int32_t>(r.uint(18, 4)), h = static_cast<int32_t>(r.uint(22, 4));
  // A negative height means top-down rows; a negative width is invalid (reported as 0).
  const int64_t height = h < 0 ? -static_cast<int64_t>(h) : h;
  return header(r, "BMP", w < 0 ? 0 : w, height);
}

// ImageWidth (256) and ImageLength (257) of the first IFD, SHORT or LONG.
std::optional<ImageHeader> probe_tiff(Reader r) {
  if (r.starts_with("MM"))
    r.big_endian = true;
  else if (!r.starts_with("II"))
    return std::nullopt;
  if (r.uint(2, 2) != 42) return std::nullopt;
  const uint64_t ifd = r.uint(4, 4);
  const uint64_t entries = r.uint(ifd, 2);
  int64_t width = -1, height = -1;
  for (uint64_t e = 0; r.ok && e < entries && (width < 0 || height < 0); ++e) {
    const size_t at = ifd + 2 + e * 12;
    const uint64_t tag = r.uint(at, 2), type = r.uint(at + 2, 2);
    if (tag != 256 && tag != 257) continue;
    if (type != 3 && type != 4) return std::nullopt;
    const auto v = static_cast<int64_t>(r.uint(at + 8, type == 3 ? 2 : 4));
    (tag == 256 ? width : height) = v;
  }
  if (width < 0 || height < 0) return std::nullopt;
  return header(r, "TIFF", width, height);
}

// P1..P6: magic, then width and height as decimal tokens; '#' comments run to the line end.
std::optional<ImageHeader> probe_pnm(Reader r) {
  if (r.n < 2 || r.d[0] != 'P' || r.d[1] < '1' || r.d[1] > '6') return std::nullopt;
  size_t i = 2;
  int64_t values[2] = {0, 0};
  for (int64_t& v : values) {
    while (i < r.n && (std::strchr(" \t\r\n\v\f", r.d[i]) || r.d[i] == '#')) {
      if (r.d[i] == '#')
        while (i < r.n && r.d[i] != '\n') ++i;
      else
        ++i;
    }
    if (i >= r.n || r.d[i] < '0' || r.d[i] > '9') return std::nullopt;
    for (; i < r.n && r.d[i] >= '0' && r.d[i] <= '9'; ++i)
      v = std::min<int64_t>(v * 10 + (r.d[i] - '0'), int64_t{1} << 40);  // saturates, never overflows
    if (i >= r.n) return std::nullopt;                                   // the number may go on past the end
  }
  return header(r, "PNM", values[0], values[1]);
}

std::optional<ImageHeader> probe_webp(Reader r) {
  if (!r.starts_with("RIFF") || !r.starts_with("WEBP", 8)) return std::nullopt;
  if (r.starts_with("VP8 ", 12)) {  // lossy: 14-bit sizes after the 3-byte start code
    if (!r.starts_with("\x9d\x01\x2a", 23)) return std::nullopt;
    return header(r, "WebP", static_cast<int64_t>(r.uint(26, 2) & 0x3FFF),
                  static_cast<int64_t>(r.uint(28, 2) & 0x3FFF));
  }
  if (r.starts_with("VP8L", 12)) {  // lossless: 14-bit (size - 1) fields packed after 0x2F
    const uint64_t bits = r.uint(21, 4);
    return header(r, "WebP", static_cast<int64_t>(bits & 0x3FFF) + 1, static_cast<int64_t>((bits >> 14) & 0x3FFF) + 1);
  }
  if (r.starts_with("VP8X", 12))  // extended: 24-bit (size - 1) canvas
    return header(r, "WebP", static_cast<int64_t>(r.uint(24, 3)) + 1, static_cast<int64_t>(r.uint(27, 3)) + 1);
  return std::nullopt;
}

}  // namespace

int64_t ImageHeader::pixels() const {
  if (width <= 0 || height <= 0) return 0;
  if (height > std::numeric_limits<int64_t>::max() / width) return std::numeric_limits<int64_t>::max();
  return width * height;
}

std::optional<ImageHeader> probe_image_header(const uint8_t* data, size_t n) {
  const Reader r{data, n};
  for (auto probe : {probe_png, probe_jpeg, probe_bmp, probe_tiff, probe_pnm, probe_webp})
    if (auto h = probe(r)) return h;
  return std::nullopt;
}

const char* probed_formats() { return "PNG, JPEG, BMP, TIFF, PNM, WebP"; }

}  // namespace gad
