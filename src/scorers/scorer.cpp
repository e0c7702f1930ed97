// The registry, the one path from images to records, and the two scorers that score against
// patch banks with their own chains: InCTRL (inctrl/scorer.h) and AnomalyDINO (dino/anomalydino.h).
#include "scorers/scorer.h"

#include <numeric>

#include "dino/anomalydino.h"
#include "inctrl/scorer.h"
#include "scorers/knn.h"
#include "scorers/subspacead.h"
#include "scorers/winclip.h"
#include "util/error.h"

namespace gad::scorers {
namespace {

double scalar_at(const at::Tensor& t, int64_t i) { return t.defined() ? t[i].item<double>() : 0.0; }

std::vector<float> row(const at::Tensor& t, int64_t b) {
  at::Tensor r = t[b].to(at::kFloat).contiguous();
  return {r.data_ptr<float>(), r.data_ptr<float>() + r.numel()};
}

class Inctrl : public Scorer {
 public:
  Inctrl(const Backbone& backbone, std::optional<InctrlHeads> heads) : scorer_(backbone, std::move(heads)) {}
  std::string name() const override { return "inctrl"; }
  bool uses_text_prior() const override { return true; }
  bool uses_heads() const override { return true; }
  std::vector<ScoreRecord> score(const ReferenceSet& set, const Features& queries) const override {
    const InctrlScores s = scorer_.score(set, queries);
    std::vector<ScoreRecord> out(static_cast<size_t>(s.final_score.size(0)));
    for (size_t b = 0; b < out.size(); ++b) {
      ScoreRecord& r = out[b];
      const auto i = static_cast<int64_t>(b);
      r.score = scalar_at(s.final_score, i);
      r.s_patch = scalar_at(s.s_patch, i);
      r.s_img = scalar_at(s.s_img, i);
      r.s_text = scalar_at(s.s_text, i);
      r.s_hol = scalar_at(s.s_hol, i);
      r.has_text = s.s_text.defined();
      r.has_heads = s.s_hol.defined();
      r.has_img = s.s_img.defined();
      r.residual_map = row(s.residual_map, i);
      if (s.holistic_map.defined()) r.holistic_map = row(s.holistic_map, i);
    }
    return out;
  }

 private:
  InctrlScorer scorer_;
};

class AnomalyDino : public Scorer {
 public:
  AnomalyDino(const Backbone& backbone, bool rotate) : backbone_(backbone), rotate_(rotate) {}
  std::string name() const override { return "anomalydino"; }
  std::vector<Image> reference_views(const Image& image, size_t) const override {
    std::vector<Image> views{image};
    for (int v = 1; rotate_ && v < kAnomalyDinoRotations; ++v) views.push_back(rotate_image(image, 45.0 * v));
    return views;
  }
  std::vector<ScoreRecord> score(const ReferenceSet& set, const Features& queries) const override {
    const at::Tensor d = anomalydino_distances(backbone_, set, queries), score = mean_top1p(d), top = std::get<0>(d.max(1));
    std::vector<ScoreRecord> out(static_cast<size_t>(d.size(0)));
    for (size_t b = 0; b < out.size(); ++b) {
      out[b].score = score[static_cast<int64_t>(b)].item<double>();
      out[b].s_patch = top[static_cast<int64_t>(b)].item<double>();  // the largest patch distance
      out[b].residual_map = row(d, static_cast<int64_t>(b));
    }
    return out;
  }

