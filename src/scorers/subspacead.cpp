#include "scorers/subspacead.h"

#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <random>

#include "image/preprocess.h"
#include "util/error.h"

namespace gad::scorers {
namespace {

// The paper's configuration (ViT-g/14, 40 blocks): image_res 672, layers −12…−18 = hidden states
// 23…29 of 40, i.e. 57.5 %…72.5 % of the depth; other depths take the states at the same
// fractions (at least one).
std::vector<int> default_layers(int64_t depth) {
  const auto first = static_cast<int>(std::lround(0.575 * depth)), last = static_cast<int>(std::lround(0.725 * depth));
  std::vector<int> layers;
  for (int e = std::max(1, last); e >= std::max(1, first); --e) layers.push_back(e - static_cast<int>(depth) - 1);
  return layers;
}

// Sums of the views' tokens: the pass-1 sum (mean) and the pass-2 sum and Gram matrix (scatter).
class Accumulator {
 public:
  void add(const at::Tensor& tokens, bool pass1, bool pass2) {
    const at::Tensor x = tokens.to(at::kDouble).reshape({-1, tokens.size(-1)});
    if (!sum1_.defined()) sum1_ = sum2_ = at::zeros({x.size(1)}, at::kDouble), gram2_ = at::zeros({x.size(1), x.size(1)}, at::kDouble);
    if (pass1) sum1_ = sum1_ + x.sum(0), n1_ += x.size(0);
    if (pass2) sum2_ = sum2_ + x.sum(0), gram2_ = gram2_ + x.t().mm(x), n2_ += x.size(0);
  }
  SubspaceFit fit(double pca_ev, int64_t pca_dim) const {
    if (n1_ < 2 || n1_ != n2_) fail("subspacead: the fit needs at least 2 patch tokens (got ", n1_, ")");
    const auto n = static_cast<double>(n1_);
    const at::Tensor mu = sum1_ / n;
    const at::Tensor scatter = gram2_ - at::outer(mu, sum2_) - at::outer(sum2_, mu) + n * at::outer(mu, mu);
    auto [values, vectors] = at::linalg_eigh(scatter / (n - 1));
    values = values.flip(0);
    vectors = vectors.flip(1);
    const int64_t C = values.size(0);
    int64_t k = C;
    if (pca_dim > 0) {
      k = std::min(pca_dim, C);
    } else {
      const at::Tensor ratio = values.cumsum(0) / values.sum();
      const double* r = ratio.data_ptr<double>();
      for (int64_t j = 0; j < C; ++j)
        if (r[j] >= pca_ev) {
          k = j + 1;
          break;
        }
    }
    return {mu, vectors.slice(1, 0, k).contiguous(), values};
  }

