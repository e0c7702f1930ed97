// Image decoding and preprocessing against the PIL/torchvision goldens in shared/fixtures.
//
// InCTRL fixtures (fixtures/inctrl/preprocess): `pixel_values` is the official transform output and
// `decoded_u8` is PIL's decode, so decoder and resize differences can be told apart. Lite fixtures
// (fixtures/lite/mobilenet_v2/cases): `input` is the MobileNet input built from shared/data images.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <string>
#include <vector>

#include "image/image.h"
#include "image/preprocess.h"
#include "io/safetensors.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

const std::string kShared = GAD_SHARED_DIR;
const std::string kInctrlDir = kShared + "/fixtures/inctrl/preprocess/";
const std::string kLiteDir = kShared + "/fixtures/lite/mobilenet_v2/cases/";

// ---- fixture access ----

const RawTensor& find_tensor(const SafetensorsContents& st, const std::string& name) {
  for (const auto& [n, t] : st.tensors)
    if (n == name) return t;
  throw std::runtime_error("fixture tensor '" + name + "' not found");
}

std::vector<float> as_f32(const RawTensor& t) {
  EXPECT_EQ(t.dtype, DType::F32);
  std::vector<float> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data, v.size() * sizeof(float));
  return v;
}

// PIL's numpy decode as an Image: [H,W] is 'L', [H,W,C] is RGB/RGBA.
Image image_from_decoded_u8(const RawTensor& t) {
  EXPECT_EQ(t.dtype, DType::U8);
  Image img;
  img.height = static_cast<int>(t.shape.at(0));
  img.width = static_cast<int>(t.shape.at(1));
  img.channels = t.shape.size() == 3 ? static_cast<int>(t.shape[2]) : 1;
  img.pixels.assign(t.data, t.data + t.nbytes);
  return img;
}

struct DiffStats {
  size_t count = 0, exact = 0;
  double max_abs = 0.0;
  double exact_fraction() const { return count ? static_cast<double>(exact) / count : 1.0; }
};

DiffStats compare(const std::vector<float>& got, const std::vector<float>& want) {
  DiffStats s;
  EXPECT_EQ(got.size(), want.size());
  s.count = std::min(got.size(), want.size());
  for (size_t i = 0; i < s.count; ++i) {
    // Bitwise equality: the goal is the identical float32, not a nearby one.
    if (std::memcmp(&got[i], &want[i], sizeof(float)) == 0) ++s.exact;
    s.max_abs = std::max(s.max_abs, static_cast<double>(std::fabs(got[i] - want[i])));
  }
  return s;
}

DiffStats compare_u8(const Image& got, const Image& want) {
  DiffStats s;
  EXPECT_EQ(got.width, want.width);
  EXPECT_EQ(got.height, want.height);
  EXPECT_EQ(got.channels, want.channels);
  s.count = std::min(got.pixels.size(), want.pixels.size());
  for (size_t i = 0; i < s.count; ++i) {
    const int d = std::abs(int(got.pixels[i]) - int(want.pixels[i]));
    if (d == 0) ++s.exact;
    s.max_abs = std::max(s.max_abs, double(d));
  }
  return s;
}

void report(const std::string& key, const DiffStats& s) {
  std::printf("[ preprocess ] %-40s max_abs=%.6g exact=%zu/%zu (%.4f%%)\n", key.c_str(), s.max_abs, s.exact,
              s.count, 100.0 * s.exact_fraction());
  ::testing::Test::RecordProperty(key + "_max_abs", std::to_string(s.max_abs));
  ::testing::Test::RecordProperty(key + "_exact_pct", std::to_string(100.0 * s.exact_fraction()));
}

nlohmann::json preprocess_index() { return nlohmann::json::parse(read_file_text(kInctrlDir + "preprocess.json")); }

