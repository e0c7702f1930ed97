// AnomalyDINO as a `gad bench` method (the scorer itself is dino/anomalydino.h).
#include "dino/anomalydino.h"
#include "methods/method.h"

namespace gad {
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
