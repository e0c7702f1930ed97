// `gad bench` — the generalist-AD protocol in one run: for every category of every MVTec-layout
// dataset, K normal references are drawn (seeded) from the sorted train/good images for each
// draw, all of test/ is scored by every requested scorer, and AUROC / AUPRC are reported per
// (category, scorer, K, draw) with mean ± std over draws. Zero-shot scorers (musc,
// winclip-zero-shot) give one K = 0 row per category.
//
// The scorers are the product's (src/scorers), run through the same path as `gad score`: each
// draw's set is built from the references' views by Scorer::build, test images are encoded by
// scorers::encode_batches (once per distinct feature request, shared by every K, draw and scorer
// that asks the same) and scored by Scorer::score. Outputs in OUT: results.csv, scores.csv,
// draws.json, summary.md, curves/<dataset>_<category>_K<k>.svg (ROC and PR of draw 0).
// Categories with ground-truth masks (ground_truth/<defect>/<stem>_mask.png for every defect
// image) also get pixel AUROC and AUPRO (src/eval/pixel_metrics.h) of each scorer's map.
// --dump-maps writes what InCTRL's heads see (maps.csv), so learners can be compared offline on it.
// Files are rewritten after each finished category, so an interrupted run keeps complete results
// for the categories it finished.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/load_model.h"

namespace gad {

struct BenchOptions {
  ModelOptions files;
  std::string precision = "auto";
  int threads = 0;
  std::vector<std::string> roots;  // dataset roots: MVTec layout, or a single category folder
  std::vector<int> ks = {2, 4, 8};
  int draws = 3;
  uint64_t seed = 0;
  std::vector<std::string> methods = {"inctrl", "patch-knn", "image-knn"};  // scorers, by their bench names
  // A JSON object {scorer name: its options}; "" = every scorer at its defaults (the papers').
  std::string scorer_options;
  std::string out_dir;
  std::string draws_file;    // reuse draws from an earlier run's draws.json
  std::string prompt_sets_dir;  // references from DIR/<K>/<category>.pt (InCTRL's released prompt sets)
  std::string command_line;  // recorded in summary.md
  int batch = 8;
  int pixel_max_side = 256;
  bool dump_maps = false;  // also write OUT/maps.csv: per scored image and draw, s_patch, s_img, s_hol and M
  bool report = false;  // also write OUT/report.html (src/report/html_report.h)  // maps and masks are shrunk to this longer side for pixel metrics
};

// Returns the number of categories finished. `stop` is polled between batches (Ctrl-C).
int run_benchmark(const BenchOptions& options, const std::atomic<bool>* stop);

}  // namespace gad
