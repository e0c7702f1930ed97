// `gad score`: score images against a reference set — one JSON line per image on stdout, and on
// request a CSV, map images, an HTML report; ends with a verdict line on stderr.
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
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
#include "util/progress.h"
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

// Map files mirror each image's path below the folder argument it was found in (a file given
// directly, or listed, keeps its file name), so a/x.png and b/x.png never collide silently.
class MapFiles {
 public:
  MapFiles(const MapArgs& maps, const std::vector<std::string>& inputs) : maps_(maps) {
    for (const auto& in : inputs)
      if (std::filesystem::is_directory(in)) roots_.push_back(std::filesystem::path(in).lexically_normal());
  }
  // The overlay file of `image` ("" without --maps).
  std::string overlay(const std::string& image) {
    if (maps_.dir.empty()) return "";
    auto it = names_.find(image);
    if (it != names_.end()) return it->second + ".png";
    std::string stem = (std::filesystem::path(maps_.dir) / relative(image)).replace_extension().string();
    const std::string base = stem;
    for (int n = 2; used_.count(stem); ++n) stem = base + "_" + std::to_string(n);
    used_.insert(stem);
    names_[image] = stem;
    return stem + ".png";
  }
  // Every map of the run, one colour scale for all: the top from the set's calibration normals
  // when known, else the run's largest value (so the quietest image never looks as hot as a defect).
  void write_all(double set_top, int64_t max_pixels) const {
    double top = set_top;
    if (top <= 0)
      for (const auto& p : pending_) top = std::max(top, static_cast<double>(*std::max_element(p.map.begin(), p.map.end())));
    for (const auto& p : pending_) {
      const ImageMap map = map_to_image(p.map, p.grid, p.geometry, maps_.sigma);
      const std::string stem = names_.at(p.image);
      std::filesystem::create_directories(std::filesystem::path(stem).parent_path());
      write_bytes(stem + ".png", overlay_png(decode_image(p.image, max_pixels), map, top));
      if (maps_.raw == "png16") write_bytes(stem + "_map.png", map_png16(map));
      if (maps_.raw == "npy") write_bytes(stem + "_map.npy", map_npy(map));
    }
  }
  void add(const ScoreRecord& r) {
    if (maps_.dir.empty() || !r.ok()) return;
    if (r.residual_map.empty())
      fail("--maps: these scores come without a map (image-knn and zero-shot WinCLIP score whole images); drop --maps");
    if (maps_.kind == "holistic" && r.holistic_map.empty())
      fail("--map-kind holistic: these heads have no holistic map (InCTRL's diff_head input); use --map-kind patch");
    pending_.push_back({r.path, maps_.kind == "holistic" ? r.holistic_map : r.residual_map, r.grid, r.geometry});
  }

 private:
  struct Pending {
    std::string image;
    std::vector<float> map;
    int grid;
    CropGeometry geometry;
  };
  std::filesystem::path relative(const std::string& image) const {
    const auto p = std::filesystem::path(image).lexically_normal();
    for (const auto& root : roots_) {
      const auto rel = p.lexically_relative(root);
      if (!rel.empty() && *rel.begin() != "..") return rel;
    }
    return p.filename();
  }
  const MapArgs& maps_;
  std::vector<std::filesystem::path> roots_;
  std::map<std::string, std::string> names_;
  std::set<std::string> used_;
  std::vector<Pending> pending_;
};

// Names of the first few images, for a one-line summary.
std::string first_paths(const std::vector<std::string>& paths, size_t shown = 5) {
  std::string out;
  for (size_t i = 0; i < paths.size() && i < shown; ++i) out += (i ? ", " : "") + paths[i];
  if (paths.size() > shown) out += " and " + std::to_string(paths.size() - shown) + " more";
  return out;
}

struct ReportArgs {
  std::string path, labels;
  int thumbnails = 24;
};

// The `gad score --report` page: one section of every scored image (labels from --labels or the
// MVTec folder names), thumbnails of the map --map-kind chose.
void write_score_report(const ReportArgs& a, const std::vector<ReportImage>& images, const Thumbnails& thumbs,
                        const Detector& detector, const References& refs, const std::string& command,
                        const std::vector<std::string>& failed, bool interrupted, const std::optional<Threshold>& t,
                        bool zero_shot) {
  HtmlReport report;
  report.title = "gad score report";
  report.thumbnails_each_end = a.thumbnails;
  report.facts = {"command: " + command, "model: " + detector.describe(),
                  zero_shot ? "zero-shot: " + detector.scorer_summary() + " (no references)" : "references: " + refs.summary(),
                  a.labels.empty() ? "labels: from folder names (…/test/good/ = normal, …/test/<other>/ = anomalous)"
                                   : "labels: " + a.labels};
  if (interrupted) report.facts.push_back("INTERRUPTED: the run was stopped; images after that were not scored");
  if (!failed.empty())
    report.facts.push_back(std::to_string(failed.size()) + " image(s) NOT SCORED (no score, no verdict; not in any "
                           "statistic): " + first_paths(failed, 20));
  ReportSection section;
  section.title = std::to_string(images.size()) + " scored images";
  section.images = images;
  if (t) {
    section.threshold = t->value;
    report.facts.push_back(zero_shot ? "threshold " + std::to_string(t->value) + " (" + t->method + " over the " +
                                           std::to_string(t->n) + " images); anomalous = score > threshold"
                                     : "threshold " + std::to_string(t->value) + " (false-alarm rate " + std::to_string(t->far) +
                                           ", " + t->method + ", n = " + std::to_string(t->n) + "); anomalous = score > threshold");
  }
  report.sections.push_back(std::move(section));
  write_bytes(a.path, render_html_report(report, std::cref(thumbs)));
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
  bool no_threshold = false, fail_on_anomalous = false, zero_shot = false;
  double zero_shot_z = 3.5;
};

