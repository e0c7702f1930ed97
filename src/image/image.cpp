#include "image/image.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "image/header.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

// PNG colour type from the IHDR chunk, or -1 when `data` is not a PNG. IHDR must be the first
// chunk, so the colour type is always byte 25 of a valid file.
int png_color_type(const uint8_t* data, size_t n) {
  static const uint8_t kSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n < 26 || std::memcmp(data, kSignature, 8) != 0) return -1;
  return data[25];
}

// OpenCV turns a tRNS chunk of an RGB or palette PNG into an alpha channel; PIL does not (see the
// header), so such files must come back as RGB.
bool alpha_is_only_trns(const uint8_t* data, size_t n) {
  int type = png_color_type(data, n);
  return type == 2 || type == 3;
}

bool is_jpeg(const uint8_t* data, size_t n) {
  return n >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF;
}

bool is_rst_marker(uint8_t m) { return m >= 0xD0 && m <= 0xD7; }

// Walks the JPEG marker segments after SOI and reports whether the end-of-image marker is reached
// before the data ends. libjpeg only warns about a premature end and fills the missing rows with
// gray, which would silently hand the model a half-gray image; PIL raises "image file is
// truncated" there, so gad rejects such files too. Segment lengths are followed (so an EXIF
// thumbnail's own EOI is skipped) and entropy-coded data is scanned for the next real marker
// (0xFF followed by neither a stuffed 0x00 nor RSTn). Stray bytes between markers are skipped, as
// libjpeg does.
bool jpeg_reaches_eoi(const uint8_t* d, size_t n) {
  size_t i = 2;
  while (i + 1 < n) {
    const uint8_t m = d[i + 1];
    if (d[i] != 0xFF || m == 0xFF || m == 0x00) {  // stray byte or fill byte
      ++i;
      continue;
    }
    i += 2;
    if (m == 0xD9) return true;
    if (m == 0x01 || m == 0xD8 || is_rst_marker(m)) continue;  // markers without a length field
    if (i + 2 > n) return false;
    const size_t length = (static_cast<size_t>(d[i]) << 8) | d[i + 1];
    i += std::max<size_t>(length, 2);
    if (m != 0xDA) continue;
    while (i + 1 < n && !(d[i] == 0xFF && d[i + 1] != 0x00 && !is_rst_marker(d[i + 1]))) ++i;
  }
  return false;
}

// 8-bit view of a decoded matrix: 16-bit samples keep their high byte (see the header).
cv::Mat to_8bit(const cv::Mat& m, const std::string& name) {
  if (m.depth() == CV_8U) return m;
  if (m.depth() == CV_16U) {
    cv::Mat out(m.rows, m.cols, CV_MAKETYPE(CV_8U, m.channels()));
    const size_t row_values = static_cast<size_t>(m.cols) * m.channels();
    for (int y = 0; y < m.rows; ++y) {
      const uint16_t* src = m.ptr<uint16_t>(y);
      uint8_t* dst = out.ptr<uint8_t>(y);
      for (size_t i = 0; i < row_values; ++i) dst[i] = static_cast<uint8_t>(src[i] >> 8);
    }
    return out;
  }
  fail_as(ErrorKind::Unsupported, name, ": unsupported sample type (only 8- and 16-bit integer images are supported)");
}

// Copies an 8-bit OpenCV matrix (gray, BGR or BGRA) into an Image in RGB(A) order.
Image from_mat(const cv::Mat& m, bool drop_alpha, const std::string& name) {
  const int cn = m.channels();
  if (cn != 1 && cn != 3 && cn != 4) fail_as(ErrorKind::Unsupported, name, ": unsupported channel count ", cn);
  Image img;
  img.width = m.cols;
  img.height = m.rows;
  img.channels = (cn == 4 && drop_alpha) ? 3 : cn;
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * img.channels);
  uint8_t* dst = img.pixels.data();
  for (int y = 0; y < m.rows; ++y) {
    const uint8_t* src = m.ptr<uint8_t>(y);
    for (int x = 0; x < m.cols; ++x, src += cn) {
      if (cn == 1) {
        *dst++ = src[0];
        continue;
      }
      *dst++ = src[2];  // OpenCV stores BGR(A)
      *dst++ = src[1];
      *dst++ = src[0];
      if (img.channels == 4) *dst++ = src[3];
    }
  }
  return img;
}

}  // namespace

