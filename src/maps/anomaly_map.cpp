#include "maps/anomaly_map.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "util/error.h"

namespace gad {
namespace {

std::string encode_png(const cv::Mat& m) {
  std::vector<uchar> buf;
  if (!cv::imencode(".png", m, buf)) fail("anomaly map: PNG encoding failed");
  return std::string(buf.begin(), buf.end());
}

cv::Mat to_bgr(const Image& img) {
  if (img.channels == 1) {
    cv::Mat gray(img.height, img.width, CV_8UC1, const_cast<uint8_t*>(img.pixels.data()));
    cv::Mat bgr;
    cv::cvtColor(gray, bgr, cv::COLOR_GRAY2BGR);
    return bgr;
  }
  cv::Mat rgb(img.height, img.width, img.channels == 4 ? CV_8UC4 : CV_8UC3, const_cast<uint8_t*>(img.pixels.data()));
  cv::Mat bgr;
  cv::cvtColor(rgb, bgr, img.channels == 4 ? cv::COLOR_RGBA2BGR : cv::COLOR_RGB2BGR);
  return bgr;
}

}  // namespace

ImageMap map_to_image(const std::vector<float>& grid_map, int grid_w, const CropGeometry& g, double sigma_at_240) {
  const int grid_h = grid_w > 0 ? static_cast<int>(grid_map.size() / grid_w) : 0;
  if (grid_h <= 0 || grid_map.size() != static_cast<size_t>(grid_w) * grid_h)
    fail("anomaly map: ", grid_map.size(), " values do not fill a grid ", grid_w, " wide");
  if (g.size <= 0 || g.src_w <= 0 || g.src_h <= 0) fail("anomaly map: image geometry is missing");
  cv::Mat cells(grid_h, grid_w, CV_32FC1, const_cast<float*>(grid_map.data()));
  ImageMap out;
  out.width = g.src_w;
  out.height = g.src_h;
  cv::Mat original;
  if (g.stretch_to_image) {  // AnomalyDINO's dists2map: cv2.resize, then scipy gaussian_filter (reflect, 4σ)
    cv::resize(cells, original, cv::Size(g.src_w, g.src_h), 0, 0, cv::INTER_LINEAR);
    if (sigma_at_240 > 0) {
      const int radius = static_cast<int>(4.0 * sigma_at_240 + 0.5);
      cv::GaussianBlur(original, original, cv::Size(2 * radius + 1, 2 * radius + 1), sigma_at_240, sigma_at_240, cv::BORDER_REFLECT);
    }
  } else {
    // Each cell is a patch: sample at patch centres (align_corners = false), like the model's grid.
    cv::Mat window;
    cv::resize(cells, window, cv::Size(g.window_w(), g.window_h()), 0, 0, cv::INTER_LINEAR);
    if (sigma_at_240 > 0) cv::GaussianBlur(window, window, cv::Size(0, 0), sigma_at_240 * g.size / 240.0);
    cv::Mat resized = cv::Mat::zeros(g.resized_h, g.resized_w, CV_32FC1);
    window.copyTo(resized(cv::Rect(g.crop_left, g.crop_top, g.window_w(), g.window_h())));
    cv::resize(resized, original, cv::Size(g.src_w, g.src_h), 0, 0, cv::INTER_LINEAR);
  }
  out.values.assign(reinterpret_cast<const float*>(original.data),
                    reinterpret_cast<const float*>(original.data) + original.total());
  return out;
}

std::string overlay_png(const Image& image, const ImageMap& map, double vmax) {
  if (image.width != map.width || image.height != map.height) fail("anomaly map: map and image sizes differ");
  if (vmax <= 0) vmax = std::max(1e-6f, *std::max_element(map.values.begin(), map.values.end()));
  cv::Mat values(map.height, map.width, CV_32FC1, const_cast<float*>(map.values.data()));
  cv::Mat scaled, colour;
  values.convertTo(scaled, CV_8UC1, 255.0 / vmax);  // saturates above vmax
  cv::applyColorMap(scaled, colour, cv::COLORMAP_JET);
  cv::Mat blended;
  cv::addWeighted(to_bgr(image), 0.5, colour, 0.5, 0, blended);
  // Colour bar: a JET ramp 24 px wide with its scale, right of the image.
  const int bar_w = 70, h = map.height;
  cv::Mat canvas(h, map.width + bar_w, CV_8UC3, cv::Scalar(255, 255, 255));
  blended.copyTo(canvas(cv::Rect(0, 0, map.width, h)));
  cv::Mat ramp(h, 1, CV_8UC1);
  for (int y = 0; y < h; ++y) ramp.at<uchar>(y, 0) = static_cast<uchar>(255 - 255 * y / std::max(1, h - 1));
  cv::Mat ramp_colour;
  cv::applyColorMap(ramp, ramp_colour, cv::COLORMAP_JET);
  cv::resize(ramp_colour, ramp_colour, cv::Size(16, h), 0, 0, cv::INTER_NEAREST);
  ramp_colour.copyTo(canvas(cv::Rect(map.width + 6, 0, 16, h)));
  char label[32];
  for (double f : {1.0, 0.5, 0.0}) {
    std::snprintf(label, sizeof label, "%.3f", vmax * f);
    int y = static_cast<int>((1 - f) * (h - 1));
    cv::putText(canvas, label, cv::Point(map.width + 24, std::clamp(y + 4, 10, h - 2)), cv::FONT_HERSHEY_SIMPLEX, 0.35,
                cv::Scalar(0, 0, 0), 1, cv::LINE_AA);
  }
  return encode_png(canvas);
}

namespace {

std::string map_png(const ImageMap& map, int type, double scale) {
  cv::Mat values(map.height, map.width, CV_32FC1, const_cast<float*>(map.values.data()));
  cv::Mat out;
  values.convertTo(out, type, scale);  // rounds and saturates outside [0, 1]
  return encode_png(out);
}

}  // namespace

std::string map_png16(const ImageMap& map) { return map_png(map, CV_16UC1, 65535.0); }
std::string map_png8(const ImageMap& map) { return map_png(map, CV_8UC1, 255.0); }

}  // namespace gad

