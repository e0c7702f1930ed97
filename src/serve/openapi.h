// The OpenAPI 3 document of `gad serve` (GET /openapi.json).
#pragma once

#include <nlohmann/json.hpp>

namespace gad::serve {

const nlohmann::ordered_json& openapi_document();

}  // namespace gad::serve
