#include "report/thumbnails.h"

#include <algorithm>

#include "image/image.h"
#include "maps/anomaly_map.h"

namespace gad {

void Thumbnails::add(const std::string& path, const std::vector<float>& grid_map, int grid, const CropGeometry& geometry) {
  if (!grid_map.empty()) vmax_ = std::max(vmax_, static_cast<double>(*std::max_element(grid_map.begin(), grid_map.end())));
  entries_[path] = {grid_map, grid, geometry};
}

std::string Thumbnails::operator()(const ReportImage& image, int max_side) const {
  auto it = entries_.find(image.path);
  if (it == entries_.end() || it->second.map.empty()) return "";
  const Entry& e = it->second;
  return overlay_thumbnail_png(decode_image(image.path), map_to_image(e.map, e.grid, e.geometry, sigma_), vmax_, max_side);
}

}  // namespace gad
