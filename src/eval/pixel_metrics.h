// Pixel-level localisation metrics over a set of images (MVTec AD definitions).
//   pixel AUROC: the ROC area over every pixel of every image (mask 1 = positive), ties forming
//                one threshold, exactly as roc_auc does for images.
//   AUPRO:       the per-region overlap (PRO) curve against the pixel false-positive rate, up to
//                FPR `max_fpr` (0.3), trapezoidal, interpolated at max_fpr and divided by it. PRO
//                at a threshold = the mean over all connected components (8-connected) of every
//                ground-truth mask of the fraction of the component's pixels above threshold;
//                FPR = the fraction of all mask-0 pixels above it (normal images count as all 0).
// Both are computed exactly in one pass over the pixels sorted by score (no threshold binning),
// so memory is ~16 bytes per pixel: callers shrink maps first (gad bench: longer side 256).
#pragma once

#include <vector>

#include "maps/anomaly_map.h"

namespace gad {

struct PixelMetrics {
  double auroc = 0, aupro = 0;
};

// `masks[i]` holds 0/1 values and the same size as `maps[i]`. Needs at least one defect pixel
// and one normal pixel; otherwise gad::Error.
PixelMetrics pixel_metrics(const std::vector<ImageMap>& maps, const std::vector<ImageMap>& masks, double max_fpr = 0.3);

}  // namespace gad
