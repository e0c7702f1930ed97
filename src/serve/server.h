// `gad serve` — a REST service that keeps reference sets in SQLite and scores images against them.
//
// HTTP handlers only parse, validate and enqueue; model worker threads (one gad::Engine each)
// drain the queue in micro-batches of images that share a reference set. See /openapi.json for
// the API, and README.md ("Service") for the operational contract.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

#include "engine/engine.h"

namespace gad::serve {

struct ServeOptions {
  EngineOptions engine;
  std::string db = "refs.sqlite";
  std::string host = "127.0.0.1";
  int port = 8080;                   // 0: any free port (printed on stderr)
  std::string token;                 // non-empty: every request needs "Authorization: Bearer <token>"
  size_t max_body = 20u << 20;       // bytes
  int workers = 1;                   // model worker threads, one Engine each
  int queue = 64;                    // images queued or being scored; beyond: 429
  int max_k = 32;                    // reference images per set
  int max_images = 32;               // images per score request
  int batch = 8;                     // images per forward pass
  double batch_wait_ms = 5;          // how long a worker waits to fill a batch
  int http_threads = 64;             // connection threads (keep-alive connections hold one each)
  bool verbose = false;              // one log line per request on stderr
};

// "20MB", "512k", "1048576", "1.5MiB" -> bytes (k/M/G = 1024-based). Throws gad::Error.
size_t parse_size(const std::string& text);

// Runs until SIGTERM/SIGINT, then drains in-flight requests and returns 0. `log` gets one-line
// messages (the bound address first: "listening on http://HOST:PORT").
int run_server(const ServeOptions& options, const std::function<void(const std::string&)>& log);

}  // namespace gad::serve
