// `gad inspect`: encode images and print their size, global-embedding norm and time; --dump
// writes the tensors (and, with references, the score chain) for parity checks.
#include <cstdio>

#include "cli/cli.h"
#include "engine/engine.h"
#include "util/image_list.h"

namespace gad::cli {
namespace {

struct InspectArgs {
  ModelArgs model;
  RefArgs refs;
  std::vector<std::string> images;
  std::string dump;
};

int run_inspect(InspectArgs& a) {
  Detector detector(a.model.resolve());
  log_line(detector.describe());
  const References refs = a.refs.build(detector);
  for (const auto& r : inspect(detector, expand_image_args(a.images, "images"), a.dump, &refs))
    std::printf("%s  %dx%d  |global| = %.6f  %.1f ms\n", r.path.c_str(), r.width, r.height, r.global_norm, r.ms);
  if (!a.dump.empty()) log_line("wrote " + a.dump);
  return 0;
}

}  // namespace

void add_inspect_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<InspectArgs>();
  auto* cmd = app.add_subcommand("inspect", "encode images and print size, global-embedding norm and time");
  a->model.add_to(cmd);
  a->model.add_scorer_options(cmd);
  cmd->add_option("images", a->images, "image files or directories")->required();
  cmd->add_option("--dump", a->dump,
                  "write tensors to a safetensors file, <i> = 0-based image index on the command line:\n"
                  "  <i>.pixel_values [3,H,W], <i>.cls_embedding [D], <i>.tap.<l> [P_l,W_l] per tap on its own\n"
                  "  grid, and <i>.tapped_tokens [L,P,W] when the taps share one grid (CLIP: blocks 7/9/11, CLS\n"
                  "  dropped, row-major); with --ref-images/--class or --refs also\n"
                  "  <i>.residual_map [P], <i>.s_patch, <i>.s_text, <i>.s_img, <i>.holistic_map [P],\n"
                  "  <i>.s_hol, <i>.final_score (0-d)");
  add_list_option(cmd, "--ref-images", a->refs.ref_images, "reference (normal) images or directories");
  cmd->add_option("--refs", a->refs.refs_file, "reference set file (.gadref)");
  a->refs.add_images_and_class(cmd);
  cmd->callback([a, &ctx] { ctx.run = [a] { return run_inspect(*a); }; });
}

}  // namespace gad::cli
