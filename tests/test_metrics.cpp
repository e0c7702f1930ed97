// AUROC and AP against scikit-learn 1.2.1 on the reference metric cases (ties, all-equal,
// imbalance, a single positive, float32 near-ties). Tolerance 1e-9: the same sums in double.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "eval/metrics.h"
#include "eval/pixel_metrics.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

TEST(Metrics, MatchScikitLearn) {
  auto cases = nlohmann::json::parse(read_file_text(test::inctrl_fixture("metrics.json")))["cases"];
  ASSERT_EQ(cases.size(), 6u);
  for (const auto& c : cases) {
    auto labels = c["labels"].get<std::vector<int>>();
    auto scores = c["scores"].get<std::vector<double>>();
    EXPECT_NEAR(roc_auc(labels, scores), c["roc_auc"].get<double>(), 1e-9) << c["name"];
    EXPECT_NEAR(average_precision(labels, scores), c["average_precision"].get<double>(), 1e-9) << c["name"];
  }
}

TEST(Metrics, OneClassOnlyIsAnError) {
  EXPECT_THROW(roc_auc({0, 0}, {0.1, 0.2}), Error);
  EXPECT_THROW(average_precision({1, 1}, {0.1, 0.2}), Error);
}

// Pixel metrics on synthetic masks whose answers are known analytically.
ImageMap square_mask(int size, int x0, int y0, int side) {
  ImageMap m{size, size, std::vector<float>(size * size, 0.0f)};
  for (int y = y0; y < y0 + side; ++y)
    for (int x = x0; x < x0 + side; ++x) m.values[y * size + x] = 1;
  return m;
}

TEST(PixelMetrics, PerfectMapIsOneAndInvertedIsZero) {
  std::vector<ImageMap> masks = {square_mask(16, 2, 2, 4), square_mask(16, 0, 0, 0), square_mask(16, 9, 3, 6)};
  masks[2].values[0] = 1;  // a second, one-pixel region in the third image
  std::vector<ImageMap> inverted = masks;
  for (auto& m : inverted)
    for (auto& v : m.values) v = 1 - v;
  PixelMetrics perfect = pixel_metrics(masks, masks), worst = pixel_metrics(inverted, masks);
  EXPECT_DOUBLE_EQ(perfect.auroc, 1.0);
  EXPECT_NEAR(perfect.aupro, 1.0, 1e-12);
  EXPECT_DOUBLE_EQ(worst.auroc, 0.0);
  EXPECT_DOUBLE_EQ(worst.aupro, 0.0);
}

// One 1x6 image, mask 1 1 1 0 0 1: regions {0,1,2} (3 px) and {5} (1 px).
// Scores 0.9 0.8 0.1 | 0.5 0.3 | 0.7, descending: region pixels 0.9, 0.8, 0.7 come before any
// normal pixel, so PRO = (2/3 + 1) / 2 = 5/6 from FPR 0 to 0.5 and AUPRO(0.3) = 5/6 (the pixel
// overlap would be 3/4). AUROC: 6 of 8 (defect, normal) pairs ordered right = 0.75.
TEST(PixelMetrics, HandComputedSmallCase) {
  ImageMap mask{6, 1, {1, 1, 1, 0, 0, 1}}, map{6, 1, {0.9f, 0.8f, 0.1f, 0.5f, 0.3f, 0.7f}};
  PixelMetrics m = pixel_metrics({map}, {mask});
  EXPECT_NEAR(m.auroc, 0.75, 1e-12);
  EXPECT_NEAR(m.aupro, 5.0 / 6, 1e-12);
  // 1x4, mask 1 1 0 0, scores 0.9 0.2 0.5 0.1: PRO 0.5 from FPR 0 to 0.5, interpolated at 0.3.
  m = pixel_metrics({ImageMap{4, 1, {0.9f, 0.2f, 0.5f, 0.1f}}}, {ImageMap{4, 1, {1, 1, 0, 0}}});
  EXPECT_NEAR(m.aupro, 0.5, 1e-12);
  EXPECT_NEAR(m.auroc, 0.75, 1e-12);  // pairs 0.9>0.5, 0.9>0.1, 0.2>0.1; not 0.2>0.5
  // Full range (max FPR 1): ∫ PRO = 0.5·0.5 + 1·0.5 = 0.75.
  EXPECT_NEAR(pixel_metrics({ImageMap{4, 1, {0.9f, 0.2f, 0.5f, 0.1f}}}, {ImageMap{4, 1, {1, 1, 0, 0}}}, 1.0).aupro, 0.75,
              1e-12);
  EXPECT_THROW(pixel_metrics({map}, {ImageMap{6, 1, std::vector<float>(6, 0.0f)}}), Error);  // no defect pixel
  EXPECT_THROW(pixel_metrics({map}, {ImageMap{3, 2, mask.values}}), Error);                // size mismatch
}

TEST(PixelMetrics, PixelAurocIsRocAucOverAllPixels) {
  std::mt19937 rng(3);
  std::vector<ImageMap> maps, masks;
  std::vector<int> labels;
  std::vector<double> scores;
  for (int i = 0; i < 3; ++i) {
    masks.push_back(square_mask(10, i, 2 * i, 3 + i));
    maps.push_back({10, 10, std::vector<float>(100)});
    for (int p = 0; p < 100; ++p) {
      maps.back().values[p] = static_cast<float>(rng() % 50) / 50 + 0.3f * masks.back().values[p];  // with ties
      labels.push_back(masks.back().values[p] > 0);
      scores.push_back(maps.back().values[p]);
    }
  }
  EXPECT_NEAR(pixel_metrics(maps, masks).auroc, roc_auc(labels, scores), 1e-12);
}

}  // namespace
}  // namespace gad
