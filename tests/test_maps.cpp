// Anomaly maps in the original image's pixels: the crop/resize geometry round trip puts a peak
// back where it was (within one patch), for the CLIP geometry (shorter side + centre crop) and
// end to end with the lite backbone on a real texture with a painted defect.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "engine/engine.h"
#include "maps/anomaly_map.h"
#include "support.h"

namespace gad {
namespace {

std::pair<int, int> argmax_xy(const ImageMap& m) {
  auto it = std::max_element(m.values.begin(), m.values.end());
  const int i = static_cast<int>(it - m.values.begin());
  return {i % m.width, i / m.width};
}

TEST(Maps, ClipGeometryRoundTripPutsThePeakBack) {
  Image img{400, 300, 1, std::vector<uint8_t>(400 * 300, 128)};  // landscape: resized 320x240, crop left 40
  CropGeometry g = clip_preprocess(img, 240).geometry;
  ASSERT_EQ(g.resized_w, 320);
  ASSERT_EQ(g.crop_left, 40);
  const int grid = 15, row = 4, col = 10;
  std::vector<float> cells(grid * grid, 0.0f);
  cells[row * grid + col] = 1.0f;
  ImageMap m = map_to_image(cells, grid, g);
  ASSERT_EQ(m.width, 400);
  ASSERT_EQ(m.height, 300);
  // Cell centre in the crop -> resized image -> original pixels.
  const double scale = 400.0 / 320.0, x = ((col + 0.5) * 16 + 40) * scale, y = (row + 0.5) * 16 * scale;
  auto [mx, my] = argmax_xy(m);
  EXPECT_NEAR(mx, x, 16 * scale) << "x";
  EXPECT_NEAR(my, y, 16 * scale) << "y";
  // Outside the crop the model saw nothing: the map is 0 there.
  EXPECT_EQ(m.values[150 * 400 + 5], 0.0f);
}

TEST(Maps, LiteFindsAPaintedDefectInANonSquareImage) {
  std::string dir = test::temp_dir("maps");
  cv::Mat tile = cv::imread("examples/tiles/test/good/000.png", cv::IMREAD_GRAYSCALE);
  ASSERT_FALSE(tile.empty());
  cv::Mat query = tile(cv::Rect(0, 0, 256, 180)).clone();  // non-square
  const cv::Point defect(70, 120);
  cv::circle(query, defect, 10, cv::Scalar(240), cv::FILLED);
  cv::imwrite(dir + "/query.png", query);
  EngineOptions o;
  o.files.model = test::shared("fixtures/lite/mobilenet_v2/model.json");
  Engine engine(o);
  engine.build_references({"examples/tiles/train/good/000.png", "examples/tiles/train/good/001.png",
                           "examples/tiles/train/good/002.png", "examples/tiles/train/good/003.png"},
                          "tile");
  ScoreRecord rec;
  engine.score({dir + "/query.png"}, 1, [&](const ScoreRecord& r) { rec = r; });
  ImageMap m = map_to_image(rec.residual_map, rec.grid, rec.geometry);
  ASSERT_EQ(m.width, 256);
  ASSERT_EQ(m.height, 180);
  auto [mx, my] = argmax_xy(m);
  EXPECT_NEAR(mx, defect.x, 256.0 / 14) << "x";  // one patch of the 14x14 grid
  EXPECT_NEAR(my, defect.y, 180.0 / 14) << "y";
  Image image = decode_image(dir + "/query.png");
  EXPECT_GT(overlay_png(image, m).size(), 1000u);
  EXPECT_GT(map_png16(m).size(), 100u);
}

}  // namespace
}  // namespace gad
