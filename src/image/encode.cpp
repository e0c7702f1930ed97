#include "image/encode.h"

#include <algorithm>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "util/error.h"

namespace gad {

std::string encode_map_png(const std::vector<float>& map, int grid, int width, int height) {
  if (grid <= 0 || map.size() != static_cast<size_t>(grid) * grid) fail("map: expected ", grid, "x", grid, " values");
  if (width <= 0 || height <= 0) fail("map: bad output size ", width, "x", height);
  cv::Mat small(grid, grid, CV_8U);
  for (int y = 0; y < grid; ++y)
    for (int x = 0; x < grid; ++x)
      small.at<uint8_t>(y, x) = static_cast<uint8_t>(std::clamp(map[y * grid + x], 0.0f, 1.0f) * 255.0f + 0.5f);
  cv::Mat big;
  cv::resize(small, big, cv::Size(width, height), 0, 0, cv::INTER_LINEAR);
  std::vector<uchar> png;
  if (!cv::imencode(".png", big, png)) fail("map: PNG encoding failed");
  return std::string(png.begin(), png.end());
}

}  // namespace gad
