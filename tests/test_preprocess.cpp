// Image decoding and preprocessing against the PIL/torchvision goldens in shared/fixtures.
//
// InCTRL fixtures (fixtures/inctrl/preprocess): `pixel_values` is the official transform output and
// `decoded_u8` is PIL's decode, so decoder and resize differences can be told apart. Lite fixtures
// (fixtures/lite/mobilenet_v2/cases): `input` is the MobileNet input built from shared/data images.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
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

// ---- hand-made image files ----
// Written here rather than with OpenCV so the test needs no codec headers, and so it can produce
// PNG colour types OpenCV cannot write (gray+alpha, palette, tRNS).

void put_u32be(std::vector<uint8_t>& v, uint32_t x) {
  for (int s = 24; s >= 0; s -= 8) v.push_back(static_cast<uint8_t>(x >> s));
}
void put_u16le(std::vector<uint8_t>& v, uint32_t x) {
  v.push_back(static_cast<uint8_t>(x));
  v.push_back(static_cast<uint8_t>(x >> 8));
}
void put_u32le(std::vector<uint8_t>& v, uint32_t x) {
  put_u16le(v, x & 0xffff);
  put_u16le(v, x >> 16);
}

uint32_t crc32_of(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return c ^ 0xffffffffu;
}

// A zlib stream of stored (uncompressed) deflate blocks.
std::vector<uint8_t> zlib_stored(const std::vector<uint8_t>& data) {
  std::vector<uint8_t> z = {0x78, 0x01};
  size_t pos = 0;
  do {
    const size_t len = std::min<size_t>(data.size() - pos, 65535);
    z.push_back(pos + len == data.size() ? 1 : 0);  // BFINAL, BTYPE = stored
    put_u16le(z, static_cast<uint32_t>(len));
    put_u16le(z, static_cast<uint32_t>(~len & 0xffff));
    z.insert(z.end(), data.begin() + pos, data.begin() + pos + len);
    pos += len;
  } while (pos < data.size());
  uint32_t a = 1, b = 0;  // Adler-32
  for (uint8_t v : data) {
    a = (a + v) % 65521;
    b = (b + a) % 65521;
  }
  put_u32be(z, (b << 16) | a);
  return z;
}

void add_chunk(std::vector<uint8_t>& png, const char* type, const std::vector<uint8_t>& data) {
  put_u32be(png, static_cast<uint32_t>(data.size()));
  const size_t start = png.size();
  png.insert(png.end(), type, type + 4);
  png.insert(png.end(), data.begin(), data.end());
  put_u32be(png, crc32_of(png.data() + start, png.size() - start));
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
  add_chunk(png, "IDAT", zlib_stored(filtered));
  add_chunk(png, "IEND", {});
  return png;
}

// 24-bit BMP from RGB rows (BMP stores BGR, bottom-up, rows padded to 4 bytes).
std::vector<uint8_t> make_bmp24(int w, int h, const std::vector<uint8_t>& rgb) {
  const uint32_t stride = (static_cast<uint32_t>(w) * 3 + 3) & ~3u;
  std::vector<uint8_t> bmp = {'B', 'M'};
  put_u32le(bmp, 54 + stride * h);
  put_u32le(bmp, 0);
  put_u32le(bmp, 54);
  for (uint32_t v : {40u, uint32_t(w), uint32_t(h)}) put_u32le(bmp, v);
  put_u16le(bmp, 1);
  put_u16le(bmp, 24);
  for (uint32_t v : {0u, stride * h, 2835u, 2835u, 0u, 0u}) put_u32le(bmp, v);
  for (int y = h - 1; y >= 0; --y) {
    for (int x = 0; x < w; ++x)
      for (int c = 2; c >= 0; --c) bmp.push_back(rgb[(static_cast<size_t>(y) * w + x) * 3 + c]);
    for (uint32_t pad = w * 3; pad < stride; ++pad) bmp.push_back(0);
  }
  return bmp;
}

