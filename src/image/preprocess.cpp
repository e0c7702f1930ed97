#include "image/preprocess.h"

#include <algorithm>
#include <array>
#include <climits>
#include <cmath>
#include <cstdint>

#include "util/error.h"

// Pillow's weights are computed without fused multiply-add. Forbid contraction here so that
// -march/-ffp-contract settings elsewhere cannot move a weight across a fixed-point rounding edge.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace gad {
namespace {

constexpr int kPrecisionBits = 22;  // Pillow: 32 - 8 bits of result - 2 bits of headroom

// ---- Pillow's filters (libImaging/Resample.c) ----

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double bicubic_filter(double x) {
  const double a = -0.5;  // Keys cubic, as Pillow
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_for(Resample r) {
  return r == Resample::Bicubic ? Filter{bicubic_filter, 2.0} : Filter{bilinear_filter, 1.0};
}

// Fixed-point weights of one axis: output pixel i reads `count[i]` source pixels from `first[i]`
// with weights `weights[i * ksize ...]`.
struct AxisCoeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> weights;
};

// Pillow's precompute_coeffs() + normalize_coeffs_8bpc() for the full box [0, in_size).
AxisCoeffs precompute_coeffs(int in_size, int out_size, const Filter& filter) {
  const float in0 = 0.0f, in1 = static_cast<float>(in_size);  // Pillow's box is float
  const double scale = static_cast<double>(in1 - in0) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = filter.support * filterscale;

  AxisCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> k(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      k[x] = filter.fn((x + xmin - center + 0.5) * ss);
      ww += k[x];
    }
    for (int x = 0; x < xmax; ++x) {
      const double w = ww != 0.0 ? k[x] / ww : k[x];
      // Round half away from zero, as Pillow's normalize_coeffs_8bpc.
      c.weights[static_cast<size_t>(xx) * c.ksize + x] =
          w < 0 ? static_cast<int32_t>(-0.5 + w * (1 << kPrecisionBits))
                : static_cast<int32_t>(0.5 + w * (1 << kPrecisionBits));
    }
    c.first[xx] = xmin;
    c.count[xx] = std::max(xmax, 0);
  }
  return c;
}

// Pillow's clip8(): the accumulator holds value * 2^22 (+ 2^21 for rounding).
uint8_t clip8(int32_t acc) {
  if (acc < 0) return 0;
  const int32_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(v > 255 ? 255 : v);
}

// Horizontal pass over source rows [row0, row0 + rows).
Image resample_horizontal(const Image& in, int row0, int rows, int out_w, const AxisCoeffs& cx) {
  const int ch = in.channels;
  Image out{out_w, rows, ch, std::vector<uint8_t>(static_cast<size_t>(out_w) * rows * ch)};
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* src = in.pixels.data() + static_cast<size_t>(row0 + yy) * in.width * ch;
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(yy) * out_w * ch;
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = cx.weights.data() + static_cast<size_t>(xx) * cx.ksize;
      const uint8_t* s = src + static_cast<size_t>(cx.first[xx]) * ch;
      for (int c = 0; c < ch; ++c) {
        int32_t acc = 1 << (kPrecisionBits - 1);
        for (int x = 0; x < cx.count[xx]; ++x) acc += s[x * ch + c] * k[x];
        dst[xx * ch + c] = clip8(acc);
      }
    }
  }
  return out;
}

// Vertical pass; `row_shift` is the first source row kept by the horizontal pass.
Image resample_vertical(const Image& in, int row_shift, int out_h, const AxisCoeffs& cy) {
  const int ch = in.channels;
  const size_t row_len = static_cast<size_t>(in.width) * ch;
  Image out{in.width, out_h, ch, std::vector<uint8_t>(row_len * out_h)};
  for (int yy = 0; yy < out_h; ++yy) {
    const int32_t* k = cy.weights.data() + static_cast<size_t>(yy) * cy.ksize;
    const uint8_t* src = in.pixels.data() + static_cast<size_t>(cy.first[yy] - row_shift) * row_len;
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(yy) * row_len;
    for (size_t i = 0; i < row_len; ++i) {
      int32_t acc = 1 << (kPrecisionBits - 1);
      for (int y = 0; y < cy.count[yy]; ++y) acc += src[y * row_len + i] * k[y];
      dst[i] = clip8(acc);
    }
  }
  return out;
}

// Pillow's MULDIV255: round(a * b / 255) in integers.
uint8_t muldiv255(unsigned a, unsigned b) {
  const unsigned tmp = a * b + 128;
  return static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
}

bool has_alpha(const Image& img) { return img.channels == 2 || img.channels == 4; }

