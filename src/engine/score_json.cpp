#include "engine/score_json.h"

#include <cmath>

namespace gad {

nlohmann::ordered_json score_json(const ScoreRecord& r) {
  nlohmann::ordered_json j;
  j["score"] = r.score;
  j["s_patch"] = r.s_patch;
  if (r.has_heads) j["s_img"] = r.s_img;
  if (r.has_text) j["s_text"] = r.s_text;
  if (r.has_heads) j["s_hol"] = r.s_hol;
  if (r.threshold) j["anomalous"] = r.score > *r.threshold;
  j["ms"] = std::round(r.ms * 100) / 100;
  return j;
}

nlohmann::ordered_json threshold_json(const Threshold& t) {
  return {{"threshold", t.value}, {"far", t.far}, {"method", t.method}, {"n", t.n}};
}

}  // namespace gad
