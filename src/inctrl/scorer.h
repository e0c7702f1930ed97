// InctrlScorer — InCTRL inference (spec §2) with correct per-sample semantics at any batch size.
//
//   patch residual  r_l[j] = ½(1 − max cos(Q_l[j], every reference patch of layer l)),
//                   M = mean_l r_l (each layer brought to the common grid), s_patch = max M
//   image residual  r_img = mean_k A(f_pk) − A(f_x), s_img = σ(diff_head_ref(r_img))
//   text prior      s_text = softmax(100·[f̂·t_n, f̂·t_a])[1]              (CLIP only)
//   holistic        s_hol = σ(diff_head(M + s_text + s_img)), final = (s_hol + s_patch)/2
//
// Without heads only the untrained patch residual exists and final = s_patch. With gad's lite
// variant (heads.stats, stats_head.h) s_hol = σ(stats head(M, smoothed)) and final = s_hol. The reference code
// reshapes instead of permuting when batch > 1 and so mixes samples; we do not reproduce that.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "backbone/backbone.h"
#include "inctrl/heads.h"
#include "scorers/reference_set.h"

namespace gad {

struct InctrlScores {  // batch-first tensors; optional parts are undefined when absent
  at::Tensor residual_per_layer;  // [B, L, P]
  at::Tensor residual_map;        // [B, P], row-major grid
  at::Tensor s_patch;             // [B]
  at::Tensor text_softmax;        // [B, 2]
  at::Tensor s_text;              // [B]
  at::Tensor adapter_query;       // [B, D]
  at::Tensor adapter_prompt_mean; // [D]
  at::Tensor r_img;               // [B, D]
  at::Tensor s_img;               // [B]
  at::Tensor holistic_map;        // [B, P]
  at::Tensor s_hol;               // [B]
  at::Tensor final_score;         // [B]
  HeadTrace head_ref, head_hol;
};

// One tapped layer's patch residual ½(1 − max cos) per query patch, on the common grid:
// `query` [B, P_l, C] and `bank` [N, C] (shared) or [B, N, C] (one bank per query), both with
// L2-normalised rows; returns [B, grid*grid] float32 (bf16 inputs give bf16 products).
at::Tensor layer_residual(const at::Tensor& query, const at::Tensor& bank, int64_t grid);
// max over bank rows of query · bankᵀ per query patch, [B, P] float32 (rows L2-normalised).
at::Tensor nearest_cosine(const at::Tensor& query, const at::Tensor& bank);

// The learned part of the forward, shared by scoring and training: `query_global` [B, D],
// `prompt_adapted_mean` [B or 1, D] (mean of A(f_pk) over the K prompts), `holistic_base` [B, P]
// (M, plus s_text with a text prior) and `s_patch` [B]. `train` runs BatchNorm on batch statistics.
struct HeadOutputs {
  at::Tensor adapter_query, r_img, s_img_logit, s_img, holistic_map, s_hol_logit, s_hol, final_score;
  HeadTrace head_ref, head_hol;
};
HeadOutputs apply_heads(const InctrlHeads& heads, const at::Tensor& query_global, const at::Tensor& prompt_adapted_mean,
                        const at::Tensor& holistic_base, const at::Tensor& s_patch, bool train = false);

class InctrlScorer {
 public:
  InctrlScorer(const Backbone& backbone, std::optional<InctrlHeads> heads)
      : backbone_(backbone), heads_(std::move(heads)) {}
  bool has_heads() const { return heads_.has_value(); }
  InctrlScores score(const ReferenceSet& refs, const Features& query) const;
  // Per layer r_l on the common grid, [B, L, P] (M = its mean over L).
  at::Tensor patch_residuals(const ReferenceSet& refs, const Features& query) const;

 private:
  const Backbone& backbone_;
  std::optional<InctrlHeads> heads_;
};

}  // namespace gad
