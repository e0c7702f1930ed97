#include "report/svg_plot.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

namespace gad {
namespace {

constexpr const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
constexpr double kSize = 260, kMargin = 40;


void panel(std::ostringstream& svg, double ox, const char* x_label, const char* y_label,
           const std::vector<PlotSeries>& series, bool diagonal) {
  auto px = [&](double x) { return ox + kMargin + x * kSize; };
  auto py = [&](double y) { return kMargin + (1 - y) * kSize; };
  svg << "<rect x='" << px(0) << "' y='" << py(1) << "' width='" << kSize << "' height='" << kSize
      << "' fill='none' stroke='#444'/>\n";
  for (int i = 0; i <= 4; ++i) {
    double v = i / 4.0;
    svg << "<text x='" << px(v) << "' y='" << py(0) + 14 << "' font-size='10' text-anchor='middle'>" << v << "</text>"
        << "<text x='" << px(0) - 4 << "' y='" << py(v) + 3 << "' font-size='10' text-anchor='end'>" << v << "</text>\n";
  }
  svg << "<text x='" << px(0.5) << "' y='" << py(0) + 30 << "' font-size='12' text-anchor='middle'>" << x_label
      << "</text><text x='" << ox + 12 << "' y='" << py(0.5) << "' font-size='12' text-anchor='middle' transform='rotate(-90 "
      << ox + 12 << " " << py(0.5) << ")'>" << y_label << "</text>\n";
  if (diagonal)
    svg << "<line x1='" << px(0) << "' y1='" << py(0) << "' x2='" << px(1) << "' y2='" << py(1)
        << "' stroke='#bbb' stroke-dasharray='4 3'/>\n";
  for (size_t s = 0; s < series.size(); ++s) {
    svg << "<polyline fill='none' stroke-width='1.5' stroke='" << kColours[s % 6] << "' points='";
    char buf[48];
    for (const auto& p : series[s].points) {
      std::snprintf(buf, sizeof buf, "%.1f,%.1f ", px(p.x), py(p.y));
      svg << buf;
    }
    svg << "'/>\n<text x='" << px(0.55) << "' y='" << py(0.3) + 14 * s << "' font-size='11' fill='" << kColours[s % 6]
        << "'>" << xml_escape(series[s].name) << "</text>\n";
  }
}

}  // namespace

std::string roc_pr_svg(const std::string& title, const std::vector<PlotSeries>& roc, const std::vector<PlotSeries>& pr) {
  std::ostringstream svg;
  const double width = 2 * (kSize + 2 * kMargin), height = kSize + 2 * kMargin + 20;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << width / 2 << "' y='16' font-size='13' text-anchor='middle'>" << xml_escape(title) << "</text>\n";
  panel(svg, 0, "false positive rate", "true positive rate", roc, true);
  panel(svg, kSize + 2 * kMargin, "recall", "precision", pr, false);
  svg << "</svg>\n";
  return svg.str();
}

std::string histogram_svg(const std::string& title, const std::vector<HistogramSeries>& series,
                          std::optional<double> threshold, int bins) {
  double lo = threshold.value_or(1e300), hi = threshold.value_or(-1e300);
  for (const auto& s : series)
    for (double v : s.values) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  if (lo > hi) lo = 0, hi = 1;
  if (hi - lo < 1e-9) lo -= 0.5, hi += 0.5;
  const double pad = (hi - lo) * 0.02;
  lo -= pad;
  hi += pad;
  std::vector<std::vector<int>> counts(series.size(), std::vector<int>(bins, 0));
  int top = 1;
  for (size_t s = 0; s < series.size(); ++s)
    for (double v : series[s].values) {
      int b = std::clamp(static_cast<int>((v - lo) / (hi - lo) * bins), 0, bins - 1);
      top = std::max(top, ++counts[s][b]);
    }
  const double w = 2 * kSize, h = 160, left = kMargin, top_y = 44;  // title and legend above the bars
  auto px = [&](double v) { return left + (v - lo) / (hi - lo) * w; };
  auto py = [&](double c) { return top_y + h - c / top * h; };
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << w + 2 * kMargin << "' height='" << h + top_y + 45
      << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << left << "' y='16' font-size='13'>" << xml_escape(title) << "</text>\n"
      << "<line x1='" << left << "' y1='" << py(0) << "' x2='" << left + w << "' y2='" << py(0) << "' stroke='#444'/>\n"
      << "<line x1='" << left << "' y1='" << top_y << "' x2='" << left << "' y2='" << py(0) << "' stroke='#444'/>\n"
      << "<text x='" << left - 4 << "' y='" << top_y + 4 << "' font-size='10' text-anchor='end'>" << top << "</text>\n"
      << "<text x='" << left - 4 << "' y='" << py(0) << "' font-size='10' text-anchor='end'>0</text>\n";
  char buf[64];
  for (int i = 0; i <= 4; ++i) {
    const double v = lo + (hi - lo) * i / 4;
    std::snprintf(buf, sizeof buf, "%.3g", v);
    svg << "<text x='" << px(v) << "' y='" << py(0) + 14 << "' font-size='10' text-anchor='middle'>" << buf << "</text>\n";
  }
  svg << "<text x='" << left + w / 2 << "' y='" << py(0) + 30 << "' font-size='12' text-anchor='middle'>score</text>\n";
  // Series side by side within each bin, so none hides another.
  const double bw = w / bins, sw = (bw - 1) / std::max<size_t>(1, series.size());
  for (size_t s = 0; s < series.size(); ++s) {
    for (int b = 0; b < bins; ++b)
      if (counts[s][b])
        svg << "<rect x='" << left + b * bw + s * sw << "' y='" << py(counts[s][b]) << "' width='" << sw << "' height='"
            << py(0) - py(counts[s][b]) << "' fill='" << series[s].colour << "' fill-opacity='0.8'/>";
    const double lx = left + 200 + 150 * s;  // the legend runs along the title line
    svg << "\n<rect x='" << lx << "' y='7' width='10' height='10' fill='" << series[s].colour
        << "' fill-opacity='0.8'/><text x='" << lx + 14 << "' y='16' font-size='11'>"
        << xml_escape(series[s].name) << " (" << series[s].values.size() << ")</text>\n";
  }
  if (threshold) {
    std::snprintf(buf, sizeof buf, "threshold %.4g", *threshold);
    svg << "<line x1='" << px(*threshold) << "' y1='" << top_y - 6 << "' x2='" << px(*threshold) << "' y2='" << py(0)
        << "' stroke='#000' stroke-dasharray='5 3'/><text x='" << px(*threshold) << "' y='" << top_y - 10
        << "' text-anchor='middle' font-size='11'>" << buf << "</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else if (c == '"') out += "&quot;";
    else if (c == '\'') out += "&#39;";
    else out += c;
  }
  return out;
}

}  // namespace gad
