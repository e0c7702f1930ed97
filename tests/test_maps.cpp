// Anomaly maps in the original image's pixels: the crop/resize geometry round trip puts a peak
// back where it was (within one patch), for the CLIP geometry (shorter side + centre crop) and
// end to end with the lite backbone on a real texture with a painted defect.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "engine/engine.h"
#include "maps/anomaly_map.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

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
  ModelOptions o;
  o.model = test::shared("fixtures/lite/mobilenet_v2/model.json");
  Detector engine(o);
  const References set = engine.build_references({"examples/tiles/train/good/000.png", "examples/tiles/train/good/001.png",
                           "examples/tiles/train/good/002.png", "examples/tiles/train/good/003.png"},
                          "tile");
  ScoreOptions with_map;
  with_map.map = MapKind::Patch;
  const ScoreRecord rec = engine.score(set, std::vector<std::string>{dir + "/query.png"}, with_map)[0];
  ImageMap m = map_to_image(rec.residual_map, rec.grid, rec.geometry);
  EXPECT_EQ(rec.map.values, m.values);  // ScoreOptions::map is the same map
  ASSERT_EQ(m.width, 256);
  ASSERT_EQ(m.height, 180);
  auto [mx, my] = argmax_xy(m);
  EXPECT_NEAR(mx, defect.x, 256.0 / 14) << "x";  // one patch of the 14x14 grid
  EXPECT_NEAR(my, defect.y, 180.0 / 14) << "y";
  Image image = decode_image(dir + "/query.png");
  EXPECT_GT(overlay_png(image, m).size(), 1000u);
  EXPECT_GT(map_png16(m).size(), 100u);
}

// The .npy bytes NumPy would write for a (2, 3) float32 C-order array.
TEST(Maps, NpyHeaderAndValuesAreNumpyV1) {
  ImageMap m{3, 2, {0.0f, 0.5f, 1.0f, 1.5f, -2.0f, 3.25f}};
  std::string npy = map_npy(m);
  ASSERT_EQ(npy.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header_len = static_cast<unsigned char>(npy[8]) | static_cast<unsigned char>(npy[9]) << 8;
  EXPECT_EQ((10 + header_len) % 64, 0u);
  std::string header = npy.substr(10, header_len);
  EXPECT_EQ(header.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 0), 0u) << header;
  EXPECT_EQ(header.back(), '\n');
  ASSERT_EQ(npy.size(), 10 + header_len + 6 * 4);
  float v[6];
  std::memcpy(v, npy.data() + 10 + header_len, sizeof v);  // the test host is little-endian
  for (int i = 0; i < 6; ++i) EXPECT_EQ(v[i], m.values[i]) << i;
}

TEST(Maps, MasksAreBinaryAndResizedToTheImage) {
  std::string dir = test::temp_dir("mask");
  cv::Mat mask = cv::Mat::zeros(10, 20, CV_8UC1);
  mask(cv::Rect(10, 0, 10, 10)).setTo(255);
  cv::imwrite(dir + "/m.png", mask);
  ImageMap m = load_mask(dir + "/m.png", 40, 20);
  ASSERT_EQ(m.values.size(), 800u);
  EXPECT_EQ(m.values[5 * 40 + 5], 0.0f);
  EXPECT_EQ(m.values[5 * 40 + 35], 1.0f);
  EXPECT_THROW(load_mask(dir + "/missing.png", 4, 4), Error);
  ImageMap big{1000, 500, std::vector<float>(500000, 2.0f)};
  ImageMap small = shrink_map(big, 256);
  EXPECT_EQ(small.width, 256);
  EXPECT_EQ(small.height, 128);
  EXPECT_FLOAT_EQ(small.values[100], 2.0f);
}

int run_cli(const std::string& args, std::string* err) {
  std::string dir = test::temp_dir("maps-cli");
  int status = std::system((std::string(GAD_CLI) + " " + args + " >" + dir + "/out 2>" + dir + "/err").c_str());
  *err = read_file_text(dir + "/err");
  return WEXITSTATUS(status);
}

TEST(Maps, HolisticNeedsHeadsAndNpyIsWrittenInImagePixels) {
  std::string dir = test::temp_dir("maps-holistic"), err;
  const std::string lite = "--model " + test::shared("fixtures/lite/mobilenet_v2/model.json");
  const std::string refs = " --ref-images examples/tiles/train/good/000.png --class tile examples/tiles/test/good/000.png";
  EXPECT_NE(run_cli("score " + lite + refs + " --maps " + dir + "/a --map-kind holistic", &err), 0);
  EXPECT_NE(err.find("--map-kind holistic: this model has no InCTRL heads"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/a/000.png"));
  // The tiny random-weight InCTRL model has heads: holistic = M + s_text + s_img, unclamped in .npy.
  const std::string tiny = "--model " + test::inctrl_fixture("tiny_model/model.safetensors") + " --config " +
                           test::inctrl_fixture("tiny_model/config.json") + " --precision fp32";
  ASSERT_EQ(run_cli("score " + tiny + refs + " --maps " + dir + "/b --map-kind holistic --raw-maps npy", &err), 0) << err;
  EXPECT_TRUE(std::filesystem::exists(dir + "/b/000.png"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/b/000_map.png"));
  std::string npy = read_file_text(dir + "/b/000_map.npy");
  Image image = decode_image("examples/tiles/test/good/000.png");
  const std::string shape = "(" + std::to_string(image.height) + ", " + std::to_string(image.width) + ")";
  EXPECT_NE(npy.find(shape), std::string::npos);
  EXPECT_NE(run_cli("score " + lite + refs + " --raw-maps npy", &err), 0);  // needs --maps
  EXPECT_NE(err.find("--maps"), std::string::npos) << err;
}

}  // namespace
}  // namespace gad
