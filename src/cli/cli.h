// What every `gad` subcommand shares: the model options, how a command registers itself, the
// log line format. Each subcommand lives in its own <name>_command.cpp and is a client of the
// public API (<gad/gad.hpp>); main.cpp only wires them up.
#pragma once

#include <CLI/CLI.hpp>

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include <gad/gad.hpp>

namespace gad::cli {

// Exit codes every command shares (docs/usage.md, "Exit codes and per-image errors").
constexpr int kExitOk = 0;
constexpr int kExitError = 1;           // a fatal error: one line on stderr, no partial output
constexpr int kExitInternal = 2;        // a bug
constexpr int kExitImagesFailed = 3;    // the run finished, but some images have an error row
constexpr int kExitAnomalous = 4;       // --fail-on-anomalous: some image was flagged
constexpr int kExitInterrupted = 130;   // SIGINT/SIGTERM: complete outputs for what was done

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
  std::string precision = "auto", scorer = "auto", scorer_options_file;
  void add_to(CLI::App* app);
  void add_scorer_options(CLI::App* app);  // commands that build reference sets
  // The options with the enums filled in; sets the process's threads (the CLI owns them).
  ModelOptions resolve();
};

// The reference set a command was given: --refs FILE, reference images + --class, or --prompts.
struct RefArgs {
  std::string refs_file, class_name, prompts;
  std::vector<std::string> ref_images;
  int k = 0;  // 0 (not given): use every given image
  uint64_t seed = 0;
  CLI::Option *k_option = nullptr, *seed_option = nullptr, *class_option = nullptr;
  void add_images_and_class(CLI::App* app);
  bool given() const { return !refs_file.empty() || !ref_images.empty() || !prompts.empty(); }
  References build(Detector& detector) const;  // empty References when none was given
};

// An option taking a list: comma-separated and/or repeated (`--taps a,b` or `--taps a --taps b`).
// It never takes the next word, so positionals after it stay positionals.
CLI::Option* add_list_option(CLI::App* app, const std::string& name, std::vector<std::string>& values,
                             const std::string& help);

// A saved set, with a warning when it predates checksums.
References load_set(Detector& detector, const std::string& path);

void log_line(const std::string& s);
void log_warning(const std::string& s);
// Writes all of `bytes` or nothing (temp file + rename).
void write_bytes(const std::string& path, const std::string& bytes);
// Checks, before any work, that an output file can be written: creates its parent folders (one
// rule for every output option) and refuses a directory or an unwritable place, naming `option`.
void prepare_output_file(const std::string& option, const std::string& path);
// The same for an output folder (created when missing).
void prepare_output_dir(const std::string& option, const std::string& dir);

// SIGINT/SIGTERM set one process-wide flag (a signal handler can reach nothing else); commands
// that can stop cleanly poll it between batches. Installed by the commands that poll it.
void catch_stop_signals();
const std::atomic<bool>& stop_requested();
// SIGHUP sets another (`gad watch` re-reads its set); the command clears it when it acts on it.
void catch_reload_signal();
std::atomic<bool>& reload_requested();

// One per subcommand file.
void add_inspect_command(CLI::App& app, Context& ctx);
void add_refs_command(CLI::App& app, Context& ctx);
void add_score_command(CLI::App& app, Context& ctx);
void add_bench_command(CLI::App& app, Context& ctx);
void add_train_command(CLI::App& app, Context& ctx);
void add_models_command(CLI::App& app, Context& ctx);
void add_serve_command(CLI::App& app, Context& ctx);
void add_data_command(CLI::App& app, Context& ctx);
void add_watch_command(CLI::App& app, Context& ctx);

}  // namespace gad::cli
