// The two training-free nearest-neighbour baselines, as scorers.
//   patch-knn: InCTRL's patch residual alone (no heads, no text): per query patch ½(1 − max cos)
//              to every reference patch of the same tapped layer, layers averaged; the score is
//              the map's maximum.
//   image-knn: 1 − max_k cos(global(query), global(reference k)); no map.
#pragma once

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "scorers/scorer.h"

namespace gad::scorers {

std::unique_ptr<Scorer> make_patch_knn(const Backbone& backbone, const nlohmann::json& options, const std::string& context);
std::unique_ptr<Scorer> make_image_knn(const Backbone& backbone, const nlohmann::json& options, const std::string& context);

}  // namespace gad::scorers
