#include "engine/score_json.h"

#include <cmath>
#include <optional>

#include "util/csv.h"

namespace gad {

nlohmann::ordered_json score_json(const ScoreRecord& r) {
  nlohmann::ordered_json j;
  if (!r.ok()) return {{"error", r.error}};
  j["score"] = r.score;
  if (!r.residual_map.empty()) j["s_patch"] = r.s_patch;  // scorers without a map have no patch score
  if (r.has_img) j["s_img"] = r.s_img;
  if (r.has_text) j["s_text"] = r.s_text;
  if (r.has_heads) j["s_hol"] = r.s_hol;
  if (auto verdict = r.anomalous()) j["anomalous"] = *verdict;
  if (r.anomalous() && !r.verdict_rule.empty()) {
    j["threshold"] = *r.threshold;
    j["verdict_rule"] = r.verdict_rule;
  }
  j["ms"] = std::round(r.ms * 100) / 100;
  return j;
}

std::string to_json(const ScoreRecord& r) { return score_json(r).dump(); }

std::vector<std::string> score_csv_header(bool calibrated) {
  std::vector<std::string> h = {"path", "score", "s_patch", "s_img", "s_text", "s_hol"};
  if (calibrated) h.push_back("anomalous");
  for (const char* c : {"ms", "map", "error"}) h.push_back(c);
  return h;
}

std::vector<std::string> score_csv_row(const ScoreRecord& r, bool calibrated, const std::string& map_file) {
  if (!r.ok()) {  // every value cell empty: no score, no verdict
    std::vector<std::string> row(score_csv_header(calibrated).size());
    row.front() = r.path;
    row.back() = r.error;
    return row;
  }
  auto when = [](bool present, double v) { return present ? std::optional<double>(v) : std::nullopt; };
  std::vector<std::string> row = {r.path,
                                  csv_number(r.score),
                                  csv_number(when(!r.residual_map.empty(), r.s_patch)),
                                  csv_number(when(r.has_img, r.s_img)),
                                  csv_number(when(r.has_text, r.s_text)),
                                  csv_number(when(r.has_heads, r.s_hol))};
  if (calibrated) {
    const auto verdict = r.anomalous();
    row.push_back(verdict ? (*verdict ? "true" : "false") : "");
  }
  row.push_back(csv_number(r.ms, "%.3f"));
  row.push_back(map_file);
  row.push_back("");
  return row;
}

nlohmann::ordered_json threshold_json(const Threshold& t) {
  nlohmann::ordered_json j = {{"threshold", t.value}, {"far", t.far}, {"method", t.method}, {"n", t.n}};
  if (!t.time.empty()) j["time"] = t.time;
  if (!t.setup.empty()) j["setup"] = t.setup;
  return j;
}

}  // namespace gad
