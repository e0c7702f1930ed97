// Prometheus text format (0.0.4) pieces shared by `gad serve` and `gad watch`: a latency histogram
// with fixed buckets, label escaping, and one-value metrics.
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace gad {

// Seconds, 1 ms .. 10 s.
class Histogram {
 public:
  Histogram();
  void observe(double seconds);
  // NAME_bucket{LABELS,le=...}, NAME_sum, NAME_count; `labels` is `key="value",...` or "".
  void render(std::ostringstream& o, const std::string& name, const std::string& labels) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
};

std::string escape_label(const std::string& s);
// # HELP / # TYPE and one unlabelled sample.
void prometheus_value(std::ostringstream& o, const char* name, const char* type, const char* help, double value);

}  // namespace gad
