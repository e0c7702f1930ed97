#include "scorers/winclip.h"

#include "clip/clip_backbone.h"
#include "util/error.h"

namespace gad::scorers {
namespace {

constexpr int kScales[] = {2, 3};

at::Tensor normalise(const at::Tensor& x) { return x / x.norm(2, -1, true); }

const ClipBackbone& clip_of(const Backbone& backbone, const std::string& context) {
  const auto* clip = dynamic_cast<const ClipBackbone*>(&backbone);
  if (!clip)
    fail(context, ": WinCLIP compares CLIP window and text embeddings and needs a CLIP model; this model is ",
         backbone.description());
  return *clip;
}

std::string window_key(int scale) { return "window." + std::to_string(scale); }

class WinClip : public Scorer {
 public:
  explicit WinClip(const ClipBackbone& clip) : clip_(clip) {
    const int g = static_cast<int>(clip.grid());
    for (int s : kScales) {
      const at::Tensor patches = window_patches(g, s);
      // cover[w, p] = 1 when window w covers patch p: the harmonic aggregation as a product.
      cover_.push_back(at::zeros({patches.size(0), g * g}).scatter_(1, patches, 1.0));
    }
  }
  std::string name() const override { return "winclip"; }
  bool uses_text_prior() const override { return true; }
  bool uses_banks() const override { return false; }
  FeatureRequest features() const override {
    FeatureRequest r;
    r.hidden_states = {clip_.config().vision.layers};
    r.final_norm = false;
    r.windows.assign(std::begin(kScales), std::end(kScales));
    return r;
  }

  ReferenceSet build(const Backbone& backbone, const std::vector<PixelTensor>& views,
                     const std::vector<ReferenceSource>& sources, const std::string& class_name) const override {
    if (views.empty()) fail("reference set: K must be at least 1 (no reference images given)");
    std::vector<at::Tensor> globals, patches, windows[std::size(kScales)];
    encode_batches(backbone, features(), views, [&](const PassImages&, const Features& f) {  // one pass: CLIP's grid is fixed
      globals.push_back(f.global);
      patches.push_back(normalise(f.taps[0]).reshape({-1, f.taps[0].size(-1)}));
      for (size_t s = 0; s < std::size(kScales); ++s) windows[s].push_back(normalise(f.windows[s]).reshape({-1, f.windows[s].size(-1)}));
    });
    ReferenceSet set = ReferenceSet::made_with(backbone, sources, class_name);
    set.globals = at::cat(globals).contiguous();
    set.scorer = name();
    set.scorer_options = options().dump();
    set.state["patches"] = at::cat(patches).contiguous();
    for (size_t s = 0; s < std::size(kScales); ++s) set.state[window_key(kScales[s])] = at::cat(windows[s]).contiguous();
    set.state["text"] = winclip_text(backbone, class_name);
    return set;
  }

  std::vector<ScoreRecord> score(const ReferenceSet& set, const Features& q) const override {
    auto residual = [](const at::Tensor& x, const at::Tensor& memory) {
      return 0.5 * (1.0 - std::get<0>(at::matmul(normalise(x), memory.t()).max(-1)));
    };
    at::Tensor visual = residual(q.taps[0], set.state.at("patches"));  // [B, P]
    for (size_t s = 0; s < std::size(kScales); ++s) {
      // A window equal to a reference one has residual 0 (or -1e-7 from rounding): the reference's
      // 1/0 = inf makes the harmonic mean 0; clamping keeps that result without inf·0 = NaN in
      // the covering product.
      const at::Tensor inv = at::reciprocal(residual(q.windows[s], set.state.at(window_key(kScales[s]))).clamp_min(1e-12));
      visual = visual + cover_[s].sum(0) / at::matmul(inv, cover_[s]);
    }
    visual = (visual / 3.0).to(at::kFloat).contiguous();
    const at::Tensor s_vis = std::get<0>(visual.max(-1)).to(at::kDouble);
    const at::Tensor s_text = winclip_text_score(q.global, set.state.at("text")).to(at::kDouble);
    std::vector<ScoreRecord> out(static_cast<size_t>(visual.size(0)));
    for (size_t b = 0; b < out.size(); ++b) {
      const auto i = static_cast<int64_t>(b);
      ScoreRecord& r = out[b];
      r.s_patch = s_vis[i].item<double>();
      r.s_text = s_text[i].item<double>();
      r.has_text = true;
      r.score = (r.s_patch + r.s_text) / 2;
      r.residual_map.assign(visual[i].data_ptr<float>(), visual[i].data_ptr<float>() + visual.size(1));
    }
    return out;
  }

  void check(const ReferenceSet& set, const std::string& name) const override {
    for (const std::string& key : {std::string("patches"), window_key(2), window_key(3), std::string("text")})
      if (!set.state.count(key)) fail(name, ": reference set lacks its WinCLIP memory (state.", key, ")");
  }

 private:
  const ClipBackbone& clip_;
  std::vector<at::Tensor> cover_;
};

}  // namespace

std::unique_ptr<Scorer> make_winclip(const Backbone& backbone, const nlohmann::json& options, const std::string& context) {
  const ClipBackbone& clip = clip_of(backbone, "scorer winclip");
  check_known_keys(options, {}, context);
  return std::make_unique<WinClip>(clip);
}

at::Tensor winclip_text(const Backbone& backbone, const std::string& class_name) {
  return clip_of(backbone, "scorer winclip").text_features(ensemble_prompt_sentences(class_name));
}

at::Tensor winclip_text_score(const at::Tensor& global, const at::Tensor& text) {
  return at::softmax(100.0 * at::matmul(normalise(global), text.t()), -1).select(1, 1);
}

}  // namespace gad::scorers
