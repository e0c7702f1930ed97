// The JSON and CSV forms of a ScoreRecord's scores, and the JSON of a calibrated threshold.
// JSON (shared by `gad score` and `gad serve`): score, s_patch, and s_img / s_text / s_hol only
// when the model has them, "anomalous" (score > threshold) only when the reference set is
// calibrated, then ms. CSV (`gad score --csv`): the same values under fixed columns, a sub-score
// the model lacks as an empty cell.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "engine/engine.h"

namespace gad {

nlohmann::ordered_json score_json(const ScoreRecord& r);

// path,score,s_patch,s_img,s_text,s_hol,[anomalous,]ms
std::vector<std::string> score_csv_header(bool calibrated);
std::vector<std::string> score_csv_row(const ScoreRecord& r);

// A calibrated threshold as `gad refs calibrate` prints it and `gad serve` answers it:
// {"threshold": value, "far", "method", "n"}.
nlohmann::ordered_json threshold_json(const Threshold& t);

}  // namespace gad
