// Self-contained SVG plots of ROC and precision-recall curves (no plotting library, no network).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "eval/metrics.h"

namespace gad {

// Escapes text for XML/HTML content and attribute values (both quote styles).
std::string xml_escape(const std::string& s);

struct PlotSeries {
  std::string name;
  std::vector<CurvePoint> points;  // x, y in [0, 1]
};

// Two panels side by side: ROC (FPR → TPR, with the chance diagonal) and PR (recall → precision).
std::string roc_pr_svg(const std::string& title, const std::vector<PlotSeries>& roc, const std::vector<PlotSeries>& pr);

struct HistogramSeries {
  std::string name, colour;  // colour: any SVG colour
  std::vector<double> values;
};
// Histograms side by side on shared bins (`bins` equal bins over the range of all
// values), with a dashed vertical line and label at `threshold` when given.
std::string histogram_svg(const std::string& title, const std::vector<HistogramSeries>& series,
                          std::optional<double> threshold, int bins = 30);

}  // namespace gad
