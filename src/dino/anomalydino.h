// AnomalyDINO (Damm et al., WACV 2025) — training-free few-shot scoring by nearest-neighbour patch
// matching, as `dammsi/AnomalyDINO` computes it (src/detection.py, knn_metric L2_normalized, 1-NN):
//   bank      every patch of every (optionally rotated) reference, L2-normalised;
//   distance  d[j] = 1 − max cos(q_j, bank) — faiss' squared L2 of normalised rows divided by 2 —
//             i.e. twice InCTRL's patch residual, averaged over taps on the common grid;
//   score     mean of the largest ⌊P/100⌋ distances, the largest one when that is 0 (mean_top1p).
// The search is one blocked GEMM per query (InctrlScorer::patch_residuals): memory grows with the
// query's patches, time linearly with the bank.
#pragma once

#include <ATen/ATen.h>

#include "backbone/backbone.h"
#include "scorers/reference_set.h"

namespace gad {

// [B, P] patch distances of encoded queries to `refs`.
at::Tensor anomalydino_distances(const Backbone& backbone, const ReferenceSet& refs, const Features& queries);
// [B] image scores from [B, P] distances.
at::Tensor mean_top1p(const at::Tensor& distances);

// The reference rotations of AnomalyDINO's augment_image: 0, 45, ..., 315 degrees.
constexpr int kAnomalyDinoRotations = 8;

}  // namespace gad