// RGBA -> "RGBa" (and LA -> "La"), Pillow's rgbA2rgba / lA2la.
Image premultiply(const Image& in) {
  Image out = in;
  const int ch = in.channels;
  for (size_t p = 0; p < out.pixels.size(); p += ch) {
    const unsigned alpha = out.pixels[p + ch - 1];
    for (int c = 0; c < ch - 1; ++c) out.pixels[p + c] = muldiv255(out.pixels[p + c], alpha);
  }
  return out;
}

// "RGBa" -> RGBA (and "La" -> LA), Pillow's rgba2rgbA / la2lA: integer division, clipped.
void unpremultiply(Image& img) {
  const int ch = img.channels;
  for (size_t p = 0; p < img.pixels.size(); p += ch) {
    const unsigned alpha = img.pixels[p + ch - 1];
    if (alpha == 255 || alpha == 0) continue;
    for (int c = 0; c < ch - 1; ++c)
      img.pixels[p + c] = static_cast<uint8_t>(std::min(255u, (255u * img.pixels[p + c]) / alpha));
  }
}

void check_image(const Image& img, const char* what) {
  if (img.width <= 0 || img.height <= 0) fail(what, ": empty image (", img.width, "x", img.height, ")");
  if (img.channels < 1 || img.channels > 4) fail(what, ": unsupported channel count ", img.channels);
  const size_t expected = static_cast<size_t>(img.width) * img.height * img.channels;
  if (img.pixels.size() != expected)
    fail(what, ": pixel buffer holds ", img.pixels.size(), " bytes, expected ", expected);
}

// Per-channel lookup u8 -> float of one channel's transform (the value depends only on the byte).
using ChannelLut = std::array<float, 256>;

// Copies the size_w x size_h window at (left, top) of `img` into CHW floats, converting to RGB the
// way PIL's convert('RGB') does: L (and LA) replicated, alpha dropped.
std::vector<float> window_to_chw(const Image& img, int left, int top, int out_w, int out_h,
                                 const std::array<ChannelLut, 3>& lut) {
  std::vector<float> chw(static_cast<size_t>(3) * out_w * out_h);
  const int ch = img.channels;
  for (int c = 0; c < 3; ++c) {
    const int src_c = ch < 3 ? 0 : c;
    float* dst = chw.data() + static_cast<size_t>(c) * out_w * out_h;
    for (int y = 0; y < out_h; ++y) {
      const uint8_t* row = img.pixels.data() + (static_cast<size_t>(top + y) * img.width + left) * ch;
      for (int x = 0; x < out_w; ++x) *dst++ = lut[c][row[x * ch + src_c]];
    }
  }
  return chw;
}

// torchvision ToTensor: float32(u8) / 255, one correctly rounded float32 division.
float to_unit(int v) { return static_cast<float>(v) / 255.0f; }

// torchvision Resize(int): shorter side -> size, longer side int(size * long / short) in double.
void shorter_side_to(int w, int h, int size, int& out_w, int& out_h) {
  const int shorter = std::min(w, h), longer = std::max(w, h);
  const double new_long = static_cast<double>(size) * longer / shorter;
  if (new_long >= static_cast<double>(INT_MAX / 4))
    fail("clip_preprocess: image ", w, "x", h, " has an extreme aspect ratio");
  const int resized_long = static_cast<int>(new_long);
  out_w = w <= h ? size : resized_long;
  out_h = w <= h ? resized_long : size;
}

// ToTensor + Normalize per 8-bit level: the Python floats rounded to float32 (as
// torch.as_tensor(mean, dtype=float32) does), y = (x - mean) / std with float32 operations.
std::array<ChannelLut, 3> normalise_lut(const std::array<double, 3>& mean, const std::array<double, 3>& stdev) {
  std::array<ChannelLut, 3> lut{};
  for (int c = 0; c < 3; ++c) {
    const float m = static_cast<float>(mean[c]), s = static_cast<float>(stdev[c]);
    for (int v = 0; v < 256; ++v) lut[c][v] = (to_unit(v) - m) / s;
  }
  return lut;
}

}  // namespace

Image resize_pil(const Image& in, int out_w, int out_h, Resample filter) {
  check_image(in, "resize_pil");
  if (out_w <= 0 || out_h <= 0) fail("resize_pil: invalid output size ", out_w, "x", out_h);
  if (out_w == in.width && out_h == in.height) return in;  // Pillow returns a copy, no round trip

  const bool alpha = has_alpha(in);
  const Image premultiplied = alpha ? premultiply(in) : Image{};
  const Image& src = alpha ? premultiplied : in;
  const Filter f = filter_for(filter);

  const AxisCoeffs cy = precompute_coeffs(in.height, out_h, f);
  const int row_first = cy.first.front();
  const int row_last = cy.first.back() + cy.count.back();

  Image out;
  if (out_w != in.width) {
    const AxisCoeffs cx = precompute_coeffs(in.width, out_w, f);
    Image horizontal = resample_horizontal(src, row_first, row_last - row_first, out_w, cx);
    out = out_h != in.height ? resample_vertical(horizontal, row_first, out_h, cy) : std::move(horizontal);
  } else {
    out = resample_vertical(src, 0, out_h, cy);
  }
  if (alpha) unpremultiply(out);
  return out;
}

