#include "eval/svg_plot.h"

#include <cstdio>
#include <sstream>

namespace gad {
namespace {

constexpr const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
constexpr double kSize = 260, kMargin = 40;

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

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
        << "'>" << escape(series[s].name) << "</text>\n";
  }
}

}  // namespace

std::string roc_pr_svg(const std::string& title, const std::vector<PlotSeries>& roc, const std::vector<PlotSeries>& pr) {
  std::ostringstream svg;
  const double width = 2 * (kSize + 2 * kMargin), height = kSize + 2 * kMargin + 20;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << width << "' height='" << height
      << "' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='" << width / 2 << "' y='16' font-size='13' text-anchor='middle'>" << escape(title) << "</text>\n";
  panel(svg, 0, "false positive rate", "true positive rate", roc, true);
  panel(svg, kSize + 2 * kMargin, "recall", "precision", pr, false);
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace gad
