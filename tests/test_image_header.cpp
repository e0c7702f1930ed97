// The image header probe (src/image/header.h) against files OpenCV wrote, every truncation of
// them and random corruption; and decode_image_bytes refusing images above max_pixels from the
// header alone.
#include <gtest/gtest.h>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "image/header.h"
#include "image/image.h"
#include "util/error.h"

namespace gad {
namespace {

std::vector<uint8_t> encode(const std::string& ext, int width, int height, int type = CV_8UC3) {
  cv::Mat m(height, width, type, cv::Scalar(10, 200, 90));
  std::vector<uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, m, out)) << ext;
  return out;
}

struct Sample {
  std::string ext, format;
  int type;
};

const std::vector<Sample> kSamples = {
    {".png", "PNG", CV_8UC3}, {".png", "PNG", CV_16UC1},  {".jpg", "JPEG", CV_8UC3},   {".jpg", "JPEG", CV_8UC1},
    {".bmp", "BMP", CV_8UC3}, {".tiff", "TIFF", CV_8UC3}, {".tiff", "TIFF", CV_16UC3}, {".ppm", "PNM", CV_8UC3},
    {".pgm", "PNM", CV_8UC1}, {".webp", "WebP", CV_8UC3}};

TEST(ImageHeader, ReadsTheDimensionsOpenCvWrote) {
  for (const auto& s : kSamples) {
    for (auto [w, h] : {std::pair{1, 1}, std::pair{37, 301}, std::pair{640, 17}}) {
      auto bytes = encode(s.ext, w, h, s.type);
      auto header = probe_image_header(bytes.data(), bytes.size());
      ASSERT_TRUE(header) << s.ext << " " << w << "x" << h;
      EXPECT_EQ(header->format, s.format);
      EXPECT_EQ(header->width, w) << s.ext;
      EXPECT_EQ(header->height, h) << s.ext;
    }
  }
}

TEST(ImageHeader, TruncatedAndCorruptedHeadersNeverReadOutOfBounds) {
  std::mt19937 rng(3);
  for (const auto& s : kSamples) {
    const auto bytes = encode(s.ext, 33, 21, s.type);
    // Every prefix: either no header, or the right one (never garbage from past the end).
    for (size_t n = 0; n <= std::min<size_t>(bytes.size(), 600); ++n) {
      auto copy = std::vector<uint8_t>(bytes.begin(), bytes.begin() + n);  // exact-size buffer for ASan
      auto h = probe_image_header(copy.data(), copy.size());
      if (h) EXPECT_TRUE(h->width == 33 && h->height == 21) << s.ext << " prefix " << n;
    }
    for (int trial = 0; trial < 300; ++trial) {
      auto copy = std::vector<uint8_t>(bytes.begin(), bytes.begin() + std::min<size_t>(bytes.size(), 256));
      for (int flips = 0; flips < 4; ++flips) copy[rng() % copy.size()] = static_cast<uint8_t>(rng());
      auto h = probe_image_header(copy.data(), copy.size());
      if (h) EXPECT_GE(h->pixels(), 0);
    }
  }
  EXPECT_FALSE(probe_image_header(nullptr, 0));
  const std::string text = "definitely not an image";
  EXPECT_FALSE(probe_image_header(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

TEST(ImageHeader, PixelCountSaturatesInsteadOfOverflowing) {
  ImageHeader h{"PNG", 0xFFFFFFFFll, 0xFFFFFFFFll};
  EXPECT_EQ(h.pixels(), std::numeric_limits<int64_t>::max());
  EXPECT_EQ((ImageHeader{"PNG", 0, 5}).pixels(), 0);
}

TEST(ImageHeader, DecodeRefusesImagesAboveTheLimitBeforeDecoding) {
  auto bytes = encode(".png", 300, 200);
  EXPECT_EQ(decode_image_bytes(bytes.data(), bytes.size(), "ok.png", 60000).width, 300);
  try {
    decode_image_bytes(bytes.data(), bytes.size(), "big.png", 59999);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "big.png: 300 x 200 pixels is more than the limit of 59999 (--max-pixels)");
  }
  const std::string junk = "GIF89a not supported";
  EXPECT_THROW(decode_image_bytes(reinterpret_cast<const uint8_t*>(junk.data()), junk.size(), "x.gif"), Error);
}

}  // namespace
}  // namespace gad
