// `gad refs build` (encode K normal images once, save a .gadref), `gad refs calibrate` (store a
// conformal threshold from normal images only; src/inctrl/calibration.h) and `gad refs show`.
#include <cstdio>
#include <iostream>

#include "engine/engine.h"

#include "cli/cli.h"
#include "engine/score_json.h"
#include "util/error.h"
#include "util/image_list.h"

namespace gad::cli {
namespace {

struct BuildArgs {
  ModelArgs model;
  RefArgs refs;
  std::string out;
};

int run_build(BuildArgs& a) {
  if (a.refs.ref_images.empty() && a.refs.prompts.empty()) fail("refs build: no reference images (or --prompts FILE) given");
  prepare_output_file("--output", a.out);
  Detector detector(a.model.resolve());
  log_line(detector.describe());
  const References refs = a.refs.build(detector);
  refs.save(a.out);
  log_line("wrote " + a.out + ": " + refs.summary());
  return 0;
}

struct CalibrateArgs {
  ModelArgs model;
  std::string refs_file, out;
  std::vector<std::string> normals;
  double far = 0.05;
  bool allow_few = false;
};

std::string threshold_line(const Threshold& t) {
  std::string line = std::to_string(t.value) + " (far " + std::to_string(t.far) + ", " + t.method +
                     ", n = " + std::to_string(t.n);
  line += t.time.empty() ? "" : ", " + t.time;
  return line + (t.map_top > 0 ? ", map top " + std::to_string(t.map_top) : "") + ")";
}

int run_calibrate(CalibrateArgs& a) {
  const std::string out = a.out.empty() ? a.refs_file : a.out;
  if (!(a.far > 0 && a.far < 1)) fail("--far: the false-alarm rate must be in (0, 1) (got ", a.far, ")");
  prepare_output_file("--output", out);
  Detector detector(a.model.resolve());
  log_line(detector.describe());
  const References refs = load_set(detector, a.refs_file);
  if (a.normals.empty())
    log_line("warning: no --normals: leave-one-out over the references; each is scored against only K - 1 others, "
             "which over-estimates normal scores for small K (threshold biased high; fewer false alarms than asked)");
  std::string warning;
  const References calibrated =
      detector.calibrate(refs, a.normals.empty() ? a.normals : expand_image_args(a.normals, "normals"),
                         CalibrationOptions{a.far, a.allow_few}, &warning);
  if (!warning.empty()) log_warning(warning);
  calibrated.save(out);
  const Threshold t = *calibrated.threshold();
  log_line("wrote " + out + ": threshold " + threshold_line(t));
  std::cout << threshold_json(t).dump() << "\n";
  return 0;
}

// Everything a set says about itself, without loading a model.
int run_show(const std::string& path) {
  std::string model;
  const References refs = peek_references(path, &model);
  std::printf("file: %s\nchecksum: %s\nmodel: %s\n%s\n", path.c_str(),
              refs.integrity() == "verified" ? "verified" : "none (written before sets carried one)", model.c_str(),
              refs.summary().c_str());
  std::string taps;
  for (const auto& t : refs.taps()) taps += (taps.empty() ? "" : ",") + t;
  if (!taps.empty()) std::printf("taps: %s\n", taps.c_str());
  const auto sources = refs.sources();
  std::printf("references (%zu):\n", sources.size());
  for (const auto& s : sources) std::printf("  %s\n", s.c_str());
  const auto history = refs.threshold_history();
  if (history.empty()) std::printf("threshold: none (not calibrated)\n");
  else std::printf("thresholds (%zu, oldest first; the last applies):\n", history.size());
  for (const auto& t : history) {
    std::printf("  %s\n", threshold_line(t).c_str());
    std::string setup;
    for (const auto& [key, value] : t.setup) setup += (setup.empty() ? "" : ", ") + key + " " + (value.empty() ? "-" : value);
    if (!setup.empty()) std::printf("    setup: %s\n", setup.c_str());
  }
  return 0;
}

}  // namespace

void add_refs_command(CLI::App& app, Context& ctx) {
  auto* refs = app.add_subcommand("refs", "reference sets");
  refs->require_subcommand(1);

  auto b = std::make_shared<BuildArgs>();
  auto* build = refs->add_subcommand("build", "encode K normal images once and save a reference set");
  b->model.add_to(build);
  b->model.add_scorer_options(build);
  build->add_option("images", b->refs.ref_images, "normal images or directories (or give --prompts FILE)");
  b->refs.add_images_and_class(build);
  build->add_option("-o,--output", b->out, "output file (.gadref)")->required();
  build->callback([b, &ctx] { ctx.run = [b] { return run_build(*b); }; });

  auto c = std::make_shared<CalibrateArgs>();
  auto* calibrate = refs->add_subcommand("calibrate", "estimate a decision threshold from normal images only and "
                                                      "store it in the reference set");
  c->model.add_to(calibrate);
  calibrate->add_option("--refs", c->refs_file, "reference set file (.gadref)")->required();
  add_list_option(calibrate, "--normals", c->normals, "held-out normal images or directories (not the references);\n"
                                                 "default: leave-one-out over the references (biased for small K)");
  calibrate->add_option("--far", c->far, "false-alarm rate on normal images (default 0.05); threshold = the\n"
                                         "ceil((n+1)(1-far))-th smallest of n normal scores (conformal)");
  calibrate->add_option("-o,--output", c->out, "write the calibrated set here (default: update --refs in place)");
  calibrate->add_flag("--allow-few", c->allow_few, "accept fewer normals than --far needs (ceil(1/far) - 1): threshold =\n"
                                                   "the largest normal score plus a margin, with a warning");
  calibrate->callback([c, &ctx] { ctx.run = [c] { return run_calibrate(*c); }; });

  auto show_path = std::make_shared<std::string>();
  auto* show = refs->add_subcommand("show", "print a reference set's sources, K, taps, scorer, checksum state and "
                                            "threshold history (no model needed)");
  show->add_option("set", *show_path, "reference set file (.gadref)")->required();
  show->callback([show_path, &ctx] { ctx.run = [show_path] { return run_show(*show_path); }; });
}

}  // namespace gad::cli
