#include "serve/metrics.h"

#include <sstream>

namespace gad::serve {
namespace {

constexpr double kBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
constexpr size_t kNB = sizeof(kBuckets) / sizeof(kBuckets[0]);

std::string escape_label(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '\\' || c == '"') out += '\\';
    out += c;
  }
  return out;
}

void gauge(std::ostringstream& o, const char* name, const char* type, const char* help, double value) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << value << "\n";
}

}  // namespace

void Metrics::observe(const std::string& route, const std::string& method, int status, double seconds) {
  std::lock_guard<std::mutex> lock(m_);
  requests_[route + "\",method=\"" + method + "\",code=\"" + std::to_string(status)]++;
  auto& h = hist_[route];
  if (h.counts.empty()) h.counts.assign(kNB, 0);
  for (size_t i = 0; i < kNB; ++i)
    if (seconds <= kBuckets[i]) h.counts[i]++;
  h.count++;
  h.sum += seconds;
}

void Metrics::rejected(const std::string& reason) {
  std::lock_guard<std::mutex> lock(m_);
  rejected_[reason]++;
}

std::string Metrics::render(const ServerState& s) {
  std::ostringstream o;
  o.precision(12);
  std::lock_guard<std::mutex> lock(m_);
  o << "# HELP gad_requests_total HTTP requests by route, method and status.\n# TYPE gad_requests_total counter\n";
  for (const auto& [k, v] : requests_) o << "gad_requests_total{route=\"" << k << "\"} " << v << "\n";
  o << "# HELP gad_rejected_requests_total Requests refused (4xx/5xx) by reason.\n"
       "# TYPE gad_rejected_requests_total counter\n";
  for (const auto& [k, v] : rejected_)
    o << "gad_rejected_requests_total{reason=\"" << escape_label(k) << "\"} " << v << "\n";
  o << "# HELP gad_request_duration_seconds HTTP request latency.\n# TYPE gad_request_duration_seconds histogram\n";
  for (const auto& [route, h] : hist_) {
    for (size_t i = 0; i < kNB; ++i)
      o << "gad_request_duration_seconds_bucket{route=\"" << route << "\",le=\"" << kBuckets[i] << "\"} " << h.counts[i]
        << "\n";
    o << "gad_request_duration_seconds_bucket{route=\"" << route << "\",le=\"+Inf\"} " << h.count << "\n";
    o << "gad_request_duration_seconds_sum{route=\"" << route << "\"} " << h.sum << "\n";
    o << "gad_request_duration_seconds_count{route=\"" << route << "\"} " << h.count << "\n";
  }
  gauge(o, "gad_ready", "gauge", "1 once the model is loaded.", s.ready ? 1 : 0);
  gauge(o, "gad_queue_depth", "gauge", "Images queued or being scored.", static_cast<double>(s.queue_depth));
  gauge(o, "gad_queue_capacity", "gauge", "Queue limit (beyond it: 429).", s.queue_capacity);
  gauge(o, "gad_batches_total", "counter", "Model forward passes.", static_cast<double>(s.batches));
  gauge(o, "gad_images_scored_total", "counter", "Images scored.", static_cast<double>(s.images_scored));
  gauge(o, "gad_refsets", "gauge", "Stored reference sets.", static_cast<double>(s.refsets));
  gauge(o, "gad_cache_bytes", "gauge", "Bytes of reference sets held in memory.", static_cast<double>(s.cache.bytes));
  gauge(o, "gad_cache_capacity_bytes", "gauge", "Reference-set cache cap (--cache-mb).",
        static_cast<double>(s.cache.cap));
  gauge(o, "gad_cache_entries", "gauge", "Reference sets held in memory.", static_cast<double>(s.cache.entries));
  gauge(o, "gad_cache_hits_total", "counter", "Reference-set lookups served from memory.",
        static_cast<double>(s.cache.hits));
  gauge(o, "gad_cache_misses_total", "counter", "Reference-set lookups that read SQLite.",
        static_cast<double>(s.cache.misses));
  gauge(o, "gad_cache_evictions_total", "counter", "Reference sets dropped from memory (least recently used).",
        static_cast<double>(s.cache.evictions));
  o << "# HELP gad_model_info The model being served.\n# TYPE gad_model_info gauge\ngad_model_info{model=\""
    << escape_label(s.model) << "\",fingerprint=\"" << escape_label(s.fingerprint) << "\",workers=\"" << s.workers
    << "\"} 1\n";
  return o.str();
}

std::string route_label(const std::string& path) {
  if (path == "/healthz" || path == "/readyz" || path == "/metrics" || path == "/openapi.json" || path == "/v1/refsets" ||
      path == "/v1/refsets/import")
    return path;
  const std::string prefix = "/v1/refsets/";
  if (path.compare(0, prefix.size(), prefix) != 0 || path.size() == prefix.size()) return "other";
  const size_t slash = path.find('/', prefix.size());
  if (slash == std::string::npos) return "/v1/refsets/{id}";
  const std::string action = path.substr(slash + 1);
  if (slash > prefix.size() && (action == "score" || action == "calibrate" || action == "export")) return "/v1/refsets/{id}/" + action;
  return "other";
}

}  // namespace gad::serve
