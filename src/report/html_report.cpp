#include "report/html_report.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "eval/metrics.h"
#include "util/base64.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

constexpr const char* kStyle = R"(
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;
  padding:0 16px;background:#fafafa}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.facts{color:#555;font-size:13px;margin:0 0 12px;padding-left:18px}.facts li{margin:2px 0;word-break:break-all}
table{border-collapse:collapse;font-size:13px;margin:8px 0 16px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
caption{text-align:left;font-weight:600;padding:4px 0}
.plots{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.plots svg{background:#fff;border:1px solid #e4e4e4}
.note{color:#555;font-size:13px}
.grid{display:flex;flex-wrap:wrap;gap:8px;margin-top:8px}
.card{width:164px;background:#fff;border:2px solid #ccc;border-radius:4px;padding:2px;font-size:11px}
.card .t{height:160px;display:flex;align-items:center;justify-content:center}.card img{max-width:160px;max-height:160px}
.card.l0{border-color:#2b8a3e}.card.l1{border-color:#c92a2a}
.card .s{font-weight:600}.card .p{color:#666;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.sep{flex-basis:100%;text-align:center;font-size:12px;color:#444;padding:4px 0;border-top:2px dashed #888;
  border-bottom:2px dashed #888;margin:4px 0}.sep.gap{border-style:dotted;border-color:#bbb;color:#777}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;
  border:2px solid}
)";


std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

void table(std::ostringstream& h, const ReportTable& t) {
  h << "<table>";
  if (!t.caption.empty()) h << "<caption>" << xml_escape(t.caption) << "</caption>";
  h << "<tr>";
  for (const auto& c : t.header) h << "<th>" << xml_escape(c) << "</th>";
  h << "</tr>\n";
  for (const auto& row : t.rows) {
    h << "<tr>";
    for (const auto& c : row) h << "<td>" << xml_escape(c) << "</td>";
    h << "</tr>\n";
  }
  h << "</table>\n";
}

void card(std::ostringstream& h, const ReportImage& im, int rank, const ThumbnailFn& thumbnail, int px) {
  const std::string png = thumbnail ? thumbnail(im, px) : std::string();
  h << "<div class=\"card l" << (im.label < 0 ? std::string("u") : std::to_string(im.label)) << "\" title=\""
    << xml_escape(im.path) << "\">";
  h << "<div class=\"t\">";
  if (!png.empty()) h << "<img alt=\"\" src=\"data:image/png;base64," << base64_encode(png) << "\">";
  h << "</div>";
  h << "<div class=\"s\">#" << rank << "  " << fmt(im.score) << "</div><div class=\"p\">"
    << xml_escape(std::filesystem::path(im.path).filename().string()) << "</div></div>\n";
}

std::string threshold_line(double t, size_t above, size_t n) {
  return "<div class=\"sep\">threshold " + fmt(t) + ": " + std::to_string(above) + " of " + std::to_string(n) +
         " above (flagged anomalous), " + std::to_string(n - above) + " below</div>\n";
}

void section(std::ostringstream& h, const ReportSection& s, const HtmlReport& r, const ThumbnailFn& thumbnail) {
  h << "<h2>" << xml_escape(s.title) << "</h2>\n";
  if (!s.note.empty()) h << "<p class=\"note\">" << xml_escape(s.note) << "</p>\n";
  std::vector<ReportImage> sorted = s.images;
  std::stable_sort(sorted.begin(), sorted.end(), [](const ReportImage& a, const ReportImage& b) { return a.score > b.score; });
  std::vector<double> normal, anomalous, unknown, all;
  std::vector<int> labels;
  for (const auto& im : sorted) {
    (im.label == 0 ? normal : im.label == 1 ? anomalous : unknown).push_back(im.score);
    all.push_back(im.score);
    labels.push_back(im.label);
  }
  const bool labelled = unknown.empty() && !normal.empty() && !anomalous.empty();
  std::vector<HistogramSeries> hist;
  if (labelled) hist = {{"normal", "#2b8a3e", normal}, {"anomalous", "#c92a2a", anomalous}};
  else hist = {{"all images", "#1f77b4", all}};
  h << "<div class=\"plots\">" << histogram_svg("score histogram", hist, s.threshold);
  std::vector<PlotSeries> roc = s.roc, pr = s.pr;
  if (roc.empty() && labelled) {
    roc = {{"score", roc_curve(labels, all)}};
    pr = {{"score", pr_curve(labels, all)}};
  }
  if (!roc.empty()) h << roc_pr_svg("ROC and precision-recall", roc, pr);
  h << "</div>\n";
  if (labelled)
    h << "<p class=\"note\">AUROC " << fmt(roc_auc(labels, all)) << ", AUPRC " << fmt(average_precision(labels, all))
      << " over " << sorted.size() << " images (" << normal.size() << " normal, " << anomalous.size() << " anomalous).</p>\n";
  h << "<p class=\"legend note\"><span><i style=\"border-color:#2b8a3e\"></i>normal</span><span><i "
       "style=\"border-color:#c92a2a\"></i>anomalous</span><span><i style=\"border-color:#ccc\"></i>label unknown</span>"
       "sorted by score, highest first</p>\n<div class=\"grid\">\n";
  const size_t n = sorted.size(), cap = static_cast<size_t>(std::max(0, r.thumbnails_each_end));
  size_t above = 0;
  if (s.threshold)
    above = std::count_if(sorted.begin(), sorted.end(), [&](const ReportImage& im) { return im.score > *s.threshold; });
  bool line_drawn = false;
  for (size_t i = 0; i < n; ++i) {
    if (s.threshold && !line_drawn && i == above) {
      h << threshold_line(*s.threshold, above, n);
      line_drawn = true;
    }
    if (n > 2 * cap && i == cap) {  // skip the middle; say where the threshold went if it is there
      const size_t resume = n - cap;
      h << "<div class=\"sep gap\">" << resume - cap << " images ranked " << cap + 1 << "–" << resume << " not shown";
      if (s.threshold && !line_drawn && above < resume) {
        h << "; the threshold " << fmt(*s.threshold) << " falls after rank " << above << " (" << above << " of " << n
          << " flagged anomalous)";
        line_drawn = true;
      }
      h << "</div>\n";
      i = resume - 1;
      continue;
    }
    card(h, sorted[i], static_cast<int>(i + 1), thumbnail, r.thumbnail_px);
  }
  if (s.threshold && !line_drawn) h << threshold_line(*s.threshold, above, n);
  h << "</div>\n";
}

}  // namespace

std::string render_html_report(const HtmlReport& r, const ThumbnailFn& thumbnail) {
  std::ostringstream h;
  h << "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" << xml_escape(r.title)
    << "</title>\n<style>" << kStyle << "</style></head>\n<body>\n<h1>" << xml_escape(r.title) << "</h1>\n<ul class=\"facts\">";
  for (const auto& f : r.facts) h << "<li>" << xml_escape(f) << "</li>";
  h << "</ul>\n";
  for (const auto& t : r.tables) table(h, t);
  for (const auto& s : r.sections) section(h, s, r, thumbnail);
  h << "<script>document.body.dataset.ready = \"1\";</script>\n</body></html>\n";
  return h.str();
}

std::vector<int> report_labels(const std::vector<std::string>& paths, const std::string& labels_csv) {
  std::vector<int> out;
  if (!labels_csv.empty()) {
    std::map<std::string, int> by_path, by_name;
    const std::vector<CsvRecord> rows = read_csv_file(labels_csv);
    for (size_t i = 0; i < rows.size(); ++i) {
      const CsvRecord& row = rows[i];
      if (row.fields.size() != 2)
        fail(labels_csv, ":", row.line, ": expected 2 fields (path,label), got ", row.fields.size(),
             row.fields.size() > 2 ? " (quote paths that contain ',')" : "");
      const std::string &path = row.fields[0], &v = row.fields[1];
      int label = v == "0" || v == "normal" || v == "good" ? 0 : v == "1" || v == "anomalous" || v == "defect" ? 1 : -2;
      if (label == -2) {
        if (i == 0) continue;  // a header
        fail(labels_csv, ":", row.line, ": label '", v, "' is not 0/1, normal/anomalous or good/defect");
      }
      by_path[path] = label;
      by_name[std::filesystem::path(path).filename().string()] = label;
    }
    for (const auto& p : paths) {
      auto exact = by_path.find(p);
      auto named = by_name.find(std::filesystem::path(p).filename().string());
      out.push_back(exact != by_path.end() ? exact->second : named != by_name.end() ? named->second : -1);
    }
    return out;
  }
  for (const auto& p : paths) {
    const std::string s = "/" + std::filesystem::path(p).generic_string();
    const size_t t = s.rfind("/test/");
    if (t == std::string::npos || s.find('/', t + 6) == std::string::npos) out.push_back(-1);
    else out.push_back(s.compare(t + 6, 5, "good/") == 0 ? 0 : 1);
  }
  return out;
}

}  // namespace gad
