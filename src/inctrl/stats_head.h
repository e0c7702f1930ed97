// StatsHead — gad's head variant for the lite backbone (not part of InCTRL, never used with CLIP).
//
// InCTRL's diff_head weighs each grid position of the residual map M separately. On the lite
// MobileNetV2 that learns where defects sat in the auxiliary images, which does not transfer to a
// target with another layout (docs/benchmarks.md, "Lite heads: leave-one-dataset-out"). This head
// reads only position-free statistics of M: it first averages M over every `window` × `window`
// square of the grid (a defect covers several 16-px patches, texture noise lifts single ones; files
// without a window use M as it is), then takes the max and the means of the top 2 % and top 10 %
// values, standardises them with the training set's mean and scale and scores a logistic regression
// on them: logit = Σ w_i (stat_i − mean_i) / scale_i + bias.
// Fitted by `scripts/lite_heads.py fit` (the same statistics in numpy). The design was chosen by
// leave-one-dataset-out on the auxiliary data: the map's mean and std, and residuals of the
// global feature, carry dataset-specific signs and lowered held-out AUROC.
#pragma once

#include <ATen/ATen.h>

#include "model/weights.h"

namespace gad {

struct StatsHead {
  static constexpr int64_t kStatistics = 3;
  at::Tensor mean, scale, weight, bias;  // [3], [3], [3], [1]
  at::Tensor window;                     // [1]: side of the mean filter, a whole number ≥ 1
  static bool present_in(const Weights& w) { return w.has("stats_head.weight"); }
  static StatsHead load(Weights& w);
  // M [B, P] -> [B, 3]: max, mean of the top 2 %, mean of the top 10 % (at least one value each).
  static at::Tensor statistics(const at::Tensor& m);
  // M [B, grid²] -> the means of its `window`-sided squares, [B, (grid − window + 1)²].
  static at::Tensor smooth(const at::Tensor& m, int64_t grid, int64_t window);
  at::Tensor forward(const at::Tensor& m, int64_t grid) const;  // logits [B]
};

}  // namespace gad