// ---- scratch files ----

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() / ("gad_test_preprocess_" + std::to_string(::getpid()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string write(const std::string& name, const std::vector<uint8_t>& bytes) const {
    const std::string p = (path_ / name).string();
    std::ofstream out(p, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  std::string path(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// ---- hand-made PNGs, for colour types OpenCV cannot write (gray+alpha, palette, tRNS) ----

void put_u32be(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}

void add_chunk(std::vector<uint8_t>& png, const char* type, const std::vector<uint8_t>& data) {
  put_u32be(png, static_cast<uint32_t>(data.size()));
  const size_t start = png.size();
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), data.begin(), data.end());
  put_u32be(png, static_cast<uint32_t>(crc32(0, png.data() + start, static_cast<uInt>(png.size() - start))));
}

struct PngChunk {
  const char* type;
  std::vector<uint8_t> data;
};

// `rows` holds the raw sample bytes (big-endian for 16 bit), without filter bytes.
std::vector<uint8_t> make_png(int w, int h, int bit_depth, int color_type, const std::vector<uint8_t>& rows,
                              const std::vector<PngChunk>& before_idat = {}) {
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put_u32be(ihdr, w);
  put_u32be(ihdr, h);
  ihdr.insert(ihdr.end(), {static_cast<uint8_t>(bit_depth), static_cast<uint8_t>(color_type), 0, 0, 0});
  add_chunk(png, "IHDR", ihdr);
  for (const auto& c : before_idat) add_chunk(png, c.type, c.data);
  const size_t row_bytes = rows.size() / h;
  std::vector<uint8_t> filtered;
  for (int y = 0; y < h; ++y) {
    filtered.push_back(0);  // filter type None
    filtered.insert(filtered.end(), rows.begin() + y * row_bytes, rows.begin() + (y + 1) * row_bytes);
  }
  uLongf zlen = compressBound(static_cast<uLong>(filtered.size()));
  std::vector<uint8_t> z(zlen);
  EXPECT_EQ(compress(z.data(), &zlen, filtered.data(), static_cast<uLong>(filtered.size())), Z_OK);
  z.resize(zlen);
  add_chunk(png, "IDAT", z);
  add_chunk(png, "IEND", {});
  return png;
}

std::vector<uint8_t> encode(const cv::Mat& m, const std::string& ext) {
  std::vector<uint8_t> out;
  EXPECT_TRUE(cv::imencode(ext, m, out));
  return out;
}

Image synthetic(int w, int h, int channels, uint32_t seed) {
  Image img{w, h, channels, std::vector<uint8_t>(static_cast<size_t>(w) * h * channels)};
  std::mt19937 rng(seed);
  for (auto& p : img.pixels) p = static_cast<uint8_t>(rng() & 0xff);
  return img;
}

// ===================================================================================== InCTRL

class InctrlPreprocess : public ::testing::TestWithParam<std::string> {};

TEST_P(InctrlPreprocess, MatchesOfficialTransform) {
  const std::string name = GetParam();
  const nlohmann::json info = preprocess_index().at("images").at(name);
  const bool is_png = info.at("format") == "PNG";
  const SafetensorsContents st = read_safetensors(kInctrlDir + info.at("tensor_file").get<std::string>());
  const std::vector<float> want = as_f32(find_tensor(st, "pixel_values"));
  ASSERT_EQ(want.size(), 3u * 240 * 240);

  // Decoder: OpenCV vs PIL, on the raw uint8 samples.
  const Image decoded = decode_image(kInctrlDir + info.at("file").get<std::string>());
  const Image pil_decoded = image_from_decoded_u8(find_tensor(st, "decoded_u8"));
  EXPECT_EQ(decoded.width, info.at("width").get<int>());
  EXPECT_EQ(decoded.height, info.at("height").get<int>());
  const DiffStats dec = compare_u8(decoded, pil_decoded);
  report(name + "_decoded_u8", dec);
  if (is_png) {
    EXPECT_EQ(dec.exact, dec.count) << "PNG decode must match PIL exactly";
  }

  // Resize/crop/normalise alone, on PIL's own decode: always bit-exact.
  const PixelTensor from_pil = clip_preprocess(pil_decoded, 240);
  const DiffStats resize_only = compare(from_pil.chw, want);
  report(name + "_pixel_values_from_pil_decode", resize_only);
  EXPECT_EQ(resize_only.exact, resize_only.count) << "Pillow BICUBIC emulation is not bit-exact";

  // The whole pipeline from the file.
  const PixelTensor t = clip_preprocess(decoded, 240);
  EXPECT_EQ(t.channels, 3);
  EXPECT_EQ(t.height, 240);
  EXPECT_EQ(t.width, 240);
  const DiffStats full = compare(t.chw, want);
  report(name + "_pixel_values", full);
  if (is_png) {
    EXPECT_EQ(full.exact, full.count);
  } else {
    EXPECT_LE(full.max_abs, 0.02);
    EXPECT_GE(full.exact_fraction(), 0.99);
  }

  const CropGeometry& g = t.geometry;
  EXPECT_EQ(g.src_w, info.at("width").get<int>());
  EXPECT_EQ(g.src_h, info.at("height").get<int>());
  EXPECT_EQ(g.resized_w, info.at("resized_width").get<int>());
  EXPECT_EQ(g.resized_h, info.at("resized_height").get<int>());
  EXPECT_EQ(g.crop_left, info.at("crop_left").get<int>());
  EXPECT_EQ(g.crop_top, info.at("crop_top").get<int>());
  EXPECT_EQ(g.size, 240);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, InctrlPreprocess,
                         ::testing::Values("elpv_cell0004", "mt_fray_331149", "mt_break_348629", "headct_195",
                                           "cifar_cat_0000"));

TEST(ClipPreprocess, RgbaKeepsAlphaAndEqualsRgbPathWhenOpaque) {
  const Image rgba = decode_image(kInctrlDir + "headct_195.png");
  ASSERT_EQ(rgba.channels, 4);
  Image rgb{rgba.width, rgba.height, 3, {}};
  for (size_t p = 0; p < rgba.pixels.size(); p += 4) {
    EXPECT_EQ(rgba.pixels[p + 3], 255);
    rgb.pixels.insert(rgb.pixels.end(), rgba.pixels.begin() + p, rgba.pixels.begin() + p + 3);
  }
  EXPECT_EQ(clip_preprocess(rgba).chw, clip_preprocess(rgb).chw);
}

TEST(ClipPreprocess, CropOffsetsRoundHalfToEven) {
  const nlohmann::json index = preprocess_index();  // must outlive the items() proxy
  for (const auto& [name, info] : index.at("images").items()) {
    const double top_unrounded = info.at("crop_top_unrounded").get<double>();
    const double left_unrounded = info.at("crop_left_unrounded").get<double>();
    EXPECT_EQ(center_crop_offset(info.at("resized_height").get<int>(), 240), info.at("crop_top").get<int>())
        << name << " top, unrounded " << top_unrounded;
    EXPECT_EQ(center_crop_offset(info.at("resized_width").get<int>(), 240), info.at("crop_left").get<int>())
        << name << " left, unrounded " << left_unrounded;
  }
  EXPECT_EQ(center_crop_offset(241, 240), 0);   // 0.5 -> 0
  EXPECT_EQ(center_crop_offset(243, 240), 2);   // 1.5 -> 2
  EXPECT_EQ(center_crop_offset(245, 240), 2);   // 2.5 -> 2
  EXPECT_EQ(center_crop_offset(247, 240), 4);   // 3.5 -> 4
  EXPECT_EQ(center_crop_offset(329, 240), 44);  // 44.5 -> 44
  EXPECT_EQ(center_crop_offset(331, 240), 46);  // 45.5 -> 46
  EXPECT_EQ(center_crop_offset(242, 240), 1);
  EXPECT_EQ(center_crop_offset(240, 240), 0);
}

TEST(ClipPreprocess, NonSquareGeometry) {
  // Landscape 300x200: 240 tall, int(240*300/200) = 360 wide, left = 60.
  PixelTensor t = clip_preprocess(synthetic(300, 200, 3, 1));
  EXPECT_EQ(t.chw.size(), 3u * 240 * 240);
  const CropGeometry& a = t.geometry;
  EXPECT_EQ(a.src_w, 300);
  EXPECT_EQ(a.src_h, 200);
  EXPECT_EQ(a.resized_w, 360);
  EXPECT_EQ(a.resized_h, 240);
  EXPECT_EQ(a.crop_left, 60);
  EXPECT_EQ(a.crop_top, 0);
  EXPECT_EQ(a.size, 240);

  // Portrait 200x301 gray: int(240*301/200) = int(361.2) = 361 tall, top = round(60.5) = 60.
  t = clip_preprocess(synthetic(200, 301, 1, 2));
  const CropGeometry& b = t.geometry;
  EXPECT_EQ(b.resized_w, 240);
  EXPECT_EQ(b.resized_h, 361);
  EXPECT_EQ(b.crop_left, 0);
  EXPECT_EQ(b.crop_top, 60);

  // Gray input is replicated: the three planes are equal before normalisation.
  const size_t plane = 240 * 240;
  const float m0 = static_cast<float>(0.48145466), s0 = static_cast<float>(0.26862954);
  const float m1 = static_cast<float>(0.4578275), s1 = static_cast<float>(0.26130258);
  for (size_t i = 0; i < plane; i += 997) {
    const float x0 = t.chw[i] * s0 + m0, x1 = t.chw[plane + i] * s1 + m1;
    EXPECT_EQ(std::lround(x0 * 255), std::lround(x1 * 255));
  }

  // Already at the target size: no resize, no crop.
  t = clip_preprocess(synthetic(240, 240, 1, 3));
  EXPECT_EQ(t.geometry.resized_w, 240);
  EXPECT_EQ(t.geometry.crop_left, 0);
}

// ======================================================================================= lite

TEST(LitePreprocess, MatchesMobilenetFixtureInputs) {
  // case -> source image under shared/data (see the case files' __metadata__.input).
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"elpv_normal_poly", "elpv_sample/images/cell0061.png"},
      {"elpv_defect_mono", "elpv_sample/images/cell0001.png"},
      {"mtile_blowhole", "magnetic_tile_sample/MT_Blowhole/exp1_num_108719.jpg"},
  };
  for (const auto& [name, source] : cases) {
    const SafetensorsContents st = read_safetensors(kLiteDir + name + ".safetensors");
    ASSERT_NE(st.metadata.at("input").find(source), std::string::npos) << name;
    const std::vector<float> nhwc = as_f32(find_tensor(st, "input"));
    ASSERT_EQ(nhwc.size(), 224u * 224 * 3);
    std::vector<float> want(nhwc.size());  // NHWC -> CHW
    for (size_t p = 0; p < 224u * 224; ++p)
      for (size_t c = 0; c < 3; ++c) want[c * 224 * 224 + p] = nhwc[p * 3 + c];

    const Image img = decode_image(kShared + "/data/" + source);
    const PixelTensor t = lite_preprocess(img, 224);
    EXPECT_EQ(t.geometry.src_w, img.width);
    EXPECT_EQ(t.geometry.resized_w, 224);
    const DiffStats s = compare(t.chw, want);
    report("lite_" + name, s);
    if (source.size() > 4 && source.compare(source.size() - 4, 4, ".png") == 0) {
      EXPECT_EQ(s.exact, s.count) << name;
    } else {
      EXPECT_LE(s.max_abs, 0.02) << name;
      EXPECT_GE(s.exact_fraction(), 0.99) << name;
    }
  }
}

// ==================================================================================== decoding

TEST(DecodeImage, MissingFileThrowsNamingPath) {
  TempDir dir;
  const std::string path = dir.path("does_not_exist.png");
  try {
    decode_image(path);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(DecodeImage, CorruptFilesThrowNamingPath) {
  TempDir dir;
  std::mt19937 rng(42);
  std::vector<uint8_t> noise(4096);
  for (auto& b : noise) b = static_cast<uint8_t>(rng());
  const std::vector<uint8_t> elpv = read_file_bytes(kInctrlDir + "elpv_cell0004.png");
  std::vector<uint8_t> png_garbage(elpv.begin(), elpv.begin() + 8);  // valid signature, junk after
  png_garbage.insert(png_garbage.end(), noise.begin(), noise.end());
  const std::vector<uint8_t> truncated(elpv.begin(), elpv.begin() + elpv.size() / 2);
  // libjpeg would decode these with gray fill and only a warning; PIL raises, and so must gad.
  const std::vector<uint8_t> jpeg = read_file_bytes(kInctrlDir + "mt_break_348629.jpg");
  const std::vector<uint8_t> jpeg_half(jpeg.begin(), jpeg.begin() + jpeg.size() / 2);
  const std::vector<uint8_t> jpeg_no_eoi(jpeg.begin(), jpeg.end() - 2);

  const std::vector<std::pair<std::string, std::vector<uint8_t>>> files = {
      {"random.jpg", noise}, {"garbage.png", png_garbage}, {"truncated.png", truncated}, {"empty.png", {}},
      {"truncated.jpg", jpeg_half}, {"no_eoi.jpg", jpeg_no_eoi}};
  for (const auto& [name, bytes] : files) {
    const std::string path = dir.write(name, bytes);
    try {
      decode_image(path);
      ADD_FAILURE() << name << ": no exception";
    } catch (const Error& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
  }
}

TEST(DecodeImage, JpegEndDetectionSkipsThumbnailsAndTrailingData) {
  // An APP1 segment carrying a fake thumbnail with its own SOI/EOI, and junk after the real EOI.
  const std::vector<uint8_t> jpeg = read_file_bytes(kInctrlDir + "cifar_cat_0000.jpg");
  const std::vector<uint8_t> app1 = {0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA};
  std::vector<uint8_t> with_thumb(jpeg.begin(), jpeg.begin() + 2);
  with_thumb.insert(with_thumb.end(), app1.begin(), app1.end());
  with_thumb.insert(with_thumb.end(), jpeg.begin() + 2, jpeg.end());
  std::vector<uint8_t> trailing = with_thumb;
  trailing.insert(trailing.end(), {0x00, 0x12, 0xFF, 0x00, 'j', 'u', 'n', 'k'});
  const Image ref = decode_image_bytes(jpeg.data(), jpeg.size(), "cat.jpg");
  EXPECT_EQ(decode_image_bytes(with_thumb.data(), with_thumb.size(), "thumb.jpg").pixels, ref.pixels);
  EXPECT_EQ(decode_image_bytes(trailing.data(), trailing.size(), "trailing.jpg").pixels, ref.pixels);
  const std::vector<uint8_t> cut(with_thumb.begin(), with_thumb.end() - 40);
  EXPECT_THROW(decode_image_bytes(cut.data(), cut.size(), "cut.jpg"), Error);

  // Progressive and restart-interval JPEGs have several scans / RSTn markers.
  const cv::Mat m(64, 48, CV_8UC3, cv::Scalar(10, 120, 230));
  std::vector<uint8_t> bytes;
  ASSERT_TRUE(cv::imencode(".jpg", m, bytes, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  EXPECT_EQ(decode_image_bytes(bytes.data(), bytes.size(), "progressive.jpg").width, 48);
  ASSERT_TRUE(cv::imencode(".jpg", m, bytes, {cv::IMWRITE_JPEG_RST_INTERVAL, 1}));
  EXPECT_EQ(decode_image_bytes(bytes.data(), bytes.size(), "rst.jpg").height, 64);
}

TEST(DecodeImage, ChannelOrderAcrossFormats) {
  // A 3x2 BGR matrix whose pixels are distinct in every channel.
  cv::Mat bgr(2, 3, CV_8UC3);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 3; ++x) bgr.at<cv::Vec3b>(y, x) = cv::Vec3b(10 * x + 1, 50 + y, 200 - x - 7 * y);
  for (const std::string ext : {".png", ".bmp", ".tiff"}) {
    const std::vector<uint8_t> bytes = encode(bgr, ext);
    const Image img = decode_image_bytes(bytes.data(), bytes.size(), "mem" + ext);
    ASSERT_EQ(img.channels, 3) << ext;
    ASSERT_EQ(img.width, 3) << ext;
    ASSERT_EQ(img.height, 2) << ext;
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) {
        const cv::Vec3b p = bgr.at<cv::Vec3b>(y, x);
        const uint8_t* q = &img.pixels[(y * 3 + x) * 3];
        EXPECT_EQ(q[0], p[2]) << ext;  // R
        EXPECT_EQ(q[1], p[1]) << ext;  // G
        EXPECT_EQ(q[2], p[0]) << ext;  // B
      }
  }
}

TEST(DecodeImage, RgbaKeepsAlpha) {
  cv::Mat bgra(1, 2, CV_8UC4);
  bgra.at<cv::Vec4b>(0, 0) = cv::Vec4b(1, 2, 3, 4);
  bgra.at<cv::Vec4b>(0, 1) = cv::Vec4b(5, 6, 7, 255);
  const std::vector<uint8_t> bytes = encode(bgra, ".png");
  const Image img = decode_image_bytes(bytes.data(), bytes.size(), "rgba.png");
  ASSERT_EQ(img.channels, 4);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{3, 2, 1, 4, 7, 6, 5, 255}));
}

TEST(DecodeImage, SixteenBitKeepsHighByte) {
  cv::Mat gray16(1, 4, CV_16UC1);
  const uint16_t g[4] = {0, 0x00ff, 0x1280, 0xffff};
  for (int i = 0; i < 4; ++i) gray16.at<uint16_t>(0, i) = g[i];
  std::vector<uint8_t> bytes = encode(gray16, ".png");
  Image img = decode_image_bytes(bytes.data(), bytes.size(), "gray16.png");
  ASSERT_EQ(img.channels, 1);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{0, 0, 0x12, 0xff}));

  cv::Mat bgr16(1, 1, CV_16UC3, cv::Scalar(0x0102, 0x0304, 0xfe05));  // B, G, R
  bytes = encode(bgr16, ".png");
  img = decode_image_bytes(bytes.data(), bytes.size(), "rgb16.png");
  ASSERT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{0xfe, 0x03, 0x01}));

  const cv::Mat f32(2, 2, CV_32FC1, cv::Scalar(0.5));
  bytes = encode(f32, ".tiff");
  EXPECT_THROW(decode_image_bytes(bytes.data(), bytes.size(), "float.tiff"), Error);
}