nlohmann::ordered_json record_json(const ScoreRecord& r) {
  nlohmann::ordered_json j;
  j["path"] = r.path;
  j.update(score_json(r));
  return j;
}

// Every output place checked (and parent folders created) before any image is scored.
void prepare_outputs(const ScoreArgs& a) {
  if (!a.csv.empty()) prepare_output_file("--csv", a.csv);
  if (!a.report.path.empty()) prepare_output_file("--report", a.report.path);
  if (!a.maps.dir.empty()) prepare_output_dir("--maps", a.maps.dir);
  if (!(a.maps.sigma >= 0 && a.maps.sigma <= kMaxMapSigma))
    fail("--map-sigma: must be within 0..", kMaxMapSigma, " (px at a 240 px input; got ", a.maps.sigma, ")");
  if (a.no_threshold && a.fail_on_anomalous) fail("--fail-on-anomalous: needs a verdict; drop --no-threshold");
}

// Says, before scoring, what the set's threshold means here: refused by the library when the
// setup differs; a warning when only the precision differs or the setup predates recording it.
void check_threshold(const Detector& detector, const References& refs, bool no_threshold) {
  const auto t = refs.threshold();
  if (!t || no_threshold) return;
  if (t->setup.empty()) {
    log_warning("the threshold predates recorded scoring setups: it applies only if this is the setup it was "
                "calibrated under (recalibrate to record it)");
    return;
  }
  const auto now = detector.scoring_setup(refs);
  auto then = t->setup.find("precision");
  if (then != t->setup.end() && then->second != now.at("precision"))
    log_warning("the threshold was calibrated in " + then->second + ", scores are now " + now.at("precision") +
                " (scores move by ~0.01; recalibrate for an exact false-alarm rate)");
}

