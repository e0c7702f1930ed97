// The C API (include/gad/gad.h): every entry point returns a status with a one-line message on
// bad input (NULL, wrong sizes, broken files) and never aborts; its scores equal the C++ API's.
#include <gad/gad.h>
#include <gad/gad.hpp>

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "support.h"

namespace gad::test {
namespace {

const std::string kLite = shared("fixtures/lite/mobilenet_v2/model.json");
const std::string kTiles = std::string(GAD_SOURCE_DIR) + "/examples/tiles";

class CApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    gad_model_params p = gad_model_default_params();
    p.model = kLite.c_str();
    p.precision = GAD_PRECISION_FP32;
    ASSERT_EQ(gad_detector_open(&p, &detector_), GAD_OK) << gad_last_error();
    const char* dir = nullptr;
    const std::string refs_dir = kTiles + "/train/good";
    dir = refs_dir.c_str();
    ASSERT_EQ(gad_references_build(detector_, &dir, 1, "tile", &refs_), GAD_OK) << gad_last_error();
  }
  static void TearDownTestSuite() {
    gad_references_free(refs_);
    gad_detector_free(detector_);
    refs_ = nullptr;
    detector_ = nullptr;
  }
  static gad_detector* detector_;
  static gad_references* refs_;
};
gad_detector* CApi::detector_ = nullptr;
gad_references* CApi::refs_ = nullptr;

// A one-line message naming the problem, after a failed call.
void expect_message(const std::string& needle) {
  const std::string m = gad_last_error();
  EXPECT_NE(m.find(needle), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos) << m;
}

TEST_F(CApi, ScoresEqualTheCppApi) {
  ModelOptions o;
  o.model = kLite;
  o.precision = Precision::FP32;
  Detector cpp(o);
  References refs = cpp.build_references(list_images({kTiles + "/train/good"}), "tile");
  const std::vector<std::string> queries = list_images({kTiles + "/test"});
  const auto expected = cpp.score(refs, queries);
  ASSERT_EQ(gad_references_k(refs_), 8);
  for (size_t i = 0; i < queries.size(); ++i) {
    double score = -1;
    ASSERT_EQ(gad_score_path(detector_, refs_, queries[i].c_str(), &score, nullptr), GAD_OK) << gad_last_error();
    // One image per call here, batches of 8 there: GEMM blocking may differ in the last bits
    // (gad's batch-size guarantee is 1e-6, checked by the InCTRL case tests).
    EXPECT_NEAR(score, expected[i].score, 1e-6) << queries[i];
  }
}

TEST_F(CApi, ScoresPathsWithMapsAllOrNothing) {
  const std::string a = kTiles + "/test/defect/000_scratch.png", b = kTiles + "/test/good/000.png";
  const char* paths[] = {a.c_str(), b.c_str()};
  gad_result results[2];
  std::memset(results, 0, sizeof results);
  ASSERT_EQ(gad_score_paths(detector_, refs_, paths, 2, GAD_MAP_PATCH, results), GAD_OK) << gad_last_error();
  EXPECT_GT(results[0].score, results[1].score);  // the scratch above the normal tile
  EXPECT_EQ(results[0].anomalous, -1);            // not calibrated
  ASSERT_NE(results[0].map, nullptr);
  EXPECT_GT(results[0].map_width, 0);
  EXPECT_GT(results[0].map_height, 0);
  for (auto& r : results) gad_result_free(&r);
  EXPECT_EQ(results[0].map, nullptr);

  // One missing file: the call runs, that image alone has an error status and no verdict.
  const char* bad[] = {a.c_str(), "/nonexistent/x.png"};
  gad_result mixed[2];
  ASSERT_EQ(gad_score_paths(detector_, refs_, bad, 2, GAD_MAP_PATCH, mixed), GAD_OK) << gad_last_error();
  EXPECT_EQ(mixed[0].status, GAD_OK);
  EXPECT_GT(mixed[0].score, 0);
  EXPECT_EQ(mixed[1].status, GAD_ERR_NOT_FOUND);
  EXPECT_NE(std::string(mixed[1].error).find("/nonexistent/x.png"), std::string::npos) << mixed[1].error;
  EXPECT_EQ(mixed[1].anomalous, -1);
  EXPECT_EQ(mixed[1].map, nullptr);
  for (auto& r : mixed) gad_result_free(&r);
  // The single-image call makes that image's failure the call's error, with no output written.
  double score = 12345;
  EXPECT_EQ(gad_score_path(detector_, refs_, "/nonexistent/x.png", &score, nullptr), GAD_ERR_NOT_FOUND);
  expect_message("/nonexistent/x.png");
  EXPECT_EQ(score, 12345);
}

