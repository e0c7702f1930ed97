// Metrics — what `gad serve` reports on /metrics (Prometheus text format 0.0.4): requests by
// route, method and status with a latency histogram, rejected requests by reason, the model
// queue, the reference-set cache and the model. Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "serve/ref_cache.h"
#include "util/prometheus.h"

namespace gad::serve {

// Gauges read at render time.
struct ServerState {
  bool ready = false;
  int64_t queue_depth = 0;
  int queue_capacity = 0;
  int64_t refsets = 0;
  uint64_t batches = 0, images_scored = 0;
  RefCache::Stats cache;
  std::string model, fingerprint;
  int workers = 0;
};

class Metrics {
 public:
  void observe(const std::string& route, const std::string& method, int status, double seconds);
  void rejected(const std::string& reason);
  std::string render(const ServerState& state);

 private:
  std::mutex m_;
  std::map<std::string, uint64_t> requests_, rejected_;
  std::map<std::string, Histogram> hist_;
};

// The route pattern of a path, for labels ("/v1/refsets/{id}/score", ..., "other").
std::string route_label(const std::string& path);

}  // namespace gad::serve