 private:
  at::Tensor sum1_, sum2_, gram2_;
  int64_t n1_ = 0, n2_ = 0;
};

}  // namespace

// Pillow 9.4: Image.rotate → transform(AFFINE) with the inverse matrix rounded to 15 decimals,
// then ImagingTransformAffine's NEAREST loop over output pixel centres: in 16.16 fixed point
// (affine_fixed) when every corner maps within ±32768, as it does for any image gad accepts, else
// in doubles; the source coordinate is accumulated by repeated addition and truncated (negative =
// outside). Pillow's transpose shortcuts for exactly 90, 180 and 270 degrees are not reproduced:
// a drawn angle never hits them.
Image pil_rotate_nearest(const Image& in, double degrees) {
  degrees = std::fmod(degrees, 360.0);
  if (degrees < 0) degrees += 360.0;
  if (degrees == 0) return in;
  const double a = -degrees * M_PI / 180.0;
  auto r15 = [](double v) { return std::nearbyint(v * 1e15) / 1e15; };  // Python round(v, 15)
  double m[6] = {r15(std::cos(a)), r15(std::sin(a)), 0.0, r15(-std::sin(a)), r15(std::cos(a)), 0.0};
  const double cx = in.width / 2.0, cy = in.height / 2.0;
  m[2] = m[0] * -cx + m[1] * -cy + m[2] + cx;
  m[5] = m[3] * -cx + m[4] * -cy + m[5] + cy;
  Image out = in;
  std::fill(out.pixels.begin(), out.pixels.end(), 0);
  const int ch = in.channels;
  auto copy = [&](int64_t xi, int64_t yi, int x, int y) {
    if (xi < 0 || xi >= in.width || yi < 0 || yi >= in.height) return;
    std::copy_n(&in.pixels[(static_cast<size_t>(yi) * in.width + xi) * ch], ch, &out.pixels[(static_cast<size_t>(y) * in.width + x) * ch]);
  };
  auto fits = [&](double x, double y) {
    return std::fabs(x * m[0] + y * m[1] + m[2]) < 32768.0 && std::fabs(x * m[3] + y * m[4] + m[5]) < 32768.0;
  };
  const double W = in.width, H = in.height;
  if (fits(0, 0) && fits(W, H) && fits(0, H) && fits(W, 0)) {
    auto fix = [](double v) { return static_cast<int64_t>(std::floor(v * 65536.0 + 0.5)); };
    const int64_t a0 = fix(m[0]), a1 = fix(m[1]), a3 = fix(m[3]), a4 = fix(m[4]);
    int64_t a2 = fix(m[2] + m[0] * 0.5 + m[1] * 0.5), a5 = fix(m[5] + m[3] * 0.5 + m[4] * 0.5);
    for (int y = 0; y < in.height; ++y, a2 += a1, a5 += a4) {
      int64_t xx = a2, yy = a5;
      for (int x = 0; x < in.width; ++x, xx += a0, yy += a3) copy(xx >> 16, yy >> 16, x, y);
    }
    return out;
  }
  double xo = m[2] + m[1] * 0.5 + m[0] * 0.5, yo = m[5] + m[4] * 0.5 + m[3] * 0.5;
  for (int y = 0; y < in.height; ++y, xo += m[1], yo += m[4]) {
    double xx = xo, yy = yo;
    for (int x = 0; x < in.width; ++x, xx += m[0], yy += m[3])
      copy(xx < 0 ? -1 : static_cast<int64_t>(xx), yy < 0 ? -1 : static_cast<int64_t>(yy), x, y);
  }
  return out;
}

namespace {

Image flipped(const Image& in, bool horizontal) {
  Image out = in;
  const size_t ch = in.channels, row = static_cast<size_t>(in.width) * ch;
  for (int y = 0; y < in.height; ++y)
    for (int x = 0; x < in.width; ++x) {
      const int sy = horizontal ? y : in.height - 1 - y, sx = horizontal ? in.width - 1 - x : x;
      std::copy_n(&in.pixels[sy * row + sx * ch], ch, &out.pixels[y * row + x * ch]);
    }
  return out;
}

class SubspaceAd : public Scorer {
 public:
  SubspaceAd(const Backbone& backbone, nlohmann::json options) : backbone_(backbone), options_(std::move(options)) {}
  std::string name() const override { return "subspacead"; }
  nlohmann::json options() const override { return options_; }
  bool uses_banks() const override { return false; }

  FeatureRequest features() const override {
    FeatureRequest r;
    if (backbone_.kind() != "dinov2") return r;
    r.square = options_["image_res"].get<int>();
    r.resample = Resample::Bicubic;
    r.final_norm = false;
    r.hf_positions = true;
    for (int layer : options_["layers"].get<std::vector<int>>()) r.hidden_states.push_back(static_cast<int>(backbone_.depth()) + 1 + layer);
    return r;
  }

  // The reference, then aug_count copies for the mean's pass, then aug_count for the scatter's.
  std::vector<Image> reference_views(const Image& image, size_t index) const override {
    const int A = options_["aug_count"].get<int>();
    const auto steps = options_["aug_list"].get<std::vector<std::string>>();
    std::seed_seq seeds{options_["seed"].get<uint64_t>(), static_cast<uint64_t>(index)};
    std::mt19937_64 rng(seeds);
    const Image rgb = to_rgb(image);
    std::vector<Image> views{image};
    for (int copy = 0; copy < 2 * A; ++copy) {
      Image v = rgb;
      for (const auto& step : steps) {
        const uint64_t draw = rng();
        if (step == "rotate") v = pil_rotate_nearest(v, 345.0 * static_cast<double>(draw >> 11) * 0x1.0p-53);
        else if (draw & 1) v = flipped(v, step == "hflip");
      }
      views.push_back(std::move(v));
    }
    return views;
  }

