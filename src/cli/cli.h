// What every `gad` subcommand shares: the model options, how a command registers itself, the
// log line format. Each subcommand lives in its own <name>_command.cpp and is a client of the
// public API (<gad/gad.hpp>); main.cpp only wires them up.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include <gad/gad.hpp>

namespace gad::cli {

// Set by the chosen subcommand's parse callback; main runs it inside its error handling.
using Runner = std::function<int()>;

struct Context {
  Runner run;
  std::string command;  // "gad" and the arguments, as recorded in outputs (not argv[0]: no install path)
};

// --model, --heads, --threads, --precision, ... on every command that loads a model.
struct ModelArgs {
  ModelOptions options;
  int threads = 0;
  int threads_in_use = 0;  // set by resolve()
  std::string precision = "auto", scorer = "auto";
  void add_to(CLI::App* app);
  void add_scorer_options(CLI::App* app);  // commands that build reference sets
  // The options with the enums filled in; sets the process's threads (the CLI owns them).
  ModelOptions resolve();
};

// The reference set a command was given: --refs FILE, reference images + --class, or --prompts.
struct RefArgs {
  std::string refs_file, class_name, prompts;
  std::vector<std::string> ref_images;
  int k = -1;  // -1: use every given image
  uint64_t seed = 0;
  void add_images_and_class(CLI::App* app);
  bool given() const { return !refs_file.empty() || !ref_images.empty() || !prompts.empty(); }
  References build(Detector& detector) const;  // empty References when none was given
};

void log_line(const std::string& s);
// Writes all of `bytes` or nothing (temp file + rename).
void write_bytes(const std::string& path, const std::string& bytes);

// One per subcommand file.
void add_inspect_command(CLI::App& app, Context& ctx);
void add_refs_command(CLI::App& app, Context& ctx);
void add_score_command(CLI::App& app, Context& ctx);
void add_bench_command(CLI::App& app, Context& ctx);
void add_train_command(CLI::App& app, Context& ctx);
void add_models_command(CLI::App& app, Context& ctx);
void add_serve_command(CLI::App& app, Context& ctx);
void add_data_command(CLI::App& app, Context& ctx);

}  // namespace gad::cli
