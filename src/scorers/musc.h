// MuSc (Li et al., ICLR 2024) — zero-shot scoring by Mutual Scoring: the unlabeled images of a
// collection score each other, no normal image needed; as `xrli-U/MuSc` computes it (spec:
// musc-subspacead-spec.md §1):
//   features  DINOv2: the image squashed to image_size² (Pillow bilinear), the final-normed patch
//             tokens of blocks `feature_layers`, and the final-normed CLS; other backbones: their
//             native input, each tap a layer, the global feature as CLS.
//   LNAMD     per image and layer one LayerNorm over the whole C×g×g map, an r×r box mean (zero
//             padding), L2 per patch — for each r in r_list;
//   MSM       per patch of image i and every other image j: the distance to j's nearest patch;
//             the patch score is the mean of the smallest ⌊(N−1)·0.3⌋ of those (topmin);
//   maps      mean over layers, then over r; bilinear (align corners) to image_size²; a = max;
//   RsCIN     a min-max normalised, then smoothed over each image's k most similar images by raw
//             CLS dot products, averaged over k in rscin_k_list: the image score.
// Too small a collection (⌊(N−1)·topmin_max⌋ = 0, or N below the largest k) is refused: the
// official code returns NaN there. Memory: the layer-normed tokens of the whole collection plus
// one (r, layer)'s aggregated tokens; the pair distances are computed one image against blocks
// of others sized by the patch count alone, so results do not depend on the caller's batch size.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "backbone/backbone.h"

namespace gad::scorers {

struct MuscOptions {
  int image_size = 0;               // DINOv2 only
  std::vector<int> feature_layers;  // DINOv2 block indices (0-based)
  std::vector<int> r_list{1, 3, 5};
  double topmin_min = 0, topmin_max = 0.3;
  std::vector<int> rscin_k_list{1, 2, 3};
  nlohmann::json to_json() const;
};

// Defaults (the official ones, layers mapped to the model's depth) updated by `given`; unknown keys
// and values out of range are refused naming the key.
MuscOptions musc_options(const Backbone& backbone, const nlohmann::json& given, const std::string& context);
FeatureRequest musc_request(const Backbone& backbone, const MuscOptions& options);
// The smallest collection these options can score.
int64_t musc_min_images(const MuscOptions& options);

// Stages, for tests: LNAMD of one image's tokens [L, C] on a g×g grid → [L, C].
at::Tensor lnamd(const at::Tensor& tokens, int64_t grid, int r);

struct MuscResult {
  at::Tensor patch_map;  // [N, g, g] float64: M
  at::Tensor ac_score;   // [N] float64: max of the upsampled map
  at::Tensor score;      // [N] float32: RsCIN's image score
  std::vector<at::Tensor> msm;  // per (r, layer), r-major: [N, L] float64 (kept when asked)
};
// `layers[l]` = [N, L, C] patch tokens of layer l, `cls` = [N, C]; `map_size` = the input side.
// `interrupted` is asked before each image's mutual scoring (a large collection takes minutes);
// when it returns true the call throws and nothing is scored.
MuscResult musc_score(const std::vector<at::Tensor>& layers, const at::Tensor& cls, int64_t grid, int map_size,
                      const MuscOptions& options, bool keep_msm = false, const std::function<bool()>& interrupted = {});
// The bilinear (align corners) upsampling of one g×g map to size² (float64).
at::Tensor musc_upsample(const at::Tensor& grid_map, int size);

}  // namespace gad::scorers
