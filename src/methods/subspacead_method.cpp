// SubspaceAD as a `gad bench` method: the product's scorer (scorers/subspacead.h) fitted on each
// draw's references without augmentation (bench references are preprocessed once), so a bench row
// equals `gad score --scorer subspacead --scorer-options '{"aug_count": 0}'`.
#include <map>

#include "methods/method.h"
#include "scorers/subspacead.h"
#include "util/error.h"

namespace gad {
namespace {

class SubspaceAdMethod : public Method {
 public:
  explicit SubspaceAdMethod(const Backbone& backbone)
      : backbone_(backbone), scorer_(scorers::make_subspacead(backbone, {{"aug_count", 0}}, "subspacead")) {}
  std::string name() const override { return "subspacead"; }

  void prepare(const ReferenceSet& refs, const at::Tensor& ref_pixels) override {
    std::vector<PixelTensor> views;
    std::vector<ReferenceSource> sources;
    for (int64_t i = 0; i < ref_pixels.size(0); ++i) {
      const at::Tensor p = ref_pixels[i].contiguous();
      PixelTensor v;
      v.height = static_cast<int>(p.size(1));
      v.width = static_cast<int>(p.size(2));
      v.chw.assign(p.data_ptr<float>(), p.data_ptr<float>() + p.numel());
      views.push_back(std::move(v));
      sources.push_back({refs.sources.size() > static_cast<size_t>(i) ? refs.sources[i].path : "", ""});
    }
    fitted_[&refs] = scorer_->build(backbone_, views, sources, refs.class_name);
  }

  void forget(const ReferenceSet& refs) override { fitted_.erase(&refs); }

  at::Tensor score(const ReferenceSet& refs, const Features& queries, const at::Tensor&) const override {
    auto it = fitted_.find(&refs);
    TORCH_CHECK(it != fitted_.end(), "subspacead: prepare() was not called for this reference set");
    std::vector<double> scores;
    for (const auto& r : scorer_->score(it->second, queries)) scores.push_back(r.score);
    return at::tensor(scores, at::kDouble);
  }

 private:
  const Backbone& backbone_;
  std::unique_ptr<scorers::Scorer> scorer_;
  std::map<const ReferenceSet*, ReferenceSet> fitted_;
};

}  // namespace

std::unique_ptr<Method> make_subspacead_method(const LoadedModel& model) {
  if (model.backbone->grid() == 0)
    fail("--scorers subspacead: in gad bench on CLIP and lite models (DINOv2 sets need SubspaceAD's own square "
         "input); use gad score --scorer subspacead");
  return std::make_unique<SubspaceAdMethod>(*model.backbone);
}

}  // namespace gad