TEST_F(CApi, PixelsInMemoryScoreLikeTheFile) {
  // A gray 16-bit image and its 8-bit high bytes score the same (gad keeps the high byte).
  const int w = 64, h = 48;
  std::vector<uint16_t> px16(w * h);
  std::vector<uint8_t> px8(w * h);
  for (int i = 0; i < w * h; ++i) {
    px16[i] = static_cast<uint16_t>((i * 977) % 65536);
    px8[i] = static_cast<uint8_t>(px16[i] >> 8);
  }
  gad_result r16{}, r8{};
  ASSERT_EQ(gad_score_pixels(detector_, refs_, px16.data(), w, h, 1, 16, 0, GAD_MAP_NONE, &r16), GAD_OK) << gad_last_error();
  ASSERT_EQ(gad_score_pixels(detector_, refs_, px8.data(), w, h, 1, 8, 0, GAD_MAP_NONE, &r8), GAD_OK) << gad_last_error();
  EXPECT_EQ(r16.score, r8.score);
  // Rows `row_bytes` apart: the same pixels inside a wider buffer.
  std::vector<uint8_t> wide(static_cast<size_t>(w + 7) * h, 0);
  for (int y = 0; y < h; ++y) std::memcpy(&wide[static_cast<size_t>(y) * (w + 7)], &px8[static_cast<size_t>(y) * w], w);
  gad_result rw{};
  ASSERT_EQ(gad_score_pixels(detector_, refs_, wide.data(), w, h, 1, 8, w + 7, GAD_MAP_NONE, &rw), GAD_OK);
  EXPECT_EQ(rw.score, r8.score);

  const void* planes[] = {px8.data()};
  gad_references* from_pixels = nullptr;
  ASSERT_EQ(gad_references_build_pixels(detector_, planes, 1, w, h, 1, 8, 0, "tile", &from_pixels), GAD_OK);
  EXPECT_EQ(gad_references_k(from_pixels), 1);
  gad_references_free(from_pixels);
}

