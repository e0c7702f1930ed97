// Image encoding for outputs (anomaly maps as PNG), via OpenCV imgcodecs.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gad {

// A row-major grid x grid map of values in [0, 1] (clamped), bilinearly upsampled to
// width x height and encoded as an 8-bit grayscale PNG. Throws gad::Error on bad sizes.
std::string encode_map_png(const std::vector<float>& map, int grid, int width, int height);

}  // namespace gad
