#include "dino/anomalydino.h"

#include <algorithm>

#include "inctrl/scorer.h"

namespace gad {

at::Tensor anomalydino_distances(const Backbone& backbone, const ReferenceSet& refs, const Features& queries) {
  return 2.0 * InctrlScorer(backbone, std::nullopt).patch_residuals(refs, queries).mean(1);
}

at::Tensor mean_top1p(const at::Tensor& distances) {
  const int64_t n = std::max<int64_t>(1, distances.size(1) / 100);
  return std::get<0>(distances.topk(n, 1)).mean(1);
}

}  // namespace gad
