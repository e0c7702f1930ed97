// `gad bench`: option parsing and Ctrl-C handling around gad::run_benchmark.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "engine/engine.h"

struct BenchArgs {
  std::vector<std::string> data;
  std::string ks = "2,4,8", scorers = "inctrl,patch-knn,image-knn", out, draws_file, prompt_sets;
  int draws = 3, batch = 8;
  bool report = false;
  bool dump_maps = false;
  uint64_t seed = 0;
};

void add_bench_options(CLI::App* cmd, BenchArgs& args);
int run_bench(const gad::EngineOptions& model, const BenchArgs& args, int argc, char** argv);
