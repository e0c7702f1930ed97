#include "data/synthetic_anomaly.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace gad {
namespace {

constexpr int kAttempts = 20;
constexpr double kMinMeanChange = 12.0;  // grey levels inside the mask: below this it is not visible

// Uniform in [lo, hi) from the top 53 bits: portable, unlike std::uniform_real_distribution.
double uniform(std::mt19937_64& rng, double lo, double hi) {
  return lo + (hi - lo) * static_cast<double>(rng() >> 11) * 0x1.0p-53;
}
int uniform_int(std::mt19937_64& rng, int lo, int hi) {  // [lo, hi]
  return lo + static_cast<int>(rng() % static_cast<uint64_t>(hi - lo + 1));
}
double normal(std::mt19937_64& rng) {  // Box–Muller
  const double u1 = std::max(uniform(rng, 0, 1), 1e-12), u2 = uniform(rng, 0, 1);
  return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
}

cv::Mat as_float_mat(const Image& img) {
  cv::Mat m(img.height, img.width, CV_8UC(img.channels), const_cast<uint8_t*>(img.pixels.data()));
  cv::Mat f;
  m.convertTo(f, CV_32FC(img.channels));
  return f;
}

Image to_image(const cv::Mat& f, int channels) {
  cv::Mat u8;
  f.convertTo(u8, CV_8UC(channels));  // saturating
  Image out;
  out.width = u8.cols;
  out.height = u8.rows;
  out.channels = channels;
  out.pixels.assign(u8.data, u8.data + u8.total() * channels);
  return out;
}

// out = base·(1 − m) + overlay·m, m a [0,1] single-channel float mask.
cv::Mat blend(const cv::Mat& base, const cv::Mat& overlay, const cv::Mat& m) {
  std::vector<cv::Mat> mc(base.channels(), m);
  cv::Mat mask_c;
  cv::merge(mc, mask_c);
  cv::Mat inv = cv::Scalar::all(1.0) - mask_c;
  return base.mul(inv) + overlay.mul(mask_c);
}

cv::Mat cutpaste(const cv::Mat& img, const cv::Mat& donor_in, cv::Mat& mask, std::mt19937_64& rng) {
  const int W = img.cols, H = img.rows;
  cv::Mat donor = donor_in;
  if (donor.size() != img.size() || rng() % 2) donor = img;  // half the patches come from the image itself
  const double area = uniform(rng, 0.02, 0.15) * W * H, aspect = std::exp(uniform(rng, std::log(0.3), std::log(3.3)));
  const int pw = std::clamp(static_cast<int>(std::sqrt(area * aspect)), 2, W - 1);
  const int ph = std::clamp(static_cast<int>(std::sqrt(area / aspect)), 2, H - 1);
  cv::Rect from(uniform_int(rng, 0, W - pw), uniform_int(rng, 0, H - ph), pw, ph);
  cv::Rect to(uniform_int(rng, 0, W - pw), uniform_int(rng, 0, H - ph), pw, ph);
  cv::Mat patch = donor(from) * uniform(rng, 0.7, 1.3) + cv::Scalar::all(uniform(rng, -25, 25));
  cv::Mat out = img.clone();
  patch.copyTo(out(to));
  mask = cv::Mat::zeros(H, W, CV_32F);
  mask(to).setTo(1.0);
  return out;
}

cv::Mat blob(const cv::Mat& img, cv::Mat& mask, std::mt19937_64& rng) {
  const int W = img.cols, H = img.rows, side = std::min(W, H);
  mask = cv::Mat::zeros(H, W, CV_32F);
  const cv::Point centre(uniform_int(rng, 0, W - 1), uniform_int(rng, 0, H - 1));
  const cv::Size axes(std::max(1, static_cast<int>(uniform(rng, 0.05, 0.2) * side)),
                      std::max(1, static_cast<int>(uniform(rng, 0.05, 0.2) * side)));
  cv::ellipse(mask, centre, axes, uniform(rng, 0, 180), 0, 360, cv::Scalar(1.0), cv::FILLED, cv::LINE_AA);
  const double sigma = std::max(0.5, std::min(axes.width, axes.height) / 3.0);
  cv::GaussianBlur(mask, mask, cv::Size(0, 0), sigma);
  cv::Mat noise(H, W, img.type());
  const double shift = uniform(rng, 40, 110) * (rng() % 2 ? 1 : -1), spread = uniform(rng, 10, 60);
  float* p = noise.ptr<float>();
  for (size_t i = 0; i < noise.total() * noise.channels(); ++i) p[i] = static_cast<float>(shift + spread * normal(rng));
  cv::Mat overlay = img + noise;
  return blend(img, overlay, mask * uniform(rng, 0.7, 1.0));
}

cv::Mat scratch(const cv::Mat& img, cv::Mat& mask, std::mt19937_64& rng) {
  const int W = img.cols, H = img.rows, side = std::min(W, H);
  mask = cv::Mat::zeros(H, W, CV_32F);
  std::vector<cv::Point> pts{{uniform_int(rng, 0, W - 1), uniform_int(rng, 0, H - 1)}};
  const int segments = uniform_int(rng, 1, 3);
  double angle = uniform(rng, 0, 2 * M_PI);
  for (int s = 0; s < segments; ++s) {
    angle += uniform(rng, -0.6, 0.6);
    const double len = uniform(rng, 0.15, 0.4) * side;
    pts.emplace_back(pts.back().x + static_cast<int>(len * std::cos(angle)), pts.back().y + static_cast<int>(len * std::sin(angle)));
  }
  const int thickness = std::max(1, static_cast<int>(uniform(rng, 0.01, 0.04) * side));
  cv::polylines(mask, pts, false, cv::Scalar(1.0), thickness, cv::LINE_AA);
  const double level = rng() % 2 ? uniform(rng, 0, 50) : uniform(rng, 205, 255);
  cv::Mat overlay(img.size(), img.type(), cv::Scalar::all(level));
  return blend(img, overlay, mask);
}

}  // namespace