int center_crop_offset(int resized, int size) {
  const int d = resized - size;
  const int r = d & 1;         // d = 2q + r, r in {0, 1} (also for negative d)
  const int q = (d - r) / 2;   // floor(d / 2)
  if (r == 0) return q;
  return (q & 1) == 0 ? q : q + 1;  // q + 0.5 rounds to the even neighbour
}

PixelTensor clip_preprocess(const Image& img, int size) {
  check_image(img, "clip_preprocess");
  if (size <= 0) fail("clip_preprocess: invalid size ", size);
  CropGeometry g;
  g.src_w = img.width;
  g.src_h = img.height;
  g.size = size;
  shorter_side_to(img.width, img.height, size, g.resized_w, g.resized_h);
  g.crop_left = center_crop_offset(g.resized_w, size);
  g.crop_top = center_crop_offset(g.resized_h, size);

  const Image resized = resize_pil(img, g.resized_w, g.resized_h, Resample::Bicubic);

  const auto lut = normalise_lut({0.48145466, 0.4578275, 0.40821073}, {0.26862954, 0.26130258, 0.27577711});

  PixelTensor t;
  t.height = t.width = size;
  t.geometry = g;
  t.chw = window_to_chw(resized, g.crop_left, g.crop_top, size, size, lut);
  return t;
}

Image to_rgb(const Image& img) {
  if (img.channels == 3) return img;
  Image rgb = img;
  rgb.channels = 3;
  rgb.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
  for (size_t i = 0, n = static_cast<size_t>(img.width) * img.height; i < n; ++i)
    for (int c = 0; c < 3; ++c) rgb.pixels[i * 3 + c] = img.pixels[i * img.channels + (img.channels == 1 ? 0 : c)];
  return rgb;
}

PixelTensor square_preprocess(const Image& img, int size, int patch, Resample filter) {
  check_image(img, "square_preprocess");
  if (size < patch || patch <= 0) fail("square_preprocess: an input of ", size, " px is below one ", patch, " px patch");
  CropGeometry g;
  g.src_w = img.width;
  g.src_h = img.height;
  g.resized_w = g.resized_h = g.size = size;
  g.crop_w = g.crop_h = size - size % patch;
  const Image resized = resize_pil(to_rgb(img), size, size, filter);
  const auto lut = normalise_lut({0.485, 0.456, 0.406}, {0.229, 0.224, 0.225});  // ImageNet
  PixelTensor t;
  t.width = t.height = g.crop_w;
  t.geometry = g;
  t.chw = window_to_chw(resized, 0, 0, g.crop_w, g.crop_h, lut);
  return t;
}

PixelTensor dino_preprocess(const Image& img, int smaller_edge, int patch) {
  check_image(img, "dino_preprocess");
  if (smaller_edge < patch || patch <= 0) fail("dino_preprocess: --resolution ", smaller_edge, " is below one ", patch, " px patch");
  const Image rgb = to_rgb(img);  // cv2.imread(IMREAD_COLOR): gray replicated, alpha dropped
  CropGeometry g;
  g.src_w = img.width;
  g.src_h = img.height;
  shorter_side_to(img.width, img.height, smaller_edge, g.resized_w, g.resized_h);
  g.crop_w = g.resized_w - g.resized_w % patch;
  g.crop_h = g.resized_h - g.resized_h % patch;
  g.size = std::min(g.crop_w, g.crop_h);
  g.stretch_to_image = true;
  const Image resized = resize_pil(rgb, g.resized_w, g.resized_h, Resample::Bicubic);

  const auto lut = normalise_lut({0.485, 0.456, 0.406}, {0.229, 0.224, 0.225});  // ImageNet
  PixelTensor t;
  t.width = g.crop_w;
  t.height = g.crop_h;
  t.geometry = g;
  t.chw = window_to_chw(resized, 0, 0, g.crop_w, g.crop_h, lut);
  return t;
}

PixelTensor lite_preprocess(const Image& img, int size) {
  check_image(img, "lite_preprocess");
  if (size <= 0) fail("lite_preprocess: invalid size ", size);
  const Image resized = resize_pil(img, size, size, Resample::Bilinear);

  std::array<ChannelLut, 3> lut{};
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) lut[c][v] = to_unit(v);

  PixelTensor t;
  t.height = t.width = size;
  t.geometry = CropGeometry{img.width, img.height, size, size, 0, 0, size};
  t.chw = window_to_chw(resized, 0, 0, size, size, lut);
  return t;
}

}  // namespace gad
