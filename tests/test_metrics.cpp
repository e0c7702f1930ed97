// AUROC and AP against scikit-learn 1.2.1 on the reference metric cases (ties, all-equal,
// imbalance, a single positive, float32 near-ties). Tolerance 1e-9: the same sums in double.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "eval/metrics.h"
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

}  // namespace
}  // namespace gad
