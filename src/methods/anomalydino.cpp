#include "methods/anomalydino.h"

#include <algorithm>

#include "inctrl/scorer.h"
#include "methods/method.h"

namespace gad {

at::Tensor anomalydino_distances(const Backbone& backbone, const ReferenceSet& refs, const Features& queries) {
  return 2.0 * InctrlScorer(backbone, std::nullopt).patch_residuals(refs, queries).mean(1);
}

at::Tensor mean_top1p(const at::Tensor& distances) {
  const int64_t n = std::max<int64_t>(1, distances.size(1) / 100);
  return std::get<0>(distances.topk(n, 1)).mean(1);
}

namespace {

class AnomalyDinoMethod : public Method {
 public:
  AnomalyDinoMethod(const Backbone& backbone, bool rotated) : backbone_(backbone), rotated_(rotated) {}
  std::string name() const override { return rotated_ ? "anomalydino-rot" : "anomalydino"; }
  bool wants_rotated_references() const override { return rotated_; }
  at::Tensor score(const ReferenceSet& refs, const Features& queries, const at::Tensor&) const override {
    return mean_top1p(anomalydino_distances(backbone_, refs, queries));
  }

 private:
  const Backbone& backbone_;
  bool rotated_;
};

}  // namespace

std::unique_ptr<Method> make_anomalydino_method(const LoadedModel& model) {
  return std::make_unique<AnomalyDinoMethod>(*model.backbone, false);
}

std::unique_ptr<Method> make_anomalydino_rot_method(const LoadedModel& model) {
  return std::make_unique<AnomalyDinoMethod>(*model.backbone, true);
}

}  // namespace gad
