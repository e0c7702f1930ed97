// Overlay thumbnails for HTML reports, made on demand from the grid maps kept while scoring (a
// few hundred floats per image), so only the thumbnails shown are ever decoded and rendered.
// All thumbnails share one colour scale (the largest map value added), so they compare.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "image/preprocess.h"
#include "report/html_report.h"

namespace gad {

class Thumbnails {
 public:
  explicit Thumbnails(double sigma_at_240 = 4.0) : sigma_(sigma_at_240) {}
  void add(const std::string& path, const std::vector<float>& grid_map, int grid, const CropGeometry& geometry);
  // PNG of the image with its map overlaid, longer side `max_side`; "" for a path never added.
  std::string operator()(const ReportImage& image, int max_side) const;

 private:
  struct Entry {
    std::vector<float> map;
    int grid;
    CropGeometry geometry;
  };
  std::unordered_map<std::string, Entry> entries_;
  double sigma_, vmax_ = 0;
};

}  // namespace gad
