// Decision thresholds from normal images only (split conformal prediction).
//
// Given n scores of held-out normal images, the threshold is the ⌈(n+1)(1−far)⌉-th smallest of
// them: for a new normal image exchangeable with those n, P(score > threshold) ≤ far. When that
// rank exceeds n there are too few normals for the requested rate; the threshold is then the
// largest normal score plus a small margin and a warning says how many normals would be needed.
// Anomalies are never used, and "the minimum anomaly score" is not a threshold.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <gad/gad.hpp>

namespace gad {

// Threshold is declared in <gad/gad.hpp>.

// The fewest normal scores for which the rule above gives a rank within them: ⌈1/far⌉ − 1.
int64_t normals_needed(double far);

// `warning` (optional) receives a one-line message when n is too small for `far`; "" otherwise.
Threshold conformal_threshold(std::vector<double> normal_scores, double far, const std::string& method,
                              std::string* warning = nullptr);

}  // namespace gad
