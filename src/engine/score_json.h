// The JSON form of a ScoreRecord's scores (and of a calibrated threshold), shared by `gad score` and `gad serve`: score, s_patch,
// and s_img / s_text / s_hol only when the model has them, "anomalous" (score > threshold) only
// when the reference set is calibrated, then ms.
#pragma once

#include <nlohmann/json.hpp>

#include "engine/engine.h"

namespace gad {

nlohmann::ordered_json score_json(const ScoreRecord& r);

// A calibrated threshold as `gad refs calibrate` prints it and `gad serve` answers it:
// {"threshold": value, "far", "method", "n"}.
nlohmann::ordered_json threshold_json(const Threshold& t);

}  // namespace gad
