// Image decoding (PNG, JPEG, BMP, TIFF, ... via OpenCV imgcodecs) into 8-bit HWC RGB(A) or gray.
//
// The goal is to hand the preprocessing exactly the pixels PIL's `Image.open` yields, because the
// reference pipeline (InCTRL) resizes the file's own mode without converting first:
//   - gray files stay 1 channel ('L'); colour files become RGB (OpenCV's BGR is swapped);
//   - files with a real alpha channel become RGBA (OpenCV's BGRA is swapped), so the resize can
//     premultiply like Pillow's "RGBa" path. Gray+alpha PNGs ('LA' in PIL) are returned as RGBA
//     with R = G = B; Pillow's premultiplied 'La' resize followed by convert('RGB') gives the same
//     bytes as this RGBA path, channel for channel.
//   - PNG colour types 2 (RGB) and 3 (palette) whose only transparency is a tRNS chunk are
//     returned as RGB: PIL opens them as 'RGB' / 'P' and convert('RGB') ignores the tRNS, whereas
//     OpenCV would turn the tRNS into an alpha channel. Gray PNGs with tRNS stay gray (OpenCV and
//     PIL both ignore it).
//   - Palette PNGs are expanded to RGB by OpenCV. Known difference: PIL keeps them in mode 'P',
//     and Image.resize then forces NEAREST, so the reference resizes palette images with NEAREST,
//     while gad resizes the expanded RGB with the requested filter.
//   - No EXIF orientation is applied and no PNG gAMA/ICC correction is done, as in PIL.
//   - 16-bit samples are mapped to 8 bits by keeping the high byte (v >> 8). This is exactly what
//     PIL 9.4 does for 16-bit RGB, RGBA and gray+alpha PNGs (raw modes "RGB;16B", "RGBA;16B",
//     "LA;16B"). For 16-bit *gray* PNGs PIL opens mode 'I' and convert('RGB') clips every value
//     above 255 to white, which is never what a user wants; gad uses v >> 8 there too.
//   - Other sample types (float or 32-bit TIFFs) are rejected: PIL cannot convert mode 'F' to
//     'RGB' either.
// JPEGs are decoded by the system libjpeg-turbo (ISLOW IDCT, fancy upsampling), like PIL; on
// Debian 12 (libjpeg-turbo 2.1.5) gray and YCbCr JPEGs decode byte-identically to PIL 9.4, for
// every chroma subsampling and for progressive files. Known difference: CMYK JPEGs are converted
// to RGB by OpenCV at decode time (up to 2 levels off PIL's cmyk2rgb), while PIL keeps 'CMYK',
// resizes it and converts afterwards. A JPEG whose data ends before its end-of-image marker is
// rejected as truncated (libjpeg would only warn and fill the rest with gray; PIL raises).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gad {

struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;             // 1 = L, 3 = RGB, 4 = RGBA
  std::vector<uint8_t> pixels;  // HWC, row-major, RGB(A) order, size = width * height * channels
};

// The largest image (width x height) decoded unless the caller says otherwise (`--max-pixels`):
// 40 MP is 160 MB as RGBA; the decoder's own limit (2^30 pixels) would allow 4 GB per image.
constexpr int64_t kDefaultMaxPixels = 40'000'000;

// Reads and decodes `path`. Throws gad::Error "<path>: <problem>" when the file is missing,
// empty, corrupt, of an unsupported format or sample type, has zero width/height, or declares
// more than `max_pixels` pixels (decided from the header, before any pixel buffer exists; see
// image/header.h for the formats).
Image decode_image(const std::string& path, int64_t max_pixels = kDefaultMaxPixels);

// Decodes an in-memory file; `name_for_errors` prefixes every error message.
Image decode_image_bytes(const uint8_t* data, size_t n, const std::string& name_for_errors,
                         int64_t max_pixels = kDefaultMaxPixels);

// The one-line reason an image of `pixels` pixels is refused, or "" when it is within the limit.
std::string pixel_limit_problem(int64_t width, int64_t height, int64_t max_pixels);

// `img` rotated by `degrees` (counter-clockwise) about its centre, same size, as AnomalyDINO's
// rotate_image: cv2.getRotationMatrix2D((w/2, h/2), degrees, 1), warpAffine with bilinear
// interpolation and a reflected border (BORDER_REFLECT_101).
Image rotate_image(const Image& img, double degrees);

}  // namespace gad
