#include "util/prometheus.h"

namespace gad {
namespace {
constexpr double kBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
constexpr size_t kNB = sizeof(kBuckets) / sizeof(kBuckets[0]);
}  // namespace

Histogram::Histogram() : counts_(kNB, 0) {}

void Histogram::observe(double seconds) {
  for (size_t i = 0; i < kNB; ++i)
    if (seconds <= kBuckets[i]) counts_[i]++;
  count_++;
  sum_ += seconds;
}

void Histogram::render(std::ostringstream& o, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  for (size_t i = 0; i < kNB; ++i)
    o << name << "_bucket{" << labels << sep << "le=\"" << kBuckets[i] << "\"} " << counts_[i] << "\n";
  o << name << "_bucket{" << labels << sep << "le=\"+Inf\"} " << count_ << "\n";
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  o << name << "_sum" << braces << " " << sum_ << "\n";
  o << name << "_count" << braces << " " << count_ << "\n";
}

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

void prometheus_value(std::ostringstream& o, const char* name, const char* type, const char* help, double value) {
  o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n" << name << " " << value << "\n";
}

}  // namespace gad