  ReferenceSet build(const Backbone& backbone, const std::vector<PixelTensor>& views,
                     const std::vector<ReferenceSource>& sources, const std::string& class_name) const override {
    const int64_t per_ref = 1 + 2 * options_["aug_count"].get<int64_t>();
    if (sources.empty() || views.size() != sources.size() * static_cast<size_t>(per_ref))
      fail("subspacead: expected ", per_ref, " views per reference image");
    Accumulator acc;
    std::vector<at::Tensor> globals;
    for (size_t i = 0; i < views.size(); ++i) {
      const Features f = backbone.encode(stack_pixels({views[i]}), features());
      const int64_t copy = static_cast<int64_t>(i) % per_ref;  // 0: the reference itself
      acc.add(fuse(f)[0], copy == 0 || copy <= (per_ref - 1) / 2, copy == 0 || copy > (per_ref - 1) / 2);
      globals.push_back(f.global);
    }
    const SubspaceFit fit = acc.fit(options_["pca_ev"].get<double>(), options_.value("pca_dim", int64_t{0}));
    ReferenceSet set = ReferenceSet::made_with(backbone, sources, class_name);
    set.globals = at::cat(globals).contiguous();
    set.scorer = name();
    set.views = per_ref;
    set.scorer_options = options_.dump();
    // The official scoring casts the float64 PCA to float32; the set keeps exactly that.
    set.state["pca_mean"] = fit.mean.to(at::kFloat).contiguous();
    set.state["pca_components"] = fit.components.to(at::kFloat).contiguous();
    set.state["pca_eigenvalues"] = fit.eigenvalues.to(at::kFloat).contiguous();
    return set;
  }

  void check(const ReferenceSet& set, const std::string& name) const override {
    if (!set.state.count("pca_mean") || !set.state.count("pca_components"))
      fail(name, ": reference set lacks its subspace (state.pca_mean, state.pca_components)");
  }

  std::vector<ScoreRecord> score(const ReferenceSet& set, const Features& queries) const override {
    // drop_k > 0: the first drop_k coefficients are zeroed, i.e. those components leave the subspace.
    const at::Tensor& U = set.state.at("pca_components");
    const int64_t drop = std::min<int64_t>(options_.value("drop_k", int64_t{0}), U.size(1));
    const at::Tensor scores = subspace_residuals(fuse(queries), set.state.at("pca_mean"), U.slice(1, drop));
    const int res = backbone_.kind() == "dinov2" ? options_["image_res"].get<int>() : static_cast<int>(backbone_.input_size());
    std::vector<ScoreRecord> out(static_cast<size_t>(scores.size(0)));
    for (size_t b = 0; b < out.size(); ++b) {
      const at::Tensor grid = scores[static_cast<int64_t>(b)].reshape({queries.grid_h, queries.grid_w}).contiguous();
      out[b].score = mean_top_percent(subspace_map(grid, res));
      out[b].s_patch = grid.max().item<double>();
      out[b].residual_map.assign(grid.data_ptr<float>(), grid.data_ptr<float>() + grid.numel());
    }
    return out;
  }

