// SubspaceAD (Lendering et al., CVPR 2026) — few-shot scoring by the residual outside a PCA
// subspace of the normal images' patch features, as `CLendering/SubspaceAD` computes it
// (spec: musc-subspacead-spec.md §2):
//   features  DINOv2: the image squashed to image_res² (Pillow bicubic), the mean of the hidden
//             states `layers` (Hugging Face indices, negative = from the end; no final norm),
//             patch tokens only. Other backbones: their native input and the mean of their taps
//             (concatenated when the taps differ in width).
//   fit       each reference plus aug_count augmented copies (rotate / hflip / vflip), drawn
//             twice as the official code does: the mean from the first draw, the scatter from the
//             second, centred on that mean; k = the smallest count whose cumulative explained
//             variance reaches pca_ev (or pca_dim).
//   score     per patch ‖x − (U Uᵀ(x − μ) + μ)‖² in float32; map = bilinear (OpenCV) to res²,
//             3×3 Gaussian σ 4; image score = mean of the top max(1, ⌊res²/100⌋) map values.
// The fit streams: each view is encoded once and reduced to sums, so memory is O(C²).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "scorers/scorer.h"

namespace gad::scorers {

std::unique_ptr<Scorer> make_subspacead(const Backbone& backbone, const nlohmann::json& options, const std::string& context);

// The PCA of a set (for tests and `gad inspect`): mean [C], components [C, k], every eigenvalue
// descending [C] (float64 as fitted).
struct SubspaceFit {
  at::Tensor mean, components, eigenvalues;
};
// Fits from per-view fused features [g², C]: pass-1 views (the mean) and pass-2 views (the scatter).
SubspaceFit fit_subspace(const std::vector<at::Tensor>& pass1, const std::vector<at::Tensor>& pass2, double pca_ev,
                         int64_t pca_dim = 0);
// Per-patch squared residuals [B, P] (float32) of fused query features [B, P, C].
at::Tensor subspace_residuals(const at::Tensor& fused, const at::Tensor& mean, const at::Tensor& components);
// The anomaly map [res, res] of a g x g patch-score grid and its mtop1p image score.
at::Tensor subspace_map(const at::Tensor& grid_scores, int res);
double mean_top_percent(const at::Tensor& map);
// Pillow's Image.rotate(degrees, NEAREST), same size, black fill (torchvision RandomRotation).
Image pil_rotate_nearest(const Image& image, double degrees);

}  // namespace gad::scorers