namespace gad {

std::string map_npy(const ImageMap& map) {
  if (map.values.size() != static_cast<size_t>(map.width) * map.height) fail("anomaly map: size mismatch");
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(map.height) + ", " +
                       std::to_string(map.width) + "), }";
  // Magic (6) + version (2) + length (2) + header, padded with spaces and '\n' to a multiple of 64.
  const size_t total = (10 + header.size() + 1 + 63) / 64 * 64;
  header.append(total - 10 - header.size() - 1, ' ');
  header += '\n';
  std::string out("\x93NUMPY\x01\x00", 8);
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  for (float v : map.values) {  // explicit little-endian, whatever the host
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    for (int b = 0; b < 4; ++b) out += static_cast<char>((bits >> (8 * b)) & 0xff);
  }
  return out;
}

std::string overlay_thumbnail_png(const Image& image, const ImageMap& map, double vmax, int max_side) {
  if (image.width != map.width || image.height != map.height) fail("anomaly map: map and image sizes differ");
  if (vmax <= 0) vmax = std::max(1e-6f, *std::max_element(map.values.begin(), map.values.end()));
  const double f = std::min(1.0, static_cast<double>(max_side) / std::max(map.width, map.height));
  const cv::Size size(std::max(1, static_cast<int>(map.width * f)), std::max(1, static_cast<int>(map.height * f)));
  cv::Mat values(map.height, map.width, CV_32FC1, const_cast<float*>(map.values.data()));
  cv::Mat small_values, small_image, scaled, colour, blended;
  cv::resize(values, small_values, size, 0, 0, cv::INTER_AREA);
  cv::resize(to_bgr(image), small_image, size, 0, 0, cv::INTER_AREA);
  small_values.convertTo(scaled, CV_8UC1, 255.0 / vmax);
  cv::applyColorMap(scaled, colour, cv::COLORMAP_JET);
  cv::addWeighted(small_image, 0.55, colour, 0.45, 0, blended);
  // 5 bits per channel: invisible at this size, and it roughly halves the PNG (reports inline many).
  blended &= cv::Scalar(0xF8, 0xF8, 0xF8);
  std::vector<uchar> buf;
  if (!cv::imencode(".png", blended, buf, {cv::IMWRITE_PNG_COMPRESSION, 9})) fail("anomaly map: PNG encoding failed");
  return std::string(buf.begin(), buf.end());
}

ImageMap shrink_map(const ImageMap& map, int max_side) {
  const int side = std::max(map.width, map.height);
  if (side <= max_side) return map;
  const double f = static_cast<double>(max_side) / side;
  cv::Mat values(map.height, map.width, CV_32FC1, const_cast<float*>(map.values.data())), small;
  cv::resize(values, small, cv::Size(std::max(1, static_cast<int>(map.width * f)), std::max(1, static_cast<int>(map.height * f))),
             0, 0, cv::INTER_AREA);
  ImageMap out{small.cols, small.rows, {}};
  out.values.assign(reinterpret_cast<const float*>(small.data), reinterpret_cast<const float*>(small.data) + small.total());
  return out;
}

ImageMap load_mask(const std::string& path, int width, int height) {
  cv::Mat m = cv::imread(path, cv::IMREAD_GRAYSCALE);
  if (m.empty()) fail(path, ": cannot read the ground-truth mask");
  if (m.cols != width || m.rows != height) cv::resize(m, m, cv::Size(width, height), 0, 0, cv::INTER_NEAREST);
  ImageMap out{width, height, std::vector<float>(static_cast<size_t>(width) * height)};
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) out.values[static_cast<size_t>(y) * width + x] = m.at<uchar>(y, x) ? 1.0f : 0.0f;
  return out;
}

}  // namespace gad