TEST(DecodeImage, GrayAlphaBecomesRgbaWithEqualChannels) {
  // PNG colour type 4 (gray + alpha), two pixels: (L=10, A=20), (L=200, A=255).
  const std::vector<uint8_t> png = make_png(2, 1, 8, 4, {10, 20, 200, 255});
  const Image img = decode_image_bytes(png.data(), png.size(), "la.png");
  ASSERT_EQ(img.channels, 4);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{10, 10, 10, 20, 200, 200, 200, 255}));
}

TEST(DecodeImage, TrnsIsIgnoredLikePil) {
  // RGB with a tRNS colour key: PIL keeps mode RGB and convert('RGB') ignores the key.
  const std::vector<uint8_t> rgb = make_png(2, 1, 8, 2, {1, 2, 3, 4, 5, 6}, {{"tRNS", {0, 1, 0, 2, 0, 3}}});
  Image img = decode_image_bytes(rgb.data(), rgb.size(), "trns.png");
  ASSERT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{1, 2, 3, 4, 5, 6}));

  // Palette with a transparent entry: expanded to RGB, transparency dropped.
  const std::vector<uint8_t> pal = make_png(3, 1, 8, 3, {0, 1, 2},
                                            {{"PLTE", {255, 0, 0, 0, 255, 0, 0, 0, 255}}, {"tRNS", {0, 128}}});
  img = decode_image_bytes(pal.data(), pal.size(), "palette.png");
  ASSERT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{255, 0, 0, 0, 255, 0, 0, 0, 255}));

  // Gray with tRNS stays gray.
  const std::vector<uint8_t> gray = make_png(2, 1, 8, 0, {7, 9}, {{"tRNS", {0, 7}}});
  img = decode_image_bytes(gray.data(), gray.size(), "gray_trns.png");
  ASSERT_EQ(img.channels, 1);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{7, 9}));
}

