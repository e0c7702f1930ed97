// Image-level detection metrics, defined exactly as scikit-learn computes them (the reference
// evaluation uses roc_auc_score and average_precision_score).
//   AUROC: trapezoidal area under the ROC curve, tied scores forming one threshold (a tie between
//          a positive and a negative counts 1/2).
//   AP:    step-wise Σ (R_n − R_{n−1}) · P_n over thresholds at each distinct score, not the
//          trapezoid rule.
// Labels: 1 = anomalous (positive), 0 = normal. Both need at least one positive and one negative;
// otherwise gad::Error.
#pragma once

#include <vector>

namespace gad {

double roc_auc(const std::vector<int>& labels, const std::vector<double>& scores);
double average_precision(const std::vector<int>& labels, const std::vector<double>& scores);

// Curve points at each distinct score threshold, for plots: ROC as (FPR, TPR) from (0,0) to (1,1);
// precision-recall as (recall, precision) starting at recall 0.
struct CurvePoint {
  double x, y;
};
std::vector<CurvePoint> roc_curve(const std::vector<int>& labels, const std::vector<double>& scores);
std::vector<CurvePoint> pr_curve(const std::vector<int>& labels, const std::vector<double>& scores);

}  // namespace gad
