// Real-image quality of the lite backbone (fixture model, real ELPV images): the untrained patch
// residual separates defective from normal solar cells, and --precision bf16 does not move the
// image-level AUROC by more than 0.002 for K = 2, 4, 8 (the fast-path accuracy budget).
#include <gtest/gtest.h>

#include <fstream>

#include "engine/engine.h"
#include "eval/metrics.h"
#include "support.h"
#include "util/image_list.h"

namespace gad {
namespace {

struct Labelled {
  std::vector<std::string> normals, queries;
  std::vector<int> labels;
};

// Every 4th normal is a reference candidate; the rest of the sample are queries.
Labelled elpv_sample() {
  std::ifstream in(test::shared("data/elpv_sample/labels.csv"));
  std::string line;
  std::getline(in, line);
  Labelled d;
  int normal_index = 0;
  while (std::getline(in, line)) {
    std::string file = test::shared("data/elpv_sample/" + line.substr(0, line.find(',')));
    int label = line.back() == '1' ? 1 : 0;
    if (label == 0 && normal_index++ % 4 == 0) {
      d.normals.push_back(file);
      continue;
    }
    d.queries.push_back(file);
    d.labels.push_back(label);
  }
  return d;
}

double auroc_for(const std::string& precision, const Labelled& d, int k) {
  ModelOptions o;
  o.model = test::shared("fixtures/lite/mobilenet_v2/model.json");
  o.precision = precision == "bf16" ? Precision::BF16 : Precision::FP32;
  Detector engine(o);
  const References set = engine.build_references(draw_references(d.normals, k, 7), "elpv");
  std::vector<double> scores;
  for (const auto& r : engine.score(set, d.queries)) scores.push_back(r.score);
  return roc_auc(d.labels, scores);
}

TEST(LiteQuality, Bf16KeepsElpvAurocAndSignalIsReal) {
  Labelled d = elpv_sample();
  ASSERT_EQ(d.queries.size() + d.normals.size(), 200u);
  for (int k : {2, 4, 8}) {
    double fp32 = auroc_for("fp32", d, k), bf16 = auroc_for("bf16", d, k);
    std::printf("ELPV sample, lite, K = %d: AUROC fp32 %.4f, bf16 %.4f\n", k, fp32, bf16);
    EXPECT_LE(std::abs(fp32 - bf16), 0.002) << "K = " << k;
    EXPECT_GT(fp32, 0.6) << "K = " << k;
  }
}

}  // namespace
}  // namespace gad