std::string pixel_limit_problem(int64_t width, int64_t height, int64_t max_pixels) {
  const ImageHeader h{"", width, height};
  if (h.pixels() <= max_pixels) return "";
  return std::to_string(width) + " x " + std::to_string(height) + " pixels is more than the limit of " +
         std::to_string(max_pixels) + " (--max-pixels)";
}

Image decode_image_bytes(const uint8_t* data, size_t n, const std::string& name_for_errors, int64_t max_pixels) {
  const std::string& name = name_for_errors;
  if (n == 0) fail_as(ErrorKind::CorruptFile, name, ": empty file");
  if (n > static_cast<size_t>(INT_MAX)) fail_as(ErrorKind::ResourceLimit, name, ": file too large to decode (", n, " bytes)");
  const auto header = probe_image_header(data, n);
  if (!header) fail_as(ErrorKind::CorruptFile, name, ": not a readable image (unknown format or header cut short; gad reads ", probed_formats(), ")");
  if (header->width <= 0 || header->height <= 0) fail_as(ErrorKind::CorruptFile, name, ": image has zero width or height");
  const std::string too_big = pixel_limit_problem(header->width, header->height, max_pixels);
  if (!too_big.empty()) fail_as(ErrorKind::ResourceLimit, name, ": ", too_big);
  cv::Mat decoded;
  try {
    // imdecode only reads the buffer; the const_cast is needed by the cv::Mat constructor.
    const cv::Mat buffer(1, static_cast<int>(n), CV_8U, const_cast<uint8_t*>(data));
    decoded = cv::imdecode(buffer, cv::IMREAD_UNCHANGED);
  } catch (const cv::Exception& e) {
    fail_as(ErrorKind::CorruptFile, name, ": cannot decode image (", e.err, ")");
  }
  if (decoded.empty()) fail_as(ErrorKind::CorruptFile, name, ": cannot decode image (corrupt file or unsupported format)");
  if (is_jpeg(data, n) && !jpeg_reaches_eoi(data, n)) fail_as(ErrorKind::CorruptFile, name, ": truncated JPEG (no end-of-image marker)");
  if (decoded.cols <= 0 || decoded.rows <= 0) fail_as(ErrorKind::CorruptFile, name, ": image has zero width or height");
  if (decoded.dims != 2) fail_as(ErrorKind::Unsupported, name, ": unsupported image layout (", decoded.dims, " dimensions)");
  const std::string decoded_too_big = pixel_limit_problem(decoded.cols, decoded.rows, max_pixels);
  if (!decoded_too_big.empty()) fail_as(ErrorKind::ResourceLimit, name, ": ", decoded_too_big);  // a header that understated the size
  return from_mat(to_8bit(decoded, name), alpha_is_only_trns(data, n), name);
}

Image decode_image(const std::string& path, int64_t max_pixels) {
  const std::vector<uint8_t> bytes = read_file_bytes(path);  // throws "<path>: cannot open (...)"
  return decode_image_bytes(bytes.data(), bytes.size(), path, max_pixels);
}

Image rotate_image(const Image& img, double degrees) {
  if (img.width <= 0 || img.height <= 0 || img.channels < 1 || img.channels > 4) fail("rotate_image: empty image");
  const cv::Mat src(img.height, img.width, CV_MAKETYPE(CV_8U, img.channels), const_cast<uint8_t*>(img.pixels.data()));
  const cv::Mat rot = cv::getRotationMatrix2D(cv::Point2f(img.width / 2.0f, img.height / 2.0f), degrees, 1.0);
  cv::Mat out;
  cv::warpAffine(src, out, rot, src.size(), cv::INTER_LINEAR, cv::BORDER_REFLECT_101);
  Image r = img;
  std::memcpy(r.pixels.data(), out.data, r.pixels.size());
  return r;
}

}  // namespace gad