TEST_F(CApi, EveryEntryPointRejectsBadInputWithAStatus) {
  gad_result r{};
  double s = 0;
  const std::string img = kTiles + "/test/good/000.png";
  EXPECT_EQ(gad_detector_open(nullptr, nullptr), GAD_ERR_INVALID_ARGUMENT);
  expect_message("NULL");
  gad_model_params p = gad_model_default_params();
  gad_detector* d = nullptr;
  p.size = 3;
  EXPECT_EQ(gad_detector_open(&p, &d), GAD_ERR_INVALID_ARGUMENT);
  p = gad_model_default_params();
  p.model = "/nonexistent/model.safetensors";
  EXPECT_NE(gad_detector_open(&p, &d), GAD_OK);
  expect_message("/nonexistent/model.safetensors");
  EXPECT_EQ(d, nullptr);
  p = gad_model_default_params();
  p.precision = static_cast<gad_precision>(9);
  EXPECT_EQ(gad_detector_open(&p, &d), GAD_ERR_INVALID_ARGUMENT);

  // A truncated weight file.
  const std::string dir = temp_dir("c-api"), cut = dir + "/cut.safetensors";
  {
    std::ifstream in(shared("fixtures/inctrl/tiny_model/model.safetensors"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  p = gad_model_default_params();
  p.model = cut.c_str();
  EXPECT_EQ(gad_detector_open(&p, &d), GAD_ERR_CORRUPT_FILE) << gad_last_error();
  expect_message("cut.safetensors");

  char buf[8];
  EXPECT_EQ(gad_detector_describe(nullptr, buf, sizeof buf), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_detector_describe(detector_, buf, sizeof buf), GAD_OK);
  EXPECT_EQ(std::strlen(buf), 7u);  // truncated, terminated

  gad_references* refs = nullptr;
  const char* missing = "/nonexistent/refs";
  EXPECT_EQ(gad_references_build(nullptr, &missing, 1, "x", &refs), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_references_build(detector_, nullptr, 1, "x", &refs), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_references_build(detector_, &missing, 1, "x", &refs), GAD_ERR_NOT_FOUND);
  const char* null_item[] = {nullptr};
  EXPECT_EQ(gad_references_build(detector_, null_item, 1, "x", &refs), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_references_build(detector_, nullptr, 0, "x", &refs), GAD_ERR_INVALID_ARGUMENT);  // K = 0
  expect_message("no images");
  EXPECT_EQ(refs, nullptr);

  const uint8_t px[12] = {0};
  const void* planes[] = {px};
  EXPECT_EQ(gad_references_build_pixels(detector_, planes, 1, 2, 2, 2, 8, 0, "x", &refs), GAD_ERR_INVALID_ARGUMENT);
  expect_message("channels");
  EXPECT_EQ(gad_references_build_pixels(detector_, planes, 1, 2, 2, 3, 12, 0, "x", &refs), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_references_build_pixels(detector_, planes, 1, 0, 2, 3, 8, 0, "x", &refs), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_references_build_pixels(detector_, planes, 1, 2, 2, 3, 8, 1, "x", &refs), GAD_ERR_INVALID_ARGUMENT);
  expect_message("row_bytes");
  const void* null_plane[] = {nullptr};
  EXPECT_EQ(gad_references_build_pixels(detector_, null_plane, 1, 2, 2, 3, 8, 0, "x", &refs), GAD_ERR_INVALID_ARGUMENT);

  EXPECT_EQ(gad_references_load(detector_, "/nonexistent/set.gadref", &refs), GAD_ERR_NOT_FOUND);
  EXPECT_EQ(gad_references_load(detector_, nullptr, &refs), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_references_load(detector_, img.c_str(), &refs), GAD_ERR_CORRUPT_FILE) << gad_last_error();
  EXPECT_EQ(gad_references_save(nullptr, "x"), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_references_save(refs_, "/nonexistent/dir/set.gadref"), GAD_ERR_IO) << gad_last_error();
  EXPECT_EQ(gad_references_calibrate(detector_, nullptr, nullptr, 0, 0.1), GAD_ERR_INVALID_ARGUMENT);
  gad_references* copy = nullptr;
  const std::string saved = dir + "/set.gadref";
  ASSERT_EQ(gad_references_save(refs_, saved.c_str()), GAD_OK);
  ASSERT_EQ(gad_references_load(detector_, saved.c_str(), &copy), GAD_OK);
  EXPECT_EQ(gad_references_calibrate(detector_, &copy, nullptr, 0, 1.5), GAD_ERR_INVALID_ARGUMENT);
  // Leave-one-out over this small K is too few for 0.1: refused unless allowed.
  EXPECT_EQ(gad_references_calibrate(detector_, &copy, nullptr, 0, 0.1), GAD_ERR_INVALID_ARGUMENT);
  ASSERT_EQ(gad_references_calibrate_allow_few(detector_, &copy, nullptr, 0, 0.1), GAD_OK) << gad_last_error();
  ASSERT_EQ(gad_score_path(detector_, copy, img.c_str(), nullptr, &r), GAD_OK);
  EXPECT_GE(r.anomalous, 0);  // calibrated now
  gad_references_free(copy);
  EXPECT_EQ(gad_references_k(nullptr), 0);

  EXPECT_EQ(gad_score_path(detector_, refs_, nullptr, &s, nullptr), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_score_path(detector_, refs_, img.c_str(), nullptr, nullptr), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_score_path(nullptr, refs_, img.c_str(), &s, nullptr), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_score_path(detector_, nullptr, img.c_str(), &s, nullptr), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_score_path(detector_, refs_, cut.c_str(), &s, nullptr), GAD_ERR_CORRUPT_FILE) << gad_last_error();
  EXPECT_EQ(gad_score_paths(detector_, refs_, nullptr, 1, GAD_MAP_NONE, &r), GAD_ERR_INVALID_ARGUMENT);
  const char* one[] = {img.c_str()};
  EXPECT_EQ(gad_score_paths(detector_, refs_, one, 1, static_cast<gad_map_kind>(7), &r), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_score_paths(detector_, refs_, one, 1, GAD_MAP_HOLISTIC, &r), GAD_ERR_INVALID_ARGUMENT);  // no heads
  expect_message("holistic");
  EXPECT_EQ(gad_score_pixels(detector_, refs_, nullptr, 4, 4, 3, 8, 0, GAD_MAP_NONE, &r), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(gad_score_pixels(detector_, refs_, px, 1 << 20, 1 << 20, 3, 8, 0, GAD_MAP_NONE, &r), GAD_ERR_RESOURCE_LIMIT);
  expect_message("largest image");
  gad_result_free(nullptr);
  gad_references_free(nullptr);
  gad_detector_free(nullptr);
  EXPECT_EQ(gad_set_threads(-1), GAD_ERR_INVALID_ARGUMENT);
  EXPECT_STREQ(gad_status_name(GAD_ERR_NOT_FOUND), "not found");
  EXPECT_STREQ(gad_version(), version());
}

// Zero-shot MuSc through C equals the C++ API, with the collection's verdict; a program built
// against the previous header (params without scorer_options) still opens a detector.
TEST(CApiZeroShot, EqualsTheCppApi) {
  gad_model_params p = gad_model_default_params();
  p.model = kLite.c_str();
  p.precision = GAD_PRECISION_FP32;
  p.scorer = GAD_SCORER_MUSC;
  p.scorer_options = R"({"r_list": [1, 3]})";
  gad_detector* d = nullptr;
  ASSERT_EQ(gad_detector_open(&p, &d), GAD_OK) << gad_last_error();
  const std::vector<std::string> files = list_images({kTiles + "/test"});
  std::vector<const char*> paths;
  for (const auto& f : files) paths.push_back(f.c_str());
  std::vector<gad_result> results(files.size());
  ASSERT_EQ(gad_score_zero_shot(d, paths.data(), paths.size(), GAD_MAP_NONE, results.data()), GAD_OK) << gad_last_error();
  ModelOptions o;
  o.model = kLite;
  o.precision = Precision::FP32;
  o.scorer = Scorer::MuSc;
  o.scorer_options = R"({"r_list": [1, 3]})";
  const auto want = Detector(o).score_zero_shot(files);
  for (size_t i = 0; i < files.size(); ++i) {
    EXPECT_EQ(results[i].status, GAD_OK);
    EXPECT_EQ(results[i].score, want[i].score);
    EXPECT_EQ(results[i].anomalous, *want[i].anomalous() ? 1 : 0);
  }
  EXPECT_EQ(gad_score_zero_shot(d, paths.data(), 2, GAD_MAP_NONE, results.data()), GAD_ERR_INVALID_ARGUMENT);
  expect_message("at least 5");
  gad_detector_free(d);
  p = gad_model_default_params();
  p.model = kLite.c_str();
  p.size = offsetof(gad_model_params, scorer_options);
  ASSERT_EQ(gad_detector_open(&p, &d), GAD_OK) << gad_last_error();
  gad_detector_free(d);
}

}  // namespace
}  // namespace gad::test
