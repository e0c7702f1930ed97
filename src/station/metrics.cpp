#include "station/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gad::station {

void LineMetrics::record(const std::string& result, double queue_s, double score_s, double store_s, double latency_s) {
  std::lock_guard<std::mutex> lock(mutex_);
  results_[result]++;
  period_results_[result]++;
  queue_.observe(queue_s);
  score_.observe(score_s);
  store_.observe(store_s);
  latency_.observe(latency_s);
  if (period_latency_.size() < 1000000) period_latency_.push_back(latency_s);
}

void LineMetrics::dropped(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  dropped_ += static_cast<uint64_t>(n);
}

void LineMetrics::frames_dropped(int64_t n) {
  std::lock_guard<std::mutex> lock(mutex_);
  frames_dropped_ += static_cast<uint64_t>(n);
}

void render_station_metric_headers(std::ostringstream& o) {
  o << "# HELP gad_watch_results_total Results stored, by line and result (ok, ng, scored, error).\n"
       "# TYPE gad_watch_results_total counter\n"
       "# HELP gad_watch_dropped_total Undelivered results dropped (--when-full drop-oldest).\n"
       "# TYPE gad_watch_dropped_total counter\n"
       "# HELP gad_watch_frames_dropped_total Frames dropped while the line was behind its source (--when-behind).\n"
       "# TYPE gad_watch_frames_dropped_total counter\n"
       "# HELP gad_watch_backlog Results in the outbox not yet acknowledged by every sink.\n"
       "# TYPE gad_watch_backlog gauge\n";
  for (const char* stage : {"queue", "score", "store", "latency"})
    o << "# HELP gad_watch_" << stage << "_seconds "
      << (std::string(stage) == "latency" ? "Image arrived to result stored." : "Time per image in this stage.") << "\n"
      << "# TYPE gad_watch_" << stage << "_seconds histogram\n";
}

void LineMetrics::render(std::ostringstream& o, const std::string& line, int64_t backlog) const {
  std::lock_guard<std::mutex> lock(mutex_);
  const std::string l = "line=\"" + escape_label(line) + "\"";
  for (const auto& [result, n] : results_) o << "gad_watch_results_total{" << l << ",result=\"" << result << "\"} " << n << "\n";
  o << "gad_watch_dropped_total{" << l << "} " << dropped_ << "\n";
  o << "gad_watch_frames_dropped_total{" << l << "} " << frames_dropped_ << "\n";
  o << "gad_watch_backlog{" << l << "} " << backlog << "\n";
  queue_.render(o, "gad_watch_queue_seconds", l);
  score_.render(o, "gad_watch_score_seconds", l);
  store_.render(o, "gad_watch_store_seconds", l);
  latency_.render(o, "gad_watch_latency_seconds", l);
}

std::string LineMetrics::period_summary() {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto now = std::chrono::steady_clock::now();
  const double seconds = std::chrono::duration<double>(now - period_start_).count();
  uint64_t n = 0;
  for (const auto& [result, count] : period_results_) n += count;
  auto count = [&](const char* r) { return period_results_.count(r) ? period_results_.at(r) : 0; };
  char buf[256];
  std::snprintf(buf, sizeof buf, "%llu images (%llu ok, %llu ng, %llu errors) in %.0f s = %.2f/s",
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(count("ok")),
                static_cast<unsigned long long>(count("ng")), static_cast<unsigned long long>(count("error")), seconds,
                seconds > 0 ? n / seconds : 0.0);
  std::string out = buf;
  if (!period_latency_.empty()) {
    std::sort(period_latency_.begin(), period_latency_.end());
    auto pct = [&](double p) {
      return period_latency_[std::min(period_latency_.size() - 1, static_cast<size_t>(std::ceil(p * period_latency_.size())) - 1)];
    };
    std::snprintf(buf, sizeof buf, "; latency p50 %.0f ms, p99 %.0f ms", pct(0.5) * 1000, pct(0.99) * 1000);
    out += buf;
  }
  period_results_.clear();
  period_latency_.clear();
  period_start_ = now;
  return out;
}

}  // namespace gad::station
