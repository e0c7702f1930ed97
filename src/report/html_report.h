// One self-contained HTML report (inline CSS and SVG, thumbnails as base64 PNG data URIs; no
// script, font or image is fetched): a score histogram (normal vs anomalous when labels are
// known), ROC / PR curves, a grid of overlay thumbnails sorted by score with the decision
// threshold drawn where it falls, and tables. Used by `gad score --report` and `gad bench --report`.
//
// Size is bounded: each section shows at most `thumbnails_each_end` thumbnails from the top and
// as many from the bottom of the score order (the middle is summarised in one line), each at
// most `thumbnail_px` on its longer side. A one-line script at the very end sets
// document.body.dataset.ready = "1", so a headless browser can prove the page ran without errors.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "report/svg_plot.h"

namespace gad {

struct ReportImage {
  std::string path;
  double score = 0;
  int label = -1;  // 0 normal, 1 anomalous, -1 unknown
};

struct ReportTable {
  std::string caption;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;
};

struct ReportSection {
  std::string title, note;
  std::vector<ReportImage> images;
  std::optional<double> threshold;  // a calibrated decision threshold (anomalous = score > it)
  // Curves to draw; when empty and both labels occur, ROC / PR of `images` are drawn.
  std::vector<PlotSeries> roc, pr;
};

struct HtmlReport {
  std::string title;
  std::vector<std::string> facts;  // short lines under the title (command, model, ...)
  std::vector<ReportTable> tables;
  std::vector<ReportSection> sections;
  int thumbnails_each_end = 24;
  int thumbnail_px = 160;
};

// `thumbnail(image, max_side)` returns PNG bytes (or "" for none); it is called only for the
// thumbnails shown.
using ThumbnailFn = std::function<std::string(const ReportImage&, int max_side)>;
std::string render_html_report(const HtmlReport& report, const ThumbnailFn& thumbnail);

// Labels for `gad score`'s report and summary: from a CSV (RFC 4180) of path,label (label 0/1,
// normal/anomalous or good/defect; a header line is allowed; paths compared as given, then by
// file name), else from
// the MVTec layout: .../test/good/... = 0, .../test/<other>/... = 1, anything else unknown (-1).
std::vector<int> report_labels(const std::vector<std::string>& paths, const std::string& labels_csv);

}  // namespace gad