 private:
  // The mean of the taps ([B, P, C]); taps of different widths are concatenated instead.
  static at::Tensor fuse(const Features& f) {
    bool same = true;
    for (const auto& t : f.taps) same = same && t.size(-1) == f.taps[0].size(-1);
    return (same ? at::stack(f.taps).mean(0) : at::cat(f.taps, -1)).to(at::kFloat).contiguous();
  }
  const Backbone& backbone_;
  nlohmann::json options_;
};

int int_option(const nlohmann::json& o, const char* key, int lo, int hi, const std::string& context) {
  const auto& v = o[key];
  if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
    fail(context, ": '", key, "' must be an integer within ", lo, "..", hi, " (got ", v.dump(), ")");
  return v.get<int>();
}

}  // namespace

std::unique_ptr<Scorer> make_subspacead(const Backbone& backbone, const nlohmann::json& given, const std::string& context) {
  check_known_keys(given, {"image_res", "layers", "pca_ev", "pca_dim", "aug_count", "aug_list", "seed", "drop_k", "agg_method",
                           "score_method", "img_score_agg"},
                   context);
  // The official code's other switches, at the only values gad implements (the paper's).
  for (const auto& [key, value] : {std::pair<const char*, const char*>{"agg_method", "mean"}, {"score_method", "reconstruction"},
                                   {"img_score_agg", "mtop1p"}})
    if (given.contains(key) && given[key] != value)
      fail(context, ": '", key, "' ", given[key].dump(), " is not implemented (only \"", value, "\", the paper's)");
  const bool dino = backbone.kind() == "dinov2";
  for (const char* key : {"image_res", "layers"})
    if (!dino && given.contains(key))
      fail(context, ": '", key, "' applies to DINOv2 models; the ", backbone.kind(), " model uses its own input and taps");
  nlohmann::json o = {{"pca_ev", 0.99}, {"aug_count", 30}, {"aug_list", {"rotate"}}, {"seed", 42}};
  if (dino) o["image_res"] = 672, o["layers"] = default_layers(backbone.depth());
  o.update(given);
  if (dino) {
    int_option(o, "image_res", static_cast<int>(backbone.patch_size()), 4096, context);
    const auto& layers = o["layers"];
    const int depth = static_cast<int>(backbone.depth());
    if (!layers.is_array() || layers.empty()) fail(context, ": 'layers' must be a non-empty list of hidden-state indices");
    for (const auto& l : layers)
      if (!l.is_number_integer() || l.get<int>() < -(depth + 1) || l.get<int>() > depth)
        fail(context, ": 'layers' entry ", l.dump(), " is not a hidden state of this ", depth, "-block model (-", depth + 1,
             "..", depth, ")");
    nlohmann::json negative = nlohmann::json::array();  // one spelling: negative, as the official scripts write them
    for (const auto& l : layers) negative.push_back(l.get<int>() < 0 ? l.get<int>() : l.get<int>() - depth - 1);
    o["layers"] = negative;
  }
  if (!o["pca_ev"].is_number() || !(o["pca_ev"].get<double>() > 0 && o["pca_ev"].get<double>() <= 1))
    fail(context, ": 'pca_ev' must be a number in (0, 1] (got ", o["pca_ev"].dump(), ")");
  if (o.contains("pca_dim")) int_option(o, "pca_dim", 1, 1 << 20, context);
  if (o.contains("drop_k")) int_option(o, "drop_k", 0, 1 << 20, context);
  int_option(o, "aug_count", 0, 100, context);
  if (!o["seed"].is_number_unsigned() && !(o["seed"].is_number_integer() && o["seed"].get<int64_t>() >= 0))
    fail(context, ": 'seed' must be a non-negative integer (got ", o["seed"].dump(), ")");
  const auto& steps = o["aug_list"];
  if (!steps.is_array()) fail(context, ": 'aug_list' must be a list of rotate, hflip, vflip");
  for (const auto& s : steps)
    if (!s.is_string() || (s != "rotate" && s != "hflip" && s != "vflip"))
      fail(context, ": 'aug_list' entry ", s.dump(), " is not one of rotate, hflip, vflip");
  if (o["aug_count"].get<int>() > 0 && steps.empty()) fail(context, ": 'aug_count' > 0 needs a non-empty 'aug_list'");
  return std::make_unique<SubspaceAd>(backbone, std::move(o));
}

SubspaceFit fit_subspace(const std::vector<at::Tensor>& pass1, const std::vector<at::Tensor>& pass2, double pca_ev,
                         int64_t pca_dim) {
  Accumulator acc;
  for (const auto& t : pass1) acc.add(t, true, false);
  for (const auto& t : pass2) acc.add(t, false, true);
  return acc.fit(pca_ev, pca_dim);
}

at::Tensor subspace_residuals(const at::Tensor& fused, const at::Tensor& mean, const at::Tensor& components) {
  const at::Tensor mu = mean.to(at::kFloat), U = components.to(at::kFloat);
  const at::Tensor x = fused.to(at::kFloat);
  const at::Tensor reconstruction = at::matmul(at::matmul(x - mu, U), U.t()) + mu;
  return (x - reconstruction).pow(2).sum(-1);
}

at::Tensor subspace_map(const at::Tensor& grid_scores, int res) {
  const at::Tensor g = grid_scores.to(at::kFloat).contiguous();
  cv::Mat in(static_cast<int>(g.size(0)), static_cast<int>(g.size(1)), CV_32F, const_cast<float*>(g.data_ptr<float>()));
  cv::Mat resized, blurred;
  cv::resize(in, resized, cv::Size(res, res), 0, 0, cv::INTER_LINEAR);
  cv::GaussianBlur(resized, blurred, cv::Size(3, 3), 4.0, 4.0, cv::BORDER_REFLECT_101);
  return at::from_blob(blurred.ptr<float>(), {res, res}, at::kFloat).clone();
}

double mean_top_percent(const at::Tensor& map) {
  const int64_t n = std::max<int64_t>(1, map.numel() / 100);
  return std::get<0>(map.flatten().topk(n)).to(at::kDouble).mean().item<double>();
}

}  // namespace gad::scorers
