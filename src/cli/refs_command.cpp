// `gad refs build` (encode K normal images once, save a .gadref) and `gad refs calibrate`
// (store a conformal threshold from normal images only; src/inctrl/calibration.h).
#include <iostream>

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
};

int run_calibrate(CalibrateArgs& a) {
  const std::string out = a.out.empty() ? a.refs_file : a.out;
  if (!(a.far > 0 && a.far < 1)) fail("--far: the false-alarm rate must be in (0, 1) (got ", a.far, ")");
  Detector detector(a.model.resolve());
  log_line(detector.describe());
  const References refs = detector.load_references(a.refs_file);
  if (a.normals.empty())
    log_line("warning: no --normals: leave-one-out over the references; each is scored against only K - 1 others, "
             "which over-estimates normal scores for small K (threshold biased high; fewer false alarms than asked)");
  std::string warning;
  const References calibrated =
      detector.calibrate(refs, a.normals.empty() ? a.normals : expand_image_args(a.normals, "normals"), a.far, &warning);
  if (!warning.empty()) log_line("warning: " + warning);
  calibrated.save(out);
  const Threshold t = *calibrated.threshold();
  log_line("wrote " + out + ": threshold " + std::to_string(t.value) + " (far " + std::to_string(t.far) + ", " + t.method +
           ", n = " + std::to_string(t.n) + ")");
  std::cout << threshold_json(t).dump() << "\n";
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
  calibrate->add_option("--normals", c->normals, "held-out normal images or directories (not the references);\n"
                                                 "default: leave-one-out over the references (biased for small K)");
  calibrate->add_option("--far", c->far, "false-alarm rate on normal images (default 0.05); threshold = the\n"
                                         "ceil((n+1)(1-far))-th smallest of n normal scores (conformal)");
  calibrate->add_option("-o,--output", c->out, "write the calibrated set here (default: update --refs in place)");
  calibrate->callback([c, &ctx] { ctx.run = [c] { return run_calibrate(*c); }; });
}

}  // namespace gad::cli
