// The two training-free nearest-neighbour baselines and full InCTRL, as bench methods.
//   inctrl:    the final InCTRL score (spec §2), or s_patch when the model has no heads.
//   patch-knn: s_patch only, the untrained patch residual: max over query patches of
//              ½(1 − max cos) to every reference patch of the same layer, layers averaged.
//   image-knn: 1 − max_k cos(global(query), global(reference k)).
#include "inctrl/scorer.h"
#include "methods/method.h"

namespace gad {
namespace {

class InctrlMethod : public Method {
 public:
  InctrlMethod(const Backbone& b, std::optional<InctrlHeads> heads, bool patch_only)
      : scorer_(b, patch_only ? std::nullopt : std::move(heads)), patch_only_(patch_only) {}
  std::string name() const override { return patch_only_ ? "patch-knn" : "inctrl"; }
  at::Tensor score(const ReferenceSet& refs, const Features& q, const at::Tensor&) const override {
    InctrlScores s = scorer_.score(refs, q);
    return patch_only_ ? s.s_patch : s.final_score;
  }

 private:
  InctrlScorer scorer_;
  bool patch_only_;
};

class ImageKnnMethod : public Method {
 public:
  std::string name() const override { return "image-knn"; }
  at::Tensor score(const ReferenceSet& refs, const Features& q, const at::Tensor&) const override {
    at::Tensor f = q.global / q.global.norm(2, -1, true);
    at::Tensor r = refs.globals / refs.globals.norm(2, -1, true);
    return 1.0 - std::get<0>(at::matmul(f, r.t()).max(-1));
  }
};

}  // namespace

std::unique_ptr<Method> make_inctrl_method(const LoadedModel& m) {
  return std::make_unique<InctrlMethod>(*m.backbone, m.heads, false);
}
std::unique_ptr<Method> make_patch_knn_method(const LoadedModel& m) {
  return std::make_unique<InctrlMethod>(*m.backbone, std::nullopt, true);
}
std::unique_ptr<Method> make_image_knn_method(const LoadedModel&) { return std::make_unique<ImageKnnMethod>(); }

}  // namespace gad