// ===================================================================================== resize

TEST(ResizePil, ConstantImageStaysConstant) {
  for (const Resample f : {Resample::Bilinear, Resample::Bicubic}) {
    Image in{37, 23, 3, std::vector<uint8_t>(37 * 23 * 3, 0)};
    for (size_t p = 0; p < in.pixels.size(); p += 3) {
      in.pixels[p] = 0;
      in.pixels[p + 1] = 137;
      in.pixels[p + 2] = 255;
    }
    for (const auto& [w, h] : std::vector<std::pair<int, int>>{{240, 150}, {10, 7}, {37, 90}, {5, 23}}) {
      const Image out = resize_pil(in, w, h, f);
      ASSERT_EQ(out.width, w);
      ASSERT_EQ(out.height, h);
      for (size_t p = 0; p < out.pixels.size(); p += 3) {
        ASSERT_EQ(out.pixels[p], 0);
        ASSERT_EQ(out.pixels[p + 1], 137);
        ASSERT_EQ(out.pixels[p + 2], 255);
      }
    }
  }
}

TEST(ResizePil, TransparentColourDoesNotBleed) {
  // Left half transparent red, right half opaque blue. Premultiplied ("RGBa") resizing gives the
  // blended pixels no red at all; a straight per-channel resize would turn them purple.
  Image in{8, 4, 4, {}};
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 8; ++x) {
      const bool left = x < 4;
      in.pixels.insert(in.pixels.end(), {uint8_t(left ? 255 : 0), 0, uint8_t(left ? 0 : 255), uint8_t(left ? 0 : 255)});
    }
  const Image out = resize_pil(in, 5, 3, Resample::Bicubic);
  for (size_t p = 0; p < out.pixels.size(); p += 4) {
    EXPECT_EQ(out.pixels[p], 0) << "red leaked at byte " << p;
    if (out.pixels[p + 3] > 0) {
      EXPECT_EQ(out.pixels[p + 2], 255);
    }
  }
}

TEST(ResizePil, SameSizeIsAnExactCopy) {
  const Image in = synthetic(9, 7, 4, 5);  // random alpha: a premultiply round trip would change it
  const Image out = resize_pil(in, 9, 7, Resample::Bicubic);
  EXPECT_EQ(out.pixels, in.pixels);
}

TEST(ResizePil, RejectsEmptyInputAndSizes) {
  EXPECT_THROW(resize_pil(Image{}, 10, 10, Resample::Bicubic), Error);
  EXPECT_THROW(resize_pil(synthetic(4, 4, 1, 1), 0, 10, Resample::Bicubic), Error);
  EXPECT_THROW(clip_preprocess(Image{}), Error);
  EXPECT_THROW(lite_preprocess(Image{0, 5, 3, {}}), Error);
}

}  // namespace
}  // namespace gad
