// `gad bench`: option parsing and Ctrl-C handling around gad::run_benchmark.
#include "cli/cli.h"

#include <csignal>
#include <sstream>

#include "benchmark/benchmark.h"
#include "engine/load_model.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad::cli {

namespace {

struct BenchArgs {
  ModelArgs model;
  std::vector<std::string> data;
  std::string ks = "2,4,8", scorers = "inctrl,patch-knn,image-knn", out, draws_file, prompt_sets, scorer_options;
  int draws = 3, batch = 8;
  bool report = false;
  bool dump_maps = false;
  uint64_t seed = 0;
};


std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

void add_bench_options(CLI::App* cmd, BenchArgs& a) {
  a.model.add_to(cmd);
  add_list_option(cmd, "--data", a.data, "dataset roots in MVTec layout (<category>/train/good, test/good, test/<defect>)")
      ->required();
  cmd->add_option("--k", a.ks, "comma-separated K values (default 2,4,8)");
  cmd->add_option("--draws", a.draws, "reference draws per K (default 3)");
  cmd->add_option("--seed", a.seed, "seed of the reference draws (default 0)");
  cmd->add_option("--scorers", a.scorers, "comma-separated: inctrl, patch-knn, image-knn, winclip, anomalydino,\n"
                  "anomalydino-rot, subspacead, musc and winclip-zero-shot (zero-shot: K = 0 rows); default: the\n"
                  "first three. Each runs exactly as gad score --scorer NAME does");
  cmd->add_option("--scorer-options", a.scorer_options, "a JSON file: an object of options per scorer name, e.g.\n"
                  "{\"subspacead\": {\"aug_count\": 0}} (keys as for gad score --scorer-options, docs/scorers.md)");
  cmd->add_option("--draws-file", a.draws_file, "reuse the reference draws of an earlier run's draws.json");
  cmd->add_option("--prompt-sets", a.prompt_sets, "take the references from DIR/<K>/<category>.pt (InCTRL's released\n"
                                                  "few-shot prompt sets, fs_samples/<dataset>) instead of drawing them;\n"
                                                  "one draw per K (the paper's test protocol)");
  cmd->add_option("--batch", a.batch, "images per forward pass (default 8)");
  cmd->add_option("-o,--output", a.out, "output directory")->required();
  cmd->add_flag("--dump-maps", a.dump_maps, "also write OUT/maps.csv: per test image and draw, label, s_patch, s_img and\n"
                                             "s_hol (with heads), global-feature residuals (g_mean, g_nn), the references'\n"
                                             "own leave-one-out residuals (ref_*) and the patch residual map M, row-major");
  cmd->add_flag("--report", a.report, "also write OUT/report.html: tables, per category a score histogram, ROC/PR of\n"
                                      "every scorer and overlay thumbnails sorted by score (self-contained HTML)");
}

int run_bench(BenchArgs& a, const std::string& command) {
  gad::BenchOptions o;
  o.files = a.model.resolve();
  o.precision = a.model.precision;
  o.threads = a.model.threads;
  o.roots = a.data;
  o.ks.clear();
  for (const auto& k : split(a.ks)) {
    try {
      o.ks.push_back(std::stoi(k));
    } catch (const std::exception&) {
      gad::fail("--k: '", k, "' is not a number");
    }
  }
  if (o.ks.empty()) gad::fail("--k: no K given");
  o.draws = a.draws;
  o.seed = a.seed;
  o.methods = split(a.scorers);
  if (!a.scorer_options.empty()) o.scorer_options = gad::read_file_text(a.scorer_options);
  o.out_dir = a.out;
  o.draws_file = a.draws_file;
  o.prompt_sets_dir = a.prompt_sets;
  if (!a.prompt_sets.empty()) o.draws = 1;
  o.batch = a.batch;
  o.report = a.report;
  o.dump_maps = a.dump_maps;
  o.command_line = command;
  prepare_output_dir("--output", a.out);
  catch_stop_signals();  // the benchmark polls the flag between batches and keeps finished categories
  int finished = gad::run_benchmark(o, &stop_requested());
  std::fprintf(stderr, "gad: wrote %s/summary.md (%d categor%s)\n", a.out.c_str(), finished, finished == 1 ? "y" : "ies");
  return stop_requested().load() ? kExitInterrupted : kExitOk;
}

}  // namespace

void add_bench_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<BenchArgs>();
  auto* cmd = app.add_subcommand("bench", "the generalist-AD benchmark: K-shot AUROC/AUPRC per category and scorer");
  add_bench_options(cmd, *a);
  cmd->callback([a, &ctx] { ctx.run = [a, &ctx] { return run_bench(*a, ctx.command); }; });
}

}  // namespace gad::cli
