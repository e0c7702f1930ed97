#include "inctrl/scorer.h"

#include "util/error.h"

namespace gad {
namespace {

// Brings a per-layer residual [B, P_l] onto the common grid [B, g*g] (area average when the
// layer is finer, bilinear when coarser). A no-op for CLIP, whose taps share one grid.
at::Tensor to_grid(const at::Tensor& r, int64_t g) {
  const int64_t B = r.size(0), P = r.size(1);
  if (g == 0 || P == g * g) return r;  // g = 0: one tap on the image's own grid (DINOv2)
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(P))));
  at::Tensor img = r.view({B, 1, side, side});
  img = side > g ? at::adaptive_avg_pool2d(img, {g, g}) : at::upsample_bilinear2d(img, {g, g}, false);
  return img.reshape({B, g * g});
}

}  // namespace

at::Tensor nearest_cosine(const at::Tensor& query, const at::Tensor& bank) {
  // Blocks of bank rows bound the similarity matrix to B x P x kBlock values, so banks of 10^5-10^6
  // patches (hundreds of references, rotations) cost memory linear in P, not in the bank. The max
  // is exact, so the result does not depend on the blocking.
  constexpr int64_t kBlock = 16384;
  at::Tensor best;
  for (int64_t start = 0; start < bank.size(0); start += kBlock) {
    at::Tensor block = bank.slice(0, start, std::min(bank.size(0), start + kBlock));
    at::Tensor m = std::get<0>(at::matmul(query, block.transpose(-2, -1)).max(-1));
    best = best.defined() ? at::maximum(best, m) : m;
  }
  return best.to(at::kFloat);  // [B, P]
}

at::Tensor layer_residual(const at::Tensor& query, const at::Tensor& bank, int64_t grid) {
  return to_grid(0.5 * (1.0 - nearest_cosine(query, bank)), grid);
}

HeadOutputs apply_heads(const InctrlHeads& heads, const at::Tensor& query_global, const at::Tensor& prompt_adapted_mean,
                        const at::Tensor& holistic_base, const at::Tensor& s_patch, bool train) {
  HeadOutputs o;
  o.adapter_query = heads.adapter.forward(query_global);
  o.r_img = prompt_adapted_mean - o.adapter_query;  // prompt mean minus query (spec §2.4)
  o.s_img_logit = heads.diff_head_ref.forward(o.r_img, &o.head_ref, train);
  o.s_img = at::sigmoid(o.s_img_logit);
  o.holistic_map = holistic_base + o.s_img.unsqueeze(1);
  o.s_hol_logit = heads.diff_head.forward(o.holistic_map, &o.head_hol, train);
  o.s_hol = at::sigmoid(o.s_hol_logit);
  o.final_score = (o.s_hol + s_patch) / 2;
  return o;
}

at::Tensor InctrlScorer::patch_residuals(const ReferenceSet& refs, const Features& query) const {
  if (query.taps.size() != refs.banks.size())
    fail("reference set has ", refs.banks.size(), " tapped layers, the model gives ", query.taps.size());
  std::vector<at::Tensor> layers;
  for (size_t l = 0; l < query.taps.size(); ++l) {
    at::Tensor q = query.taps[l];
    q = q / q.norm(2, -1, true);
    // In bf16 mode the K·P cosines per query patch are the largest product after the tower; bf16
    // keeps them within ~4e-3 (the residual-map budget is 0.02).
    layers.push_back(backbone_.precision() == Precision::BF16
                         ? layer_residual(q.to(at::kBFloat16),
                                          refs.banks_bf16.empty() ? refs.banks[l].to(at::kBFloat16) : refs.banks_bf16[l],
                                          backbone_.grid())
                         : layer_residual(q, refs.banks[l], backbone_.grid()));
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
  if (heads_->stats) {  // gad's lite variant: position-free statistics of M, nothing else
    s.s_hol = at::sigmoid(heads_->stats->forward(s.residual_map, backbone_.grid()));
    s.final_score = s.s_hol;
    return s;
  }
  s.adapter_prompt_mean = heads_->adapter.forward(refs.globals).mean(0);
  HeadOutputs h = apply_heads(*heads_, query.global, s.adapter_prompt_mean.unsqueeze(0), holistic, s.s_patch);
  s.adapter_query = h.adapter_query;
  s.r_img = h.r_img;
  s.s_img = h.s_img;
  s.holistic_map = h.holistic_map;
  s.s_hol = h.s_hol;
  s.final_score = h.final_score;
  s.head_ref = h.head_ref;
  s.head_hol = h.head_hol;
  return s;
}

}  // namespace gad
