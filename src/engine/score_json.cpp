#include "engine/score_json.h"

#include <cmath>
#include <optional>

#include "util/csv.h"

namespace gad {

nlohmann::ordered_json score_json(const ScoreRecord& r) {
  nlohmann::ordered_json j;
  j["score"] = r.score;
  j["s_patch"] = r.s_patch;
  if (r.has_img) j["s_img"] = r.s_img;
  if (r.has_text) j["s_text"] = r.s_text;
  if (r.has_heads) j["s_hol"] = r.s_hol;
  if (r.threshold) j["anomalous"] = r.score > *r.threshold;
  j["ms"] = std::round(r.ms * 100) / 100;
  return j;
}

std::string to_json(const ScoreRecord& r) { return score_json(r).dump(); }

std::vector<std::string> score_csv_header(bool calibrated) {
  std::vector<std::string> h = {"path", "score", "s_patch", "s_img", "s_text", "s_hol"};
  if (calibrated) h.push_back("anomalous");
  h.push_back("ms");
  return h;
}

std::vector<std::string> score_csv_row(const ScoreRecord& r) {
  auto when = [](bool present, double v) { return present ? std::optional<double>(v) : std::nullopt; };
  std::vector<std::string> row = {r.path,
                                  csv_number(r.score),
                                  csv_number(r.s_patch),
                                  csv_number(when(r.has_img, r.s_img)),
                                  csv_number(when(r.has_text, r.s_text)),
                                  csv_number(when(r.has_heads, r.s_hol))};
  if (r.threshold) row.push_back(r.score > *r.threshold ? "true" : "false");
  row.push_back(csv_number(r.ms, "%.3f"));
  return row;
}

nlohmann::ordered_json threshold_json(const Threshold& t) {
  return {{"threshold", t.value}, {"far", t.far}, {"method", t.method}, {"n", t.n}};
}

}  // namespace gad