const std::vector<std::string>& synthetic_kinds() {
  static const std::vector<std::string> kinds = {"cutpaste", "blob", "scratch"};
  return kinds;
}

SyntheticAnomaly make_synthetic_anomaly(const Image& normal, const Image& donor, const std::string& kind,
                                        std::mt19937_64& rng) {
  const auto& kinds = synthetic_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
    fail("synthetic anomaly: unknown kind '", kind, "' (cutpaste, blob, scratch)");
  if (normal.width < 8 || normal.height < 8) fail("synthetic anomaly: image too small (", normal.width, "x", normal.height, ")");
  const cv::Mat img = as_float_mat(normal);
  const cv::Mat donor_f = donor.channels == normal.channels ? as_float_mat(donor) : img;
  for (int attempt = 0;; ++attempt) {
    cv::Mat mask;
    cv::Mat out = kind == "cutpaste" ? cutpaste(img, donor_f, mask, rng)
                  : kind == "blob"   ? blob(img, mask, rng)
                                     : scratch(img, mask, rng);
    cv::Mat binary = mask > 0.5f;  // CV_8U 0/255
    Image result = to_image(out, normal.channels);
    // Visible? Mean absolute change (after rounding to 8 bits) inside the mask.
    cv::Mat before(normal.height, normal.width, CV_8UC(normal.channels), const_cast<uint8_t*>(normal.pixels.data()));
    cv::Mat after(result.height, result.width, CV_8UC(result.channels), result.pixels.data());
    cv::Mat diff;
    cv::absdiff(before, after, diff);
    const int n = cv::countNonZero(binary);
    const cv::Scalar mean = cv::mean(diff, binary);
    double change = 0;
    for (int c = 0; c < normal.channels; ++c) change += mean[c] / normal.channels;
    if ((n > 0 && change >= kMinMeanChange) || attempt + 1 == kAttempts) {
      SyntheticAnomaly a;
      a.image = std::move(result);
      a.mask.assign(binary.data, binary.data + binary.total());
      return a;
    }
  }
}

}  // namespace gad
