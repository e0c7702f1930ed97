// Where is the defect: a scorer's grid residual map brought back onto the original image, and
// pictures of it.
//
// The residual map covers the network input, which is the crop window (CLIP: shorter side
// resized, centre crop) or the whole image squeezed to a square (lite). map_to_image undoes that
// geometry: bilinear upsampling of the grid to the crop window, Gaussian smoothing (σ given in
// network-input pixels at 240 px, scaled with the input size, as in the usual AD practice of σ = 4),
// placement in the resized image (0 where the model never looked), and resizing to the original
// width x height.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "image/image.h"
#include "image/preprocess.h"

namespace gad {

// map_to_image (the grid map in image pixels) is declared in <gad/gad.hpp>.

// PNG of the image with the map as a colour overlay (JET, scaled to [0, vmax]; vmax <= 0 means the
// map's own maximum) and a colour bar with its scale on the right.
std::string overlay_png(const Image& image, const ImageMap& map, double vmax = 0);
// The raw map as a grayscale PNG, value clamped to [0, 1]: 16-bit (value · 65535) or 8-bit
// (value · 255, what `gad serve ?map=1` returns).
std::string map_png16(const ImageMap& map);
std::string map_png8(const ImageMap& map);
// The raw map as a NumPy .npy file (format 1.0, little-endian float32, shape (height, width)),
// unclamped: what to use for maps above 1 such as the holistic map.
std::string map_npy(const ImageMap& map);
// A small overlay for reports: like overlay_png without the colour bar, longer side `max_side`.
std::string overlay_thumbnail_png(const Image& image, const ImageMap& map, double vmax, int max_side);

// The map scaled (area averaging) so that its longer side is at most `max_side`; unchanged when
// already small enough. Pixel metrics use it to bound memory.
ImageMap shrink_map(const ImageMap& map, int max_side);
// A ground-truth mask (any PNG; nonzero = defect) as 0/1 values at width x height, resized with
// nearest neighbour when its size differs. gad::Error naming the file when it cannot be read.
ImageMap load_mask(const std::string& path, int width, int height);

}  // namespace gad
