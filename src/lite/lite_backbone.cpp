#include "lite/lite_backbone.h"

#include <filesystem>
#include <sstream>

#include "model/weights.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

// Weights plus the tap choice: a reference set built with other taps must not load.
std::string lite_fingerprint(const TfjsModel& m, const LiteTaps& t) {
  std::string s = fingerprint(m.weights()) + "|taps=" + join(t.patch) + "|global=" + t.global;
  return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size()).substr(0, 16);
}

}  // namespace

LiteBackbone::LiteBackbone(TfjsModel model, LiteTaps taps) : model_(std::move(model)), taps_(std::move(taps)) {
  const std::string& src = model_.source();
  if (taps_.patch.empty()) fail(src, ": the lite backbone needs at least one patch tap");
  for (const auto& t : taps_.patch) {
    if (!model_.has_layer(t)) fail(src, ": patch tap '", t, "' is not a layer of model '", model_.name(), "'");
    auto s = model_.output_shape(t);
    if (s.size() != 3 || s[0] <= 0 || s[0] != s[1]) fail(src, ": patch tap '", t, "' must give a square [h,w,C] map");
  }
  if (!model_.has_layer(taps_.global)) fail(src, ": global tap '", taps_.global, "' is not a layer of model '", model_.name(), "'");
  auto g = model_.output_shape(taps_.global);
  if (g.size() != 1 || g[0] <= 0) fail(src, ": global tap '", taps_.global, "' must give a flat [D] feature");
  auto in = model_.input_shape();
  if (in[0] <= 0 || in[0] != in[1] || in[2] != 3) fail(src, ": the lite backbone needs a fixed square RGB input, not [H,W,C] = [", in[0], ",", in[1], ",", in[2], "]");
  embed_dim_ = g[0];
  grid_ = model_.output_shape(taps_.patch[0])[0];
  input_size_ = in[0];
  fingerprint_ = lite_fingerprint(model_, taps_);
}

std::string LiteBackbone::description() const {
  auto it = model_.metadata().find("description");
  std::string what = it != model_.metadata().end()
                         ? it->second
                         : model_.name() + " (" + std::filesystem::path(model_.source()).filename().string() + ")";
  std::ostringstream o;
  o << "lite " << what << " " << input_size_ << " px, taps " << join(taps_.patch) << ", global " << taps_.global;
  return o.str();
}

PixelTensor LiteBackbone::preprocess(const Image& image) const {
  return lite_preprocess(image, static_cast<int>(input_size_));
}

Features LiteBackbone::encode_impl(const at::Tensor& pixels) const {
  std::vector<std::string> names = taps_.patch;
  names.push_back(taps_.global);
  auto out = model_.run(pixels, names, TfjsModel::Layout::NCHW);
  Features f;
  f.global = out.at(taps_.global);
  for (const auto& t : taps_.patch) {
    const at::Tensor& m = out.at(t);  // [B,h,w,C]
    f.taps.push_back(m.reshape({m.size(0), m.size(1) * m.size(2), m.size(3)}));
  }
  return f;
}

}  // namespace gad
