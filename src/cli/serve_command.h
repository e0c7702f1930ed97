// `gad serve`: option parsing, signals and the server's lifecycle (serve/server.h).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "engine/engine.h"
#include "serve/server.h"

struct ServeArgs {
  gad::serve::ServeOptions options;
  std::string max_body = "20MB";
  double cache_mb = 0;  // 0: a quarter of RAM
  double drain_timeout_s = 30;
};

void add_serve_options(CLI::App* cmd, ServeArgs& args);
// Serves until SIGTERM/SIGINT, drains, returns 0 (1 when the drain timed out). Start-up failures
// throw gad::Error before any thread runs.
int run_serve(const gad::EngineOptions& model, ServeArgs& args, const std::function<void(const std::string&)>& log);