 private:
  const Backbone& backbone_;
  bool rotate_;
};

}  // namespace

ReferenceSet Scorer::build(const Backbone& backbone, const std::vector<PixelTensor>& views,
                           const std::vector<ReferenceSource>& sources, const std::string& class_name) const {
  ReferenceSet set = ReferenceSet::build(backbone, views, sources, class_name, uses_text_prior());
  set.scorer = name();
  set.scorer_options = options().dump();
  set.views = static_cast<int64_t>(views.size() / std::max<size_t>(1, sources.size()));
  return set;
}

void Scorer::check(const ReferenceSet& set, const std::string& name) const {
  if (set.banks.empty()) fail(name, ": reference set lacks its patch banks (bank.<l>)");
}

void check_known_keys(const nlohmann::json& options, const std::vector<std::string>& known, const std::string& context) {
  if (!options.is_object()) fail(context, ": must be a JSON object (got ", options.type_name(), ")");
  for (const auto& [key, value] : options.items())
    if (std::find(known.begin(), known.end(), key) == known.end()) {
      std::string list;
      for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
      fail(context, ": unknown key '", key, "' (", list.empty() ? "this scorer takes no options" : "known: " + list, ")");
    }
}

std::string scorer_name(gad::Scorer s, const Backbone& backbone) {
  switch (s) {
    case gad::Scorer::Auto: return backbone.kind() == "dinov2" ? "anomalydino" : "inctrl";
    case gad::Scorer::InCTRL: return "inctrl";
    case gad::Scorer::AnomalyDINO: return "anomalydino";
    case gad::Scorer::SubspaceAD: return "subspacead";
    case gad::Scorer::MuSc: return "musc";
    case gad::Scorer::PatchKNN: return "patch-knn";
    case gad::Scorer::ImageKNN: return "image-knn";
    case gad::Scorer::WinCLIP: return "winclip";
  }
  return "inctrl";
}

std::unique_ptr<Scorer> make_scorer(const std::string& name, const Backbone& backbone,
                                    const std::optional<InctrlHeads>& heads, const nlohmann::json& options,
                                    const std::string& context) {
  if (name == "inctrl") {
    check_known_keys(options, {}, context);
    return std::make_unique<Inctrl>(backbone, heads);
  }
  if (name == "anomalydino") {
    check_known_keys(options, {"rotate"}, context);
    if (options.contains("rotate") && !options["rotate"].is_boolean()) fail(context, ": 'rotate' must be true or false");
    return std::make_unique<AnomalyDino>(backbone, options.value("rotate", false));
  }
  if (name == "subspacead") return make_subspacead(backbone, options, context);
  if (name == "patch-knn") return make_patch_knn(backbone, options, context);
  if (name == "image-knn") return make_image_knn(backbone, options, context);
  if (name == "winclip") return make_winclip(backbone, options, context);
  if (name == "musc") fail("scorer musc: is zero-shot (it scores a collection against itself); use score_zero_shot / --zero-shot");
  std::string all;
  for (const auto& n : scorer_names()) all += (all.empty() ? "" : ", ") + n;
  fail(context, ": unknown scorer '", name, "' (known: ", all, ")");
}

std::vector<std::string> scorer_names() {
  return {"inctrl", "anomalydino", "subspacead", "patch-knn", "image-knn", "winclip", "musc"};
}

std::vector<PixelTensor> reference_views(const Backbone& backbone, const Scorer& scorer, const Image& image, size_t index) {
  std::vector<PixelTensor> views;
  for (const Image& v : scorer.reference_views(image, index)) views.push_back(backbone.preprocess(v, scorer.features()));
  return views;
}

void encode_batches(const Backbone& backbone, const FeatureRequest& request, const std::vector<PixelTensor>& pixels,
                    const std::function<void(const PassImages&, const Features&)>& use) {
  if (pixels.empty()) return;
  if (backbone.grid() || request.square) {
    PassImages all(pixels.size());
    std::iota(all.begin(), all.end(), size_t{0});
    return use(all, backbone.encode(stack_pixels(pixels), request));
  }
  for (size_t i = 0; i < pixels.size(); ++i) use({i}, backbone.encode(stack_pixels({pixels[i]}), request));
}

std::vector<ScoreRecord> records_of(const Scorer& scorer, const ReferenceSet& set, const Features& features,
                                    const std::vector<PixelTensor>& pixels, const PassImages& images) {
  std::vector<ScoreRecord> out = scorer.score(set, features);
  for (size_t b = 0; b < out.size(); ++b) {
    out[b].grid = static_cast<int>(features.grid_w);
    out[b].geometry = pixels[images[b]].geometry;
  }
  return out;
}

bool same_request(const FeatureRequest& a, const FeatureRequest& b) {
  return a.square == b.square && a.resample == b.resample && a.hidden_states == b.hidden_states &&
         a.final_norm == b.final_norm && a.hf_positions == b.hf_positions && a.windows == b.windows;
}

}  // namespace gad::scorers
