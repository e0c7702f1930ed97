#include "scorers/knn.h"

#include "inctrl/scorer.h"

namespace gad::scorers {
namespace {

class PatchKnn : public Scorer {
 public:
  explicit PatchKnn(const Backbone& backbone) : scorer_(backbone, std::nullopt) {}
  std::string name() const override { return "patch-knn"; }
  std::vector<ScoreRecord> score(const ReferenceSet& set, const Features& queries) const override {
    const InctrlScores s = scorer_.score(set, queries);
    std::vector<ScoreRecord> out(static_cast<size_t>(s.s_patch.size(0)));
    for (size_t b = 0; b < out.size(); ++b) {
      const auto i = static_cast<int64_t>(b);
      out[b].score = out[b].s_patch = s.s_patch[i].item<double>();
      const at::Tensor m = s.residual_map[i].to(at::kFloat).contiguous();
      out[b].residual_map.assign(m.data_ptr<float>(), m.data_ptr<float>() + m.numel());
    }
    return out;
  }

 private:
  InctrlScorer scorer_;
};

class ImageKnn : public Scorer {
 public:
  std::string name() const override { return "image-knn"; }
  bool has_map() const override { return false; }
  std::vector<ScoreRecord> score(const ReferenceSet& set, const Features& queries) const override {
    const at::Tensor f = queries.global / queries.global.norm(2, -1, true);
    const at::Tensor r = set.globals / set.globals.norm(2, -1, true);
    const at::Tensor s = (1.0 - std::get<0>(at::matmul(f, r.t()).max(-1))).to(at::kDouble).contiguous();
    std::vector<ScoreRecord> out(static_cast<size_t>(s.size(0)));
    for (size_t b = 0; b < out.size(); ++b) out[b].score = s[static_cast<int64_t>(b)].item<double>();
    return out;
  }
  void check(const ReferenceSet&, const std::string&) const override {}  // globals only (checked on read)
};

}  // namespace

std::unique_ptr<Scorer> make_patch_knn(const Backbone& backbone, const nlohmann::json& options, const std::string& context) {
  check_known_keys(options, {}, context);
  return std::make_unique<PatchKnn>(backbone);
}

std::unique_ptr<Scorer> make_image_knn(const Backbone&, const nlohmann::json& options, const std::string& context) {
  check_known_keys(options, {}, context);
  return std::make_unique<ImageKnn>();
}

}  // namespace gad::scorers
