#include "serve/metrics.h"

#include <sstream>

#include "util/prometheus.h"

namespace gad::serve {
void Metrics::observe(const std::string& route, const std::string& method, int status, double seconds) {
  std::lock_guard<std::mutex> lock(m_);
  requests_[route + "\",method=\"" + method + "\",code=\"" + std::to_string(status)]++;
  hist_[route].observe(seconds);
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
  for (const auto& [route, h] : hist_) h.render(o, "gad_request_duration_seconds", "route=\"" + route + "\"");
  prometheus_value(o, "gad_ready", "gauge", "1 once the model is loaded.", s.ready ? 1 : 0);
  prometheus_value(o, "gad_queue_depth", "gauge", "Images queued or being scored.", static_cast<double>(s.queue_depth));
  prometheus_value(o, "gad_queue_capacity", "gauge", "Queue limit (beyond it: 429).", s.queue_capacity);
  prometheus_value(o, "gad_batches_total", "counter", "Model forward passes.", static_cast<double>(s.batches));
  prometheus_value(o, "gad_images_scored_total", "counter", "Images scored.", static_cast<double>(s.images_scored));
  prometheus_value(o, "gad_refsets", "gauge", "Stored reference sets.", static_cast<double>(s.refsets));
  prometheus_value(o, "gad_cache_bytes", "gauge", "Bytes of reference sets held in memory.", static_cast<double>(s.cache.bytes));
  prometheus_value(o, "gad_cache_capacity_bytes", "gauge", "Reference-set cache cap (--cache-mb).",
        static_cast<double>(s.cache.cap));
  prometheus_value(o, "gad_cache_entries", "gauge", "Reference sets held in memory.", static_cast<double>(s.cache.entries));
  prometheus_value(o, "gad_cache_hits_total", "counter", "Reference-set lookups served from memory.",
        static_cast<double>(s.cache.hits));
  prometheus_value(o, "gad_cache_misses_total", "counter", "Reference-set lookups that read SQLite.",
        static_cast<double>(s.cache.misses));
  prometheus_value(o, "gad_cache_evictions_total", "counter", "Reference sets dropped from memory (least recently used).",
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
