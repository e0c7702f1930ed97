// Image header probe: format and dimensions read from the first bytes of a file, without decoding.
//
// Decoders allocate the whole pixel buffer from the header before reading any pixel data, so a
// few hundred bytes that declare 20000 x 20000 pixels cost gigabytes. Reading the header first
// lets every caller refuse such an image before the allocation (OpenCV 4.6 has no public
// header-only API). Formats: PNG (IHDR), JPEG (the first SOFn frame header), BMP (info or core
// header), TIFF (width/length tags of the first IFD, either byte order), PNM (P1-P6) and WebP
// (VP8, VP8L, VP8X). Every read is bounds-checked; nothing here allocates from header values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace gad {

struct ImageHeader {
  std::string format;  // "PNG", "JPEG", "BMP", "TIFF", "PNM", "WebP"
  int64_t width = 0, height = 0;
  int64_t pixels() const;  // width x height, saturating; 0 when either is 0
};

// The header of `data`, or nullopt when it is none of the formats above or is cut short before
// the dimensions. Width and height may be 0 when the file says so (callers reject that).
std::optional<ImageHeader> probe_image_header(const uint8_t* data, size_t n);

// The image formats probe_image_header recognises, for error messages.
const char* probed_formats();

}  // namespace gad