// Minimal little-endian, uncompressed, single-strip TIFF. sample_format: 1 = uint, 3 = float.
std::vector<uint8_t> make_tiff(int w, int h, int spp, int bits, int sample_format, const std::vector<uint8_t>& data) {
  struct Entry {
    uint16_t tag, type;
    uint32_t count, value;
  };
  const uint16_t kShort = 3, kLong = 4;
  const int n_entries = 11;
  const uint32_t ifd_size = 2 + 12 * n_entries + 4;
  const uint32_t bits_offset = 8 + ifd_size;                        // BitsPerSample array when spp > 2
  const uint32_t data_offset = bits_offset + 2 * spp;
  const uint32_t bits_value = spp <= 2 ? uint32_t(bits) | (spp == 2 ? uint32_t(bits) << 16 : 0) : bits_offset;
  const std::vector<Entry> entries = {
      {256, kLong, 1, uint32_t(w)},          {257, kLong, 1, uint32_t(h)},
      {258, kShort, uint32_t(spp), bits_value}, {259, kShort, 1, 1},
      {262, kShort, 1, spp >= 3 ? 2u : 1u},    {273, kLong, 1, data_offset},
      {277, kShort, 1, uint32_t(spp)},       {278, kLong, 1, uint32_t(h)},
      {279, kLong, 1, uint32_t(data.size())}, {284, kShort, 1, 1},
      {339, kShort, 1, uint32_t(sample_format)}};
  std::vector<uint8_t> t = {'I', 'I', 42, 0};
  put_u32le(t, 8);
  put_u16le(t, n_entries);
  for (const Entry& e : entries) {
    put_u16le(t, e.tag);
    put_u16le(t, e.type);
    put_u32le(t, e.count);
    put_u32le(t, e.value);
  }
  put_u32le(t, 0);
  for (int i = 0; i < spp; ++i) put_u16le(t, bits);
  t.insert(t.end(), data.begin(), data.end());
  return t;
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
}

TEST(DecodeImage, ChannelOrderAcrossFormats) {
  // A 3x2 RGB image whose pixels are distinct in every channel.
  const int w = 3, h = 2;
  std::vector<uint8_t> rgb;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) rgb.insert(rgb.end(), {uint8_t(200 - x - 7 * y), uint8_t(50 + y), uint8_t(10 * x + 1)});
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> files = {
      {"rgb.png", make_png(w, h, 8, 2, rgb)}, {"rgb.bmp", make_bmp24(w, h, rgb)}, {"rgb.tiff", make_tiff(w, h, 3, 8, 1, rgb)}};
  for (const auto& [name, bytes] : files) {
    const Image img = decode_image_bytes(bytes.data(), bytes.size(), name);
    EXPECT_EQ(img.channels, 3) << name;
    EXPECT_EQ(img.width, w) << name;
    EXPECT_EQ(img.height, h) << name;
    EXPECT_EQ(img.pixels, rgb) << name;
  }
}

TEST(DecodeImage, RgbaKeepsAlpha) {
  const std::vector<uint8_t> rgba = {3, 2, 1, 4, 7, 6, 5, 255};
  const std::vector<uint8_t> png = make_png(2, 1, 8, 6, rgba);
  const Image img = decode_image_bytes(png.data(), png.size(), "rgba.png");
  ASSERT_EQ(img.channels, 4);
  EXPECT_EQ(img.pixels, rgba);
}

TEST(DecodeImage, SixteenBitKeepsHighByte) {
  // Big-endian 16-bit samples: 0x1280, 0x00ff, 0xffff, 0x0000.
  std::vector<uint8_t> png = make_png(4, 1, 16, 0, {0x12, 0x80, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00});
  Image img = decode_image_bytes(png.data(), png.size(), "gray16.png");
  ASSERT_EQ(img.channels, 1);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{0x12, 0x00, 0xff, 0x00}));

  // RGB 0xfe05, 0x0304, 0x0102: PIL 9.4 opens this as RGB (254, 3, 1).
  png = make_png(1, 1, 16, 2, {0xfe, 0x05, 0x03, 0x04, 0x01, 0x02});
  img = decode_image_bytes(png.data(), png.size(), "rgb16.png");
  ASSERT_EQ(img.channels, 3);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{0xfe, 0x03, 0x01}));

  png = make_png(1, 1, 16, 6, {0xfe, 0x05, 0x03, 0x04, 0x01, 0x02, 0x80, 0xff});
  img = decode_image_bytes(png.data(), png.size(), "rgba16.png");
  ASSERT_EQ(img.channels, 4);
  EXPECT_EQ(img.pixels, (std::vector<uint8_t>{0xfe, 0x03, 0x01, 0x80}));

  std::vector<uint8_t> floats(4 * sizeof(float));
  const float half = 0.5f;
  for (int i = 0; i < 4; ++i) std::memcpy(floats.data() + i * sizeof(float), &half, sizeof(float));
  const std::vector<uint8_t> tiff = make_tiff(2, 2, 1, 32, 3, floats);
  try {
    decode_image_bytes(tiff.data(), tiff.size(), "float.tiff");
    ADD_FAILURE() << "float TIFF accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("float.tiff: ", 0), 0u) << e.what();
  }
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