int run_score(ScoreArgs& a, const std::string& command) {
  const MapArgs& maps = a.maps;
  const ReportArgs& report = a.report;
  if (a.merge) {  // shard CSVs joined into the CSV of one run
    if (!a.csv.empty()) prepare_output_file("--csv", a.csv);
    const std::string merged = merge_score_csvs(a.queries);
    if (a.csv.empty()) std::cout << merged;
    else write_bytes(a.csv, merged);
    return kExitOk;
  }
  if (a.zero_shot && a.refs.given()) fail("--zero-shot: scores the images against each other; drop the references");
  if (a.zero_shot && !a.shard.empty()) fail("--zero-shot: every score depends on the whole collection; drop --shard");
  if (!a.zero_shot && !a.refs.given())
    fail("score: give --refs FILE, --ref-images ... --class NAME, --prompts FILE --class NAME, or --zero-shot");
  if (a.zero_shot && a.model.scorer == "auto") a.model.scorer = "musc";
  if (a.zero_shot && a.model.scorer != "musc" && a.model.scorer != "winclip")
    fail("--zero-shot: the zero-shot scorers are musc and winclip (got --scorer ", a.model.scorer, ")");
  if (a.zero_shot && a.model.scorer == "winclip" && a.refs.class_name.empty())
    fail("--class: zero-shot WinCLIP needs the object's name for its text prompts (e.g. --class bottle)");
  prepare_outputs(a);
  size_t not_images = 0;
  auto paths = score_inputs(a.queries, a.path_list, a.shard, &not_images);
  if (not_images) log_line("skipped " + std::to_string(not_images) + " file(s) that are not images (by extension)");
  Detector detector(a.model.resolve());
  log_line(detector.describe());
  log_line("scorer: " + detector.scorer_summary());
  maps.check(detector.has_heads());
  const References refs = a.zero_shot ? References() : a.refs.build(detector);
  if (!a.zero_shot) log_line("references: " + refs.summary());
  if (!a.zero_shot) check_threshold(detector, refs, a.no_threshold);
  std::optional<Threshold> threshold = a.no_threshold || a.zero_shot ? std::nullopt : refs.threshold();
  std::vector<ScoreRecord> zero_shot;
  if (a.zero_shot) {
    ScoreOptions zo;
    zo.use_threshold = !a.no_threshold;
    zo.zero_shot_z = a.zero_shot_z;
    zo.class_name = a.refs.class_name;
    catch_stop_signals();
    zo.interrupted = [] { return stop_requested().load(); };
    try {
      zero_shot = detector.score_zero_shot(paths, zo);
    } catch (const Error& e) {
      if (!stop_requested().load()) throw;
      log_line(std::string(e.what()));  // nothing was printed: every score depends on every image
      return kExitInterrupted;
    }
    for (const auto& r : zero_shot)
      if (r.ok() && r.threshold) {
        threshold = Threshold{*r.threshold, 0, r.verdict_rule, static_cast<int64_t>(zero_shot.size())};
        log_line("zero-shot verdict: " + r.verdict_rule + " over the collection (threshold " + csv_number(*r.threshold, "%.6g") + ")");
        break;
      }
  }
  CsvTable csv(score_csv_header(threshold.has_value()));
  MapFiles map_files(maps, a.queries);
  const std::vector<int> labels = report_labels(paths, report.labels);
  std::vector<ReportImage> scored;
  std::vector<std::string> failed;
  size_t done = 0, anomalous = 0;
  bool interrupted = false;
  Thumbnails thumbs(maps.sigma);
  ScoreOptions options;
  options.batch = a.batch;
  options.use_threshold = !a.no_threshold;
  catch_stop_signals();  // stop after the current batch; outputs complete for what was scored
  options.interrupted = [] { return stop_requested().load(); };
  Progress progress(paths.size(), "images");
  auto handle = [&](const ScoreRecord& r) {
    const int label = labels[done++];
    nlohmann::ordered_json j = record_json(r);
    if (r.ok()) {
      scored.push_back({r.path, r.score, label});
      anomalous += r.anomalous().value_or(false);
      if (!report.path.empty() && !r.residual_map.empty()) thumbs.add(r.path, maps.kind == "holistic" ? r.holistic_map : r.residual_map, r.grid, r.geometry);
      map_files.add(r);
      if (!maps.dir.empty()) j["map"] = map_files.overlay(r.path);
    } else {
      failed.push_back(r.path);
      interrupted = interrupted || stop_requested().load();
    }
    std::cout << j.dump() << "\n" << std::flush;
    csv.add_row(score_csv_row(r, threshold.has_value(), r.ok() ? map_files.overlay(r.path) : ""));
    progress.update(done);
  };
  if (a.zero_shot) {
    for (const auto& r : zero_shot) handle(r);
  } else {
    detector.score(refs, paths, options, handle);
  }
  progress.finish();
  map_files.write_all(threshold ? threshold->map_top : 0, detector.max_pixels());
  if (!a.csv.empty()) write_bytes(a.csv, csv.text());  // only after every image: no partial files
  if (!report.path.empty())
    write_score_report(report, scored, thumbs, detector, refs, command, failed, interrupted, threshold, a.zero_shot);
  std::string summary = score_summary(scored, threshold);
  if (!failed.empty())
    summary += (summary.empty() ? "" : "; ") + std::to_string(failed.size()) + " of " + std::to_string(paths.size()) +
               " image(s) NOT SCORED (error rows; no verdict): " + first_paths(failed);
  if (interrupted) summary = "interrupted: " + summary;
  if (!report.path.empty()) summary += (summary.empty() ? "wrote " : "; report: ") + report.path;
  if (!summary.empty()) log_line(summary);
  if (interrupted) return kExitInterrupted;
  if (!failed.empty()) return kExitImagesFailed;
  return a.fail_on_anomalous && anomalous ? kExitAnomalous : kExitOk;
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
  add_list_option(score, "--ref-images", a->refs.ref_images, "reference (normal) images or directories (comma-separated\n"
                                                          "or repeated; never takes the query arguments)");
  a->refs.add_images_and_class(score);
  score->add_option("--batch", a->batch, "images per forward pass (default 8)");
  score->add_flag("--zero-shot", a->zero_shot, "no references: the query images score each other (MuSc; at least 5 images),\n"
                                               "or with --scorer winclip --class NAME each its text prompts alone (CLIP models);\n"
                                               "verdicts by a robust z-score over the collection");
  score->add_option("--zero-shot-z", a->zero_shot_z, "zero-shot verdict: anomalous when (score - median) / (1.4826 MAD) over\n"
                                                     "the collection exceeds this (default 3.5)");
  score->add_option("--csv", a->csv, "also write all results to a CSV file (parent folders are created)");
  score->add_flag("--no-threshold", a->no_threshold, "scores without a verdict: ignore the set's threshold (needed when it\n"
                                                     "was calibrated under another scoring setup)");
  score->add_flag("--fail-on-anomalous", a->fail_on_anomalous, "exit code 4 when some image is flagged anomalous (for\n"
                                                               "scripts and CI); failed images still give 3");
  MapArgs& maps = a->maps;
  ReportArgs& report = a->report;
  score->add_option("--maps", maps.dir,
                    "write per image DIR/<stem>.png (image + anomaly-map overlay + colour bar) and DIR/<stem>_map.png\n"
                    "(the patch residual map in the image's own pixels, 16-bit: value x 65535)");
  score->add_option("--map-sigma", maps.sigma, "Gaussian smoothing of the maps, in pixels at a 240 px input (default 4;\n"
                                              "0..64)");
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
