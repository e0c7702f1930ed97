// Decision thresholds from normals only: the conformal rank on hand-made scores, the threshold
// stored in (and absent from old) reference sets, leave-one-out from stored features, the
// "anomalous" field, and the false-alarm rate it gives on real held-out ELPV normals (lite).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "data/convert.h"
#include "engine/engine.h"
#include "engine/score_json.h"
#include "inctrl/calibration.h"
#include "support.h"
#include "util/error.h"
#include "util/image_list.h"

namespace gad {
namespace {

const std::string kLite = test::shared("fixtures/lite/mobilenet_v2/model.json");

TEST(Calibration, ConformalRankOnKnownScores) {
  std::vector<double> s;
  for (int i = 99; i >= 1; --i) s.push_back(i);  // 1..99, unsorted on purpose
  std::string warning;
  Threshold t = conformal_threshold(s, 0.10, "conformal-heldout", &warning);
  EXPECT_EQ(t.value, 90);  // ceil(100 * 0.9) = 90th smallest
  EXPECT_EQ(t.n, 99);
  EXPECT_TRUE(warning.empty());
  EXPECT_EQ(conformal_threshold(s, 0.05, "x").value, 95);
  // n = 19, far = 0.05: rank 19 = the maximum, still valid; n = 18 is too few.
  std::vector<double> s19(s.end() - 19, s.end());
  EXPECT_EQ(conformal_threshold(s19, 0.05, "x", &warning).value, 19);
  EXPECT_TRUE(warning.empty());
  std::vector<double> s18(s.end() - 18, s.end());
  t = conformal_threshold(s18, 0.05, "x", &warning);
  EXPECT_GT(t.value, 18);
  EXPECT_LT(t.value, 18.01);
  EXPECT_NE(warning.find("at least 19"), std::string::npos) << warning;
  EXPECT_THROW(conformal_threshold(s, 0, "x"), Error);
  EXPECT_THROW(conformal_threshold(s, 1.5, "x"), Error);
  EXPECT_THROW(conformal_threshold({}, 0.05, "x"), Error);
}

TEST(Calibration, ThresholdRoundTripsAndOldSetsStayLoadable) {
  std::string dir = test::temp_dir("calib");
  ModelOptions o;
  o.model = kLite;
  Detector engine(o);
  engine.build_references(expand_image_args({"examples/tiles/train/good"}, "refs"), "tile").save(dir + "/plain.gadref");
  Detector other(o);
  const References plain = other.load_references(dir + "/plain.gadref");
  EXPECT_FALSE(plain.threshold().has_value());  // uncalibrated sets load as before
  ScoreRecord rec = other.score(plain, std::vector<std::string>{"examples/tiles/test/good/000.png"})[0];
  EXPECT_FALSE(score_json(rec).contains("anomalous"));

  std::vector<double> loo = other.leave_one_out_scores(plain);
  ASSERT_EQ(loo.size(), 8u);
  for (double v : loo) EXPECT_TRUE(v > 0 && v < 1) << v;
  const References calibrated = plain.with_threshold(conformal_threshold(loo, 0.2, "conformal-leave-one-out"));
  calibrated.save(dir + "/calibrated.gadref");
  // Detector::calibrate without normals is the same leave-one-out rule.
  EXPECT_EQ(other.calibrate(plain, std::vector<std::string>{}, CalibrationOptions{0.2}).threshold()->value, calibrated.threshold()->value);
  Detector third(o);
  const References reloaded = third.load_references(dir + "/calibrated.gadref");
  ASSERT_TRUE(reloaded.threshold().has_value());
  EXPECT_EQ(reloaded.threshold()->value, calibrated.threshold()->value);
  EXPECT_EQ(reloaded.threshold()->method, "conformal-leave-one-out");
  EXPECT_EQ(reloaded.threshold()->n, 8);
  rec = third.score(reloaded, std::vector<std::string>{"examples/tiles/test/good/000.png"})[0];
  ASSERT_TRUE(score_json(rec).contains("anomalous"));
  EXPECT_EQ(score_json(rec)["anomalous"].get<bool>(), rec.score > reloaded.threshold()->value);

  Detector one(o);
  const References single = one.build_references(std::vector<std::string>{"examples/tiles/train/good/000.png"}, "tile");
  EXPECT_THROW(one.leave_one_out_scores(single), Error);
}

// The acceptance protocol: K = 4 references from train/good; every other normal scored once.
// Calibration = a seeded random half of the remaining train/good, test = the rest of the normals
// (the other half + test/good). Averaged over 50 splits, the false-alarm rate must be within 5
// points of the request; conformal is conservative by design (with n = 36 the expected rate is
// (n + 1 − rank) / (n + 1): 0.027 for 0.05, 0.081 for 0.10).
TEST(Calibration, ElpvHeldOutFalseAlarmRateMatchesTheRequest) {
  std::string dir = test::temp_dir("calib-elpv");
  ConvertOptions co;
  convert_dataset("elpv", test::shared("data/elpv_sample"), dir, co);
  std::vector<std::string> train = expand_image_args({dir + "/elpv/train/good"}, "train");
  std::vector<std::string> test_good = expand_image_args({dir + "/elpv/test/good"}, "test");
  std::vector<std::string> refs = draw_references(train, 4, 0);
  std::vector<std::string> rest;
  for (const auto& p : train)
    if (std::find(refs.begin(), refs.end(), p) == refs.end()) rest.push_back(p);
  ModelOptions o;
  o.model = kLite;
  o.precision = Precision::FP32;
  Detector engine(o);
  const References set = engine.build_references(refs, "elpv");
  auto scores_of = [&](const std::vector<std::string>& paths) {
    std::vector<double> s;
    for (const auto& r : engine.score(set, paths)) s.push_back(r.score);
    return s;
  };
  const std::vector<double> rest_scores = scores_of(rest), test_scores = scores_of(test_good);
  for (double far : {0.05, 0.10}) {
    double sum_far = 0, sum_far_test_good = 0;
    const int splits = 50;
    for (int split = 0; split < splits; ++split) {
      std::vector<double> pool = rest_scores;
      std::shuffle(pool.begin(), pool.end(), std::mt19937_64(split));
      const size_t half = pool.size() / 2;
      double t = conformal_threshold({pool.begin(), pool.begin() + half}, far, "conformal-heldout").value;
      int alarms = 0, alarms_test_good = 0;
      for (size_t i = half; i < pool.size(); ++i) alarms += pool[i] > t;
      for (double s : test_scores) alarms_test_good += s > t;
      alarms += alarms_test_good;
      sum_far += static_cast<double>(alarms) / (pool.size() - half + test_scores.size());
      sum_far_test_good += static_cast<double>(alarms_test_good) / test_scores.size();
    }
    const double measured = sum_far / splits;
    std::printf("ELPV, lite, K = 4: requested far %.2f, measured %.4f (held-out normals), %.4f (test/good only)\n", far,
                measured, sum_far_test_good / splits);
    EXPECT_NEAR(measured, far, 0.05) << "far " << far;
    EXPECT_LE(measured, far + 0.02) << "conformal must not exceed the request by more than noise";
  }
}

}  // namespace
}  // namespace gad
