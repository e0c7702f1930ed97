// A station line's counters and latency histograms, for `gad watch --metrics-port` (Prometheus
// text format) and the periodic summary line. Thread-safe: the line writes, the metrics server
// and the logger read.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "util/prometheus.h"

namespace gad::station {

class LineMetrics {
 public:
  // One stored result: "ok", "ng", "scored" (no threshold) or "error"; stage times in seconds.
  void record(const std::string& result, double queue_s, double score_s, double store_s, double latency_s);
  void dropped(int64_t n);         // undelivered results (--when-full drop-oldest)
  void frames_dropped(int64_t n);  // frames a live source produced while the line was behind
  // Appends this line's samples (label line="NAME") to `o`; `backlog` is read by the caller.
  void render(std::ostringstream& o, const std::string& line, int64_t backlog) const;
  // "N images (a ok, b ng, c errors) in T s = R/s; latency p50 X ms, p99 Y ms" since the last call.
  std::string period_summary();

 private:
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t> results_;
  uint64_t dropped_ = 0, frames_dropped_ = 0;
  Histogram queue_, score_, store_, latency_;
  std::map<std::string, uint64_t> period_results_;
  std::vector<double> period_latency_;
  std::chrono::steady_clock::time_point period_start_ = std::chrono::steady_clock::now();
};

// The HELP/TYPE header lines of every line metric, written once before the lines' samples.
void render_station_metric_headers(std::ostringstream& o);

}  // namespace gad::station
