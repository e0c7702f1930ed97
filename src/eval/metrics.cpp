#include "eval/metrics.h"

#include <algorithm>
#include <numeric>

#include "util/error.h"

namespace gad {
namespace {

// Cumulative true/false positives at each distinct score, scores descending (sklearn's
// _binary_clf_curve).
struct Curve {
  std::vector<double> tps, fps;
};

Curve binary_curve(const std::vector<int>& labels, const std::vector<double>& scores) {
  if (labels.size() != scores.size()) fail("metrics: ", labels.size(), " labels but ", scores.size(), " scores");
  std::vector<size_t> order(scores.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  Curve c;
  double tp = 0, fp = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    int y = labels[order[i]];
    if (y != 0 && y != 1) fail("metrics: labels must be 0 or 1 (got ", y, ")");
    (y ? tp : fp) += 1;
    if (i + 1 == order.size() || scores[order[i + 1]] != scores[order[i]]) {
      c.tps.push_back(tp);
      c.fps.push_back(fp);
    }
  }
  if (tp == 0 || fp == 0) fail("metrics: need at least one anomalous and one normal image (got ", tp, " and ", fp, ")");
  return c;
}

}  // namespace

double roc_auc(const std::vector<int>& labels, const std::vector<double>& scores) {
  Curve c = binary_curve(labels, scores);
  const double P = c.tps.back(), N = c.fps.back();
  double area = 0, prev_tpr = 0, prev_fpr = 0;
  for (size_t i = 0; i < c.tps.size(); ++i) {
    double tpr = c.tps[i] / P, fpr = c.fps[i] / N;
    area += (fpr - prev_fpr) * (tpr + prev_tpr) / 2;
    prev_tpr = tpr;
    prev_fpr = fpr;
  }
  return area;
}

double average_precision(const std::vector<int>& labels, const std::vector<double>& scores) {
  Curve c = binary_curve(labels, scores);
  const double P = c.tps.back();
  double ap = 0, prev_recall = 0;
  for (size_t i = 0; i < c.tps.size(); ++i) {
    double recall = c.tps[i] / P, precision = c.tps[i] / (c.tps[i] + c.fps[i]);
    ap += (recall - prev_recall) * precision;
    prev_recall = recall;
  }
  return ap;
}

std::vector<CurvePoint> roc_curve(const std::vector<int>& labels, const std::vector<double>& scores) {
  Curve c = binary_curve(labels, scores);
  std::vector<CurvePoint> out = {{0, 0}};
  for (size_t i = 0; i < c.tps.size(); ++i) out.push_back({c.fps[i] / c.fps.back(), c.tps[i] / c.tps.back()});
  return out;
}

std::vector<CurvePoint> pr_curve(const std::vector<int>& labels, const std::vector<double>& scores) {
  Curve c = binary_curve(labels, scores);
  std::vector<CurvePoint> out = {{0, c.tps[0] / (c.tps[0] + c.fps[0])}};
  for (size_t i = 0; i < c.tps.size(); ++i) out.push_back({c.tps[i] / c.tps.back(), c.tps[i] / (c.tps[i] + c.fps[i])});
  return out;
}

}  // namespace gad
