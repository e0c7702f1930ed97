// `gad serve` — a REST service that keeps reference sets in SQLite and scores images against them.
//
// HTTP handlers only parse, validate (every limit is decided from the request line, headers and
// image headers, before anything is decoded) and enqueue; model worker threads (one gad::Detector
// each, serve/model_queue.h) decode and score. See /openapi.json for the API and docs/service.md
// for the operational contract.
//
// Lifecycle, driven by the program (which owns the signals):
//   Server server(options, log);  // checks options, opens the database, binds: no thread yet
//   server.start();               // HTTP thread; /healthz answers 503 "loading"
//   server.load_model();          // engines + workers; /healthz answers 200 "ok"
//   ... until a signal, or until failed() ...
//   server.begin_drain();         // stop accepting, answer every in-flight request
//   server.wait_drained(timeout); // ... and join every thread
// The destructor stops and joins whatever is still running (it may wait for in-flight work).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "engine/engine.h"

namespace gad::serve {

struct ServeOptions {
  ModelOptions engine;  // engine.max_pixels: the largest image accepted (width x height)
  std::string db = "refs.sqlite";
  std::string host = "127.0.0.1";
  int port = 8080;              // 0: any free port (printed on stderr)
  std::string token;            // non-empty: every request needs "Authorization: Bearer <token>",
                                // but the probes /healthz and /readyz (they reveal only readiness)
  bool metrics_public = false;  // with a token: /metrics answers without it too (a scraper)
  size_t max_body = 20u << 20;  // bytes
  int workers = 1;              // model worker threads, one Detector each
  int queue = 64;               // images queued or being scored; beyond: 429
  int max_k = 32;               // reference images per set
  int max_images = 32;          // images per score request (at most `queue`) or calibrate request
                                // (beyond `queue`, scored in chunks)
  int batch = 8;                // images per forward pass
  double batch_wait_ms = 5;     // how long a worker waits to fill a batch
  int http_threads = 64;        // connection threads (keep-alive and stalled connections hold one each)
  int read_timeout_s = 5;       // a connection silent this long mid-request is dropped
  int keep_alive_s = 2;         // an idle keep-alive connection is closed after this (it holds a thread)
  size_t cache_bytes = 0;       // in-memory reference-set cache; 0: a quarter of RAM
  bool verbose = false;         // one log line per request on stderr
};

// "20MB", "512k", "1048576", "1.5MiB" -> bytes (k/M/G = 1024-based). `option` names the flag in
// errors. Throws gad::Error.
size_t parse_size(const std::string& text, const std::string& option = "--max-body");

class Server {
 public:
  using Log = std::function<void(const std::string&)>;
  // Throws gad::Error (one line: the option, the database, or "cannot listen on HOST:PORT: reason").
  Server(const ServeOptions& options, Log log);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;     // the bound port
  void start();         // starts the HTTP thread
  void load_model();    // throws gad::Error for bad weights; the server keeps answering 503 until then
  bool failed() const;  // the HTTP loop ended by itself, not by begin_drain()
  // Draining: stop accepting connections; requests already read are answered. wait_drained()
  // returns true once every in-flight request is answered and every thread joined, false when
  // `wait` passed first (call again, or give up and _exit: threads are still running).
  void begin_drain();
  bool wait_drained(std::chrono::milliseconds wait);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gad::serve
