// The JSON and CSV forms of a ScoreRecord's scores, and the JSON of a calibrated threshold.
// JSON (shared by `gad score` and `gad serve`): score, s_patch when the scorer gives a map (not
// image-knn, not zero-shot WinCLIP), and s_img / s_text / s_hol only when the model has them, "anomalous" (score > threshold) only when the set's threshold applies,
// then ms; an image that was not scored is {"error": why} and nothing else — no score, no
// verdict. CSV (`gad score --csv`): the same values under fixed columns, a sub-score the model
// lacks as an empty cell, then the map file and the error (empty when scored).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "engine/engine.h"

namespace gad {

nlohmann::ordered_json score_json(const ScoreRecord& r);

// path,score,s_patch,s_img,s_text,s_hol,[anomalous,]ms,map,error
std::vector<std::string> score_csv_header(bool calibrated);
std::vector<std::string> score_csv_row(const ScoreRecord& r, bool calibrated, const std::string& map_file = "");

// A calibrated threshold as `gad refs calibrate` prints it and `gad serve` answers it:
// {"threshold": value, "far", "method", "n", "time", "setup"}.
nlohmann::ordered_json threshold_json(const Threshold& t);

}  // namespace gad
