#include "inctrl/scorer.h"

#include "util/error.h"

namespace gad {
namespace {

// Brings a per-layer residual [B, P_l] onto the common grid [B, g*g] (area average when the
// layer is finer, bilinear when coarser). A no-op for CLIP, whose taps share one grid.
at::Tensor to_grid(const at::Tensor& r, int64_t g) {
  const int64_t B = r.size(0), P = r.size(1);
  if (P == g * g) return r;
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(P))));
  at::Tensor img = r.view({B, 1, side, side});
  img = side > g ? at::adaptive_avg_pool2d(img, {g, g}) : at::upsample_bilinear2d(img, {g, g}, false);
  return img.reshape({B, g * g});
}

}  // namespace

at::Tensor InctrlScorer::patch_residuals(const ReferenceSet& refs, const Features& query) const {
  if (query.taps.size() != refs.banks.size())
    fail("reference set has ", refs.banks.size(), " tapped layers, the model gives ", query.taps.size());
  std::vector<at::Tensor> layers;
  for (size_t l = 0; l < query.taps.size(); ++l) {
    at::Tensor q = query.taps[l];
    q = q / q.norm(2, -1, true);
    // In bf16 mode the K·P cosines per query patch are the largest product after the tower; bf16
    // keeps them within ~4e-3 (the residual-map budget is 0.02).
    at::Tensor max_cos =
        backbone_.precision() == Precision::BF16
            ? std::get<0>(at::matmul(q.to(at::kBFloat16), refs.banks_bf16[l].t()).max(-1)).to(at::kFloat)
            : std::get<0>(at::matmul(q, refs.banks[l].t()).max(-1));  // [B, P_l]
    layers.push_back(to_grid(0.5 * (1.0 - max_cos), backbone_.grid()));
  }
  return at::stack(layers, 1);
}

InctrlScores InctrlScorer::score(const ReferenceSet& refs, const Features& query) const {
  InctrlScores s;
  s.residual_per_layer = patch_residuals(refs, query);
  s.residual_map = s.residual_per_layer.mean(1);
  s.s_patch = std::get<0>(s.residual_map.max(-1));

  at::Tensor holistic = s.residual_map;
  if (refs.text_prior.defined()) {
    at::Tensor f = query.global / query.global.norm(2, -1, true);
    s.text_softmax = at::softmax(100.0 * at::matmul(f, refs.text_prior.t()), -1);
    s.s_text = s.text_softmax.select(1, 1);
    holistic = holistic + s.s_text.unsqueeze(1);
  }
  if (!heads_) {
    s.final_score = s.s_patch;
    return s;
  }
  s.adapter_query = heads_->adapter.forward(query.global);
  s.adapter_prompt_mean = heads_->adapter.forward(refs.globals).mean(0);
  s.r_img = s.adapter_prompt_mean.unsqueeze(0) - s.adapter_query;
  s.s_img = at::sigmoid(heads_->diff_head_ref.forward(s.r_img, &s.head_ref));
  s.holistic_map = holistic + s.s_img.unsqueeze(1);
  s.s_hol = at::sigmoid(heads_->diff_head.forward(s.holistic_map, &s.head_hol));
  s.final_score = (s.s_hol + s.s_patch) / 2;
  return s;
}

}  // namespace gad
