// gad — the command-line front end. Each subcommand is one <name>_command.cpp over the public API;
// results go to stdout, logs and errors to stderr (one line, non-zero exit).
#include <cstdio>
#include <string>

#include "cli/cli.h"
#include "util/allocator.h"

int main(int argc, char** argv) {
  gad::tune_allocator();
  CLI::App app{"gad — generalist anomaly detection (InCTRL) on CPUs"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(gad::version()));

  gad::cli::Context ctx;
  ctx.command = "gad";
  for (int i = 1; i < argc; ++i) ctx.command += " " + std::string(argv[i]);
  for (auto add : {gad::cli::add_inspect_command, gad::cli::add_refs_command, gad::cli::add_score_command,
                   gad::cli::add_bench_command, gad::cli::add_train_command, gad::cli::add_models_command,
                   gad::cli::add_serve_command, gad::cli::add_data_command, gad::cli::add_watch_command})
    add(app, ctx);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return ctx.run ? ctx.run() : 0;
  } catch (const gad::Error& e) {
    std::fprintf(stderr, "gad: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::string msg = e.what();
    std::fprintf(stderr, "gad: internal error: %s\n", msg.substr(0, msg.find('\n')).c_str());
    return 2;
  }
}
