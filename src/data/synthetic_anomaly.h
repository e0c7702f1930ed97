// Synthetic local defects made from normal images, for training heads without real anomalies
// (`gad data convert synthetic`). Each kind changes one region and reports it as a mask:
//
//   cutpaste  a rectangle (2–15 % of the area, aspect 0.3–3.3) cut from the image or another
//             normal of the category, brightness-jittered and pasted elsewhere (CutPaste, Li et
//             al. 2021)
//   blob      a soft-edged ellipse (5–20 % of the short side) filled with shifted Gaussian noise:
//             stains, spots, blowholes
//   scratch   an anti-aliased polyline, 1–4 % of the short side thick, dark or bright: cracks,
//             scratches
//
// A candidate that barely changes its region (e.g. background pasted onto background) is redrawn,
// so every output is visibly anomalous. Everything is driven by the caller's std::mt19937_64 with
// integer draws only, so a seed gives the same images on every machine.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "image/image.h"

namespace gad {

const std::vector<std::string>& synthetic_kinds();  // cutpaste, blob, scratch

struct SyntheticAnomaly {
  Image image;                // same size and channels as the input
  std::vector<uint8_t> mask;  // width*height, 255 inside the defect
};

// `donor`: another normal image of the category (cutpaste may take its patch from it).
SyntheticAnomaly make_synthetic_anomaly(const Image& normal, const Image& donor, const std::string& kind,
                                        std::mt19937_64& rng);

}  // namespace gad
