// WinCLIP on CLIP models, as re-implemented by mala-lab and used for InCTRL's WinCLIP numbers
// (spec §4), classification scores.
//
// Few-shot (WinCLIP+, scorer "winclip"):
//   windows:  every 2x2 and 3x3 window of the patch grid (stride 1) as its own token sequence
//             (FeatureRequest::windows) -> a window embedding;
//   patches:  the last block's patch tokens (no ln_post / proj);
//   units:    ½(1 − max cos) against the references' units of the same kind;
//   maps:     per scale, patch p gets n_p / Σ_{w∋p} 1/s_w (harmonic mean over covering windows);
//             V = (S₂ + S₃ + S_patch)/3 (the record's map), s_vis = max V;
//   score:    (s_vis + s_text)/2 with the 154 + 88 sentence text prior (no CIFAR special case).
// Zero-shot ("shot 0", Detector::score_zero_shot): s_text alone, from the global embedding; that
// code has no window-level zero-shot maps, so neither has gad.
// Differences from that code: gad feeds InCTRL's preprocessing (shorter side + centre crop)
// instead of a square resize with horizontal tiling, and runs fp32 (or bf16) instead of fp16.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "scorers/scorer.h"

namespace gad::scorers {

// Throws naming the model when it is not CLIP.
std::unique_ptr<Scorer> make_winclip(const Backbone& backbone, const nlohmann::json& options, const std::string& context);

// [2, D] normal/anomaly text features of WinCLIP's sentence ensemble for `class_name`.
at::Tensor winclip_text(const Backbone& backbone, const std::string& class_name);
// s_text [B]: softmax(100 · global/|global| · textᵀ) of the anomaly row.
at::Tensor winclip_text_score(const at::Tensor& global, const at::Tensor& text);

}  // namespace gad::scorers
