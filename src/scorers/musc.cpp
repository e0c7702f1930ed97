#include "scorers/musc.h"

#include <algorithm>
#include <cmath>

#include "scorers/scorer.h"
#include "util/error.h"

namespace gad::scorers {
namespace {

// The official layer choice: ViT-L/14 (24 blocks) 5, 11, 17, 23; ViT-B/14 (12) 2, 5, 8, 11 — the
// last block of each quarter; other depths the same way (3 blocks: 0, 1, 2).
std::vector<int> default_layers(int64_t depth) {
  std::vector<int> layers;
  for (int64_t q = 1; q <= 4; ++q) {
    const auto b = static_cast<int>(depth * q / 4 - 1);
    if (b >= 0 && (layers.empty() || layers.back() != b)) layers.push_back(b);
  }
  return layers;
}

std::vector<int> int_list(const nlohmann::json& o, const char* key, int lo, int hi, const std::string& context) {
  const auto& v = o[key];
  bool ok = v.is_array() && !v.empty();
  for (const auto& x : v) ok = ok && x.is_number_integer() && x.get<int64_t>() >= lo && x.get<int64_t>() <= hi;
  if (!ok) fail(context, ": '", key, "' must be a non-empty list of integers within ", lo, "..", hi, " (got ", v.dump(), ")");
  return v.get<std::vector<int>>();
}

// Nearest-patch distances from every patch of `zi` [L, C] to each image of `others` [J, L, C]:
// [J, L], Euclidean as torch.cdist's matrix form computes it, min_q √(‖a‖² + ‖b_q‖² − 2a·b_q):
// the nearest q maximises a·b_q − ‖b_q‖²/2, found in one in-place pass over the products.
at::Tensor nearest_distances(const at::Tensor& zi, const at::Tensor& others) {
  const int64_t J = others.size(0), L = others.size(1);
  const at::Tensor flat = others.reshape({J * L, -1});
  at::Tensor cross = at::matmul(zi, flat.t());                                      // [Li, J·L]
  cross.sub_(flat.pow(2).sum(-1).mul_(0.5).unsqueeze(0));
  const at::Tensor best = std::get<0>(cross.view({zi.size(0), J, L}).max(-1));      // [Li, J]
  const at::Tensor d2 = zi.pow(2).sum(-1, true) - 2 * best;
  return d2.clamp_min(0).sqrt().t().contiguous();                                   // [J, Li]
}

// Others are taken a block at a time: products of at most ~4M floats (16 MB) per block, so memory
// does not grow with the collection, and GEMMs large enough that thread start-up does not
// dominate. The block depends only on the patch count, never on the caller's batch or threads.
int64_t block_images(int64_t patches) { return std::max<int64_t>(1, (int64_t{1} << 22) / (patches * patches)); }

// MSM for one (r, layer): Z [N, L, C] → [N, L] float64.
at::Tensor mutual_scores(const at::Tensor& z, double topmin_min, double topmin_max, const std::function<bool()>& interrupted) {
  const int64_t N = z.size(0), L = z.size(1);
  const auto k_min = static_cast<int64_t>((N - 1) * topmin_min), k_max = static_cast<int64_t>((N - 1) * topmin_max);
  at::Tensor out = at::empty({N, L}, at::kDouble);
  const int64_t block = block_images(L);
  for (int64_t i = 0; i < N; ++i) {
    if (interrupted && interrupted()) fail("zero-shot: interrupted during the mutual scoring; nothing scored");
    std::vector<at::Tensor> d;
    for (int64_t j0 = 0; j0 < N; j0 += block) d.push_back(nearest_distances(z[i], z.slice(0, j0, std::min(N, j0 + block))));
    at::Tensor all = at::cat(d);                                           // [N, L]
    all = at::cat({all.slice(0, 0, i), all.slice(0, i + 1)});              // j ≠ i
    const at::Tensor sorted = std::get<0>(all.sort(0));
    out[i].copy_(sorted.slice(0, k_min, k_max).mean(0).to(at::kDouble));
  }
  return out;
}

// RsCIN (DINO path): raw CLS dot products, k largest per row, row-normalised, averaged over k.
at::Tensor rescore(const at::Tensor& ac, const at::Tensor& cls, const std::vector<int>& k_list) {
  if (std::find(k_list.begin(), k_list.end(), 0) != k_list.end()) return ac.to(at::kFloat);
  const at::Tensor s = ((ac - ac.min()) / (ac.max() - ac.min())).to(at::kFloat);
  const at::Tensor w = at::matmul(cls.to(at::kFloat), cls.to(at::kFloat).t());
  at::Tensor total = at::zeros_like(s);
  for (int k : k_list) {
    const at::Tensor idx = std::get<1>(w.topk(k, 1));
    const at::Tensor masked = at::zeros_like(w).scatter(1, idx, w.gather(1, idx));
    const at::Tensor p = masked / masked.sum(1, true);
    total = total + at::matmul(p, s);
  }
  return total / static_cast<double>(k_list.size());
}

}  // namespace

nlohmann::json MuscOptions::to_json() const {
  nlohmann::json j = {{"r_list", r_list}, {"topmin", {topmin_min, topmin_max}}, {"rscin_k_list", rscin_k_list}};
  if (image_size) j["image_size"] = image_size, j["feature_layers"] = feature_layers;
  return j;
}

MuscOptions musc_options(const Backbone& backbone, const nlohmann::json& given, const std::string& context) {
  check_known_keys(given, {"image_size", "feature_layers", "r_list", "topmin", "rscin_k_list"}, context);
  const bool dino = backbone.kind() == "dinov2";
  for (const char* key : {"image_size", "feature_layers"})
    if (!dino && given.contains(key))
      fail(context, ": '", key, "' applies to DINOv2 models; the ", backbone.kind(), " model uses its own input and taps");
  MuscOptions o;
  nlohmann::json j = o.to_json();
  if (dino) j["image_size"] = 518, j["feature_layers"] = default_layers(backbone.depth());
  j.update(given);
  if (dino) {
    const auto& s = j["image_size"];
    const int64_t patch = backbone.patch_size();
    if (!s.is_number_integer() || s.get<int64_t>() < patch || s.get<int64_t>() > 4096 || s.get<int64_t>() % patch != 0)
      fail(context, ": 'image_size' must be a multiple of ", patch, " within ", patch, "..4096 (got ", s.dump(), ")");
    o.image_size = s.get<int>();
    o.feature_layers = int_list(j, "feature_layers", 0, static_cast<int>(backbone.depth()) - 1, context);
  }
  o.r_list = int_list(j, "r_list", 1, 15, context);
  for (int r : o.r_list)
    if (r % 2 == 0) fail(context, ": 'r_list' entry ", r, " is even (the neighbourhood must have a centre)");
  o.rscin_k_list = int_list(j, "rscin_k_list", 0, 1000, context);
  const auto& t = j["topmin"];
  if (!t.is_array() || t.size() != 2 || !t[0].is_number() || !t[1].is_number() || !(t[0].get<double>() >= 0) ||
      !(t[0].get<double>() < t[1].get<double>()) || !(t[1].get<double>() <= 1))
    fail(context, ": 'topmin' must be [min, max] fractions with 0 <= min < max <= 1 (got ", t.dump(), ")");
  o.topmin_min = t[0].get<double>();
  o.topmin_max = t[1].get<double>();
  return o;
}

FeatureRequest musc_request(const Backbone& backbone, const MuscOptions& options) {
  FeatureRequest r;
  if (backbone.kind() != "dinov2") return r;
  r.square = options.image_size;
  r.resample = Resample::Bilinear;
  r.final_norm = true;
  for (int b : options.feature_layers) r.hidden_states.push_back(b + 1);
  return r;
}

int64_t musc_min_images(const MuscOptions& options) {
  int64_t n = 2;
  while (static_cast<int64_t>((n - 1) * options.topmin_max) - static_cast<int64_t>((n - 1) * options.topmin_min) < 1) ++n;
  for (int k : options.rscin_k_list) n = std::max<int64_t>(n, k);
  return n;
}

at::Tensor lnamd(const at::Tensor& tokens, int64_t grid, int r) {
  const at::Tensor t = tokens.to(at::kFloat);
  const at::Tensor mean = t.mean(), var = (t - mean).pow(2).mean();
  const at::Tensor x = ((t - mean) / (var + 1e-5).sqrt()).t().reshape({1, -1, grid, grid});  // [1, C, g, g]
  const at::Tensor a = r == 1 ? x : at::avg_pool2d(x, {r, r}, {1, 1}, {(r - 1) / 2, (r - 1) / 2}, false, true);
  const at::Tensor z = a.reshape({a.size(1), grid * grid}).t();  // [L, C]
  return (z / z.norm(2, 1, true)).contiguous();
}

at::Tensor musc_upsample(const at::Tensor& grid_map, int size) {
  return at::upsample_bilinear2d(grid_map.to(at::kDouble).unsqueeze(0).unsqueeze(0), {size, size}, true)[0][0];
}

MuscResult musc_score(const std::vector<at::Tensor>& layers, const at::Tensor& cls, int64_t grid, int map_size,
                      const MuscOptions& options, bool keep_msm, const std::function<bool()>& interrupted) {
  const int64_t N = cls.size(0);
  if (N < musc_min_images(options))
    fail("zero-shot: MuSc needs a collection of at least ", musc_min_images(options), " images with these options (got ", N,
         "); the official code returns NaN there");
  MuscResult out;
  at::Tensor sum_r = at::zeros({N, grid * grid}, at::kDouble);
  for (int r : options.r_list) {
    at::Tensor sum_l = at::zeros({N, grid * grid}, at::kDouble);
    for (const at::Tensor& layer : layers) {
      at::Tensor z = at::empty_like(layer, at::kFloat);
      for (int64_t i = 0; i < N; ++i) z[i].copy_(lnamd(layer[i], grid, r));
      const at::Tensor s = mutual_scores(z, options.topmin_min, options.topmin_max, interrupted);
      if (keep_msm) out.msm.push_back(s);
      sum_l = sum_l + s;
    }
    sum_r = sum_r + sum_l / static_cast<double>(layers.size());
  }
  out.patch_map = (sum_r / static_cast<double>(options.r_list.size())).view({N, grid, grid});
  out.ac_score = at::empty({N}, at::kDouble);
  for (int64_t i = 0; i < N; ++i) out.ac_score[i] = musc_upsample(out.patch_map[i], map_size).max();
  out.score = rescore(out.ac_score, cls, options.rscin_k_list);
  return out;
}

}  // namespace gad::scorers
