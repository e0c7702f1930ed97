// `gad score`: score images against a reference set — one JSON line per image on stdout, and on
// request a CSV, map images, an HTML report; ends with a verdict line on stderr.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/cli.h"
#include "engine/score_json.h"
#include "eval/metrics.h"
#include "image/image.h"
#include "maps/anomaly_map.h"
#include "report/html_report.h"
#include "report/thumbnails.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/image_list.h"
#include "util/shard.h"

namespace gad::cli {
namespace {

struct MapArgs {
  std::string dir;
  double sigma = 4.0;
  std::string kind = "patch";  // patch | holistic
  std::string raw = "png16";   // png16 | npy | none
  // Fails (before any scoring) when the options do not fit each other or the model.
  void check(bool has_heads) const {
    if (dir.empty() && (kind != "patch" || raw != "png16")) fail("--map-kind/--raw-maps: give --maps DIR too");
    if (kind == "holistic" && !has_heads)
      fail("--map-kind holistic: this model has no InCTRL heads (the holistic map is M + s_text + s_img); use "
                "--map-kind patch or --heads FILE");
  }
};

// The map the options asked for, in the image's own pixels.
ImageMap record_map(const MapArgs& maps, const ScoreRecord& r) {
  if (maps.kind == "holistic" && r.holistic_map.empty())
    fail("--map-kind holistic: these heads have no holistic map (InCTRL's diff_head input); use --map-kind patch");
  return map_to_image(maps.kind == "holistic" ? r.holistic_map : r.residual_map, r.grid, r.geometry, maps.sigma);
}

// Writes <stem>.png (overlay with colour bar) and the raw map (<stem>_map.png 16-bit or
// <stem>_map.npy float32) for one result.
void write_maps(const MapArgs& maps, const ScoreRecord& r, std::set<std::string>& used, int64_t max_pixels) {
  std::string stem = std::filesystem::path(r.path).stem().string();
  for (int n = 2; used.count(stem); ++n) stem = std::filesystem::path(r.path).stem().string() + "_" + std::to_string(n);
  used.insert(stem);
  Image image = decode_image(r.path, max_pixels);
  ImageMap map = record_map(maps, r);
  write_bytes(maps.dir + "/" + stem + ".png", overlay_png(image, map));
  if (maps.raw == "png16") write_bytes(maps.dir + "/" + stem + "_map.png", map_png16(map));
  if (maps.raw == "npy") write_bytes(maps.dir + "/" + stem + "_map.npy", map_npy(map));
}

struct ReportArgs {
  std::string path, labels;
  int thumbnails = 24;
};

// The `gad score --report` page: one section of every scored image (labels from --labels or the
// MVTec folder names), thumbnails of the map --map-kind chose.
void write_score_report(const ReportArgs& a, const std::vector<ReportImage>& images, const Thumbnails& thumbs,
                        const Detector& detector, const References& refs, const std::string& command) {
  HtmlReport report;
  report.title = "gad score report";
  report.thumbnails_each_end = a.thumbnails;
  report.facts = {"command: " + command, "model: " + detector.describe(), "references: " + refs.summary(),
                  a.labels.empty() ? "labels: from folder names (…/test/good/ = normal, …/test/<other>/ = anomalous)"
                                   : "labels: " + a.labels};
  ReportSection section;
  section.title = std::to_string(images.size()) + " scored images";
  section.images = images;
  if (auto t = refs.threshold()) {
    section.threshold = t->value;
    report.facts.push_back("threshold " + std::to_string(t->value) + " (false-alarm rate " + std::to_string(t->far) + ", " +
                           t->method + ", n = " + std::to_string(t->n) + "); anomalous = score > threshold");
  }
  report.sections.push_back(std::move(section));
  write_bytes(a.path, render_html_report(report, std::cref(thumbs)));
}

// Names of the first few images, for a one-line summary.
std::string first_paths(const std::vector<std::string>& paths) {
  std::string out;
  for (size_t i = 0; i < paths.size() && i < 5; ++i) out += (i ? ", " : "") + paths[i];
  if (paths.size() > 5) out += " and " + std::to_string(paths.size() - 5) + " more";
  return out;
}

// The verdict `gad score` ends with on stderr: with a threshold, how many images of each known
// label it flags (and which anomalous ones it misses, which normal ones it flags); with both
// labels known, the AUROC. Empty when there is nothing to say beyond the per-image lines.
std::string score_summary(const std::vector<ReportImage>& images, const std::optional<Threshold>& t) {
  int count[3] = {0, 0, 0}, flagged[3] = {0, 0, 0};  // by label + 1: unknown, normal, anomalous
  std::vector<std::string> missed, false_alarms;
  std::vector<int> labels;
  std::vector<double> scores;
  for (const auto& im : images) {
    const bool hit = t && im.score > t->value;
    ++count[im.label + 1];
    flagged[im.label + 1] += hit;
    if (im.label == 1 && t && !hit) missed.push_back(im.path);
    if (im.label == 0 && hit) false_alarms.push_back(im.path);
    if (im.label >= 0) labels.push_back(im.label), scores.push_back(im.score);
  }
  std::ostringstream s;
  const bool both = count[1] > 0 && count[2] > 0;
  if (t) {
    if (count[1] + count[2] == 0) {
      s << flagged[0] << " of " << count[0] << " images flagged anomalous";
    } else {
      s << flagged[2] << " of " << count[2] << " anomalous images flagged, " << flagged[1] << " of " << count[1] << " normal";
      if (count[0]) s << ", " << flagged[0] << " of " << count[0] << " unlabelled";
    }
    s << " (score > " << csv_number(t->value, "%.4g") << ")";
  }
  if (both) s << (t ? "; " : "") << "AUROC " << csv_number(roc_auc(labels, scores), "%.3f");
  if (both && !t) s << " (no threshold: `gad refs calibrate` to flag images)";
  if (!missed.empty()) s << "; missed: " << first_paths(missed);
  if (!false_alarms.empty()) s << "; false alarms: " << first_paths(false_alarms);
  return s.str();
}

struct ScoreArgs {
  ModelArgs model;
  RefArgs refs;
  std::vector<std::string> queries;
  std::string shard, path_list;
  bool merge = false;
  int batch = 8;
  std::string csv;
  MapArgs maps;
  ReportArgs report;
};

nlohmann::ordered_json record_json(const ScoreRecord& r) {
  nlohmann::ordered_json j;
  j["path"] = r.path;
  j.update(score_json(r));
  return j;
}

int run_score(ScoreArgs& a, const std::string& command) {
  const MapArgs& maps = a.maps;
  const ReportArgs& report = a.report;
  if (a.merge) {  // shard CSVs joined into the CSV of one run
    const std::string merged = merge_score_csvs(a.queries);
    if (a.csv.empty()) std::cout << merged;
    else write_bytes(a.csv, merged);
    return 0;
  }
  if (!a.refs.given()) fail("score: give --refs FILE, --ref-images ... --class NAME or --prompts FILE --class NAME");
  auto paths = score_inputs(a.queries, a.path_list, a.shard);
  Detector detector(a.model.resolve());
  log_line(detector.describe());
  maps.check(detector.has_heads());
  const References refs = a.refs.build(detector);
  log_line("references: " + refs.summary());
  CsvTable csv(score_csv_header(refs.threshold().has_value()));
  std::set<std::string> map_names;
  if (!maps.dir.empty()) std::filesystem::create_directories(maps.dir);
  const std::vector<int> labels = report_labels(paths, report.labels);
  std::vector<ReportImage> scored;
  Thumbnails thumbs(maps.sigma);
  ScoreOptions options;
  options.batch = a.batch;
  detector.score(refs, paths, options, [&](const ScoreRecord& r) {
    scored.push_back({r.path, r.score, labels[scored.size()]});
    if (!report.path.empty()) thumbs.add(r.path, maps.kind == "holistic" ? r.holistic_map : r.residual_map, r.grid, r.geometry);
    if (!maps.dir.empty()) write_maps(maps, r, map_names, detector.max_pixels());  // may fail: before any output
    std::cout << record_json(r).dump() << "\n" << std::flush;
    csv.add_row(score_csv_row(r));
  });
  if (!a.csv.empty()) write_bytes(a.csv, csv.text());  // only after every image scored: no partial files
  if (!report.path.empty()) write_score_report(report, scored, thumbs, detector, refs, command);
  std::string summary = score_summary(scored, refs.threshold());
  if (!report.path.empty()) summary += (summary.empty() ? "wrote " : "; report: ") + report.path;
  if (!summary.empty()) log_line(summary);
  return 0;
}

}  // namespace

void add_score_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<ScoreArgs>();
  auto* score = app.add_subcommand("score", "score images against a reference set; one JSON line per image");
  a->model.add_to(score);
  a->model.add_scorer_options(score);
  score->add_option("queries", a->queries, "query images or directories (with --merge: the shard CSV files)");
  score->add_option("--shard", a->shard, "I/N: score only slice I (from 0) of the N slices of the sorted inputs");
  score->add_option("--list", a->path_list, "also score the paths in FILE, one per line");
  score->add_flag("--merge", a->merge, "join shard CSV files into the CSV of one run (to --csv, or stdout)");
  score->add_option("--refs", a->refs.refs_file, "reference set file from `gad refs build`");
  score->add_option("--ref-images", a->refs.ref_images, "reference (normal) images or directories");
  a->refs.add_images_and_class(score);
  score->add_option("--batch", a->batch, "images per forward pass (default 8)");
  score->add_option("--csv", a->csv, "also write all results to a CSV file");
  MapArgs& maps = a->maps;
  ReportArgs& report = a->report;
  score->add_option("--maps", maps.dir,
                    "write per image DIR/<stem>.png (image + anomaly-map overlay + colour bar) and DIR/<stem>_map.png\n"
                    "(the patch residual map in the image's own pixels, 16-bit: value x 65535)");
  score->add_option("--map-sigma", maps.sigma, "Gaussian smoothing of the maps, in pixels at a 240 px input (default 4)");
  score->add_option("--report", report.path, "write one self-contained HTML report: score histogram, ROC/PR when labels\n"
                                             "are known, overlay thumbnails sorted by score with the threshold");
  score->add_option("--labels", report.labels, "labels for the report and the closing summary: CSV of path,label (0/1);\n"
                                               "default: from folder names (.../test/good/ normal, .../test/<other>/\n"
                                               "anomalous)");
  score->add_option("--report-thumbnails", report.thumbnails, "thumbnails shown from each end of the score order (default 24)");
  score->add_option("--map-kind", maps.kind, "patch (default): the patch residual M; holistic: M + s_text + s_img, the\n"
                                             "InCTRL head input (needs heads)")
      ->check(CLI::IsMember({"patch", "holistic"}));
  score->add_option("--raw-maps", maps.raw, "raw map next to each overlay: png16 (default; value x 65535, clamped to\n"
                                            "[0, 1]), npy (float32, unclamped, shape (height, width)) or none")
      ->check(CLI::IsMember({"png16", "npy", "none"}));

  score->callback([a, &ctx] { ctx.run = [a, &ctx] { return run_score(*a, ctx.command); }; });
}

}  // namespace gad::cli
