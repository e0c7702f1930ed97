// DINOv2 and AnomalyDINO against the official code (../shared/fixtures/dinov2, README there):
// both tiny models (plain and with registers), every image at S = 224 and 448: pixel_values
// equal (Pillow-exact resize: the README allows one 8-bit level, 0.021 after normalisation; we
// require ≤ 1e-6), patch tokens and CLS within 1e-4 (fp32, another summation order); all
// AnomalyDINO cases: image scores and patch distances within 1e-4, the k1 map within 1e-3.
#include <gtest/gtest.h>

#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "image/image.h"
#include "maps/anomaly_map.h"
#include "engine/load_model.h"
#include "backbone/precision.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

std::string dino(const std::string& rel) { return test::shared("fixtures/dinov2/" + rel); }
std::string image(const std::string& name) { return test::inctrl_fixture("preprocess/" + name); }
const std::vector<std::string> kModels = {"tiny", "tiny_reg"};

nlohmann::json index_of(const std::string& model) { return nlohmann::json::parse(read_file_text(dino(model + "/index.json"))); }

ModelOptions options(const std::string& model, int resolution, bool rotate = false, const std::string& file = "model.pth") {
  ModelOptions o;
  o.model = dino(model + "/" + file);
  o.resolution = resolution;
  o.precision = Precision::FP32;
  o.rotate = rotate;
  return o;
}

TEST(Dino, PixelValuesAndTokensMatchTheOfficialModel) {
  for (const auto& model : kModels) {
    for (int S : {224, 448}) {
      LoadedModel m = load_model(options(model, S));
      ASSERT_EQ(m.backbone->kind(), "dinov2");
      const auto index = index_of(model);
      for (const auto& f : index["features"]) {
        if (f["smaller_edge"] != S) continue;
        SCOPED_TRACE(model + " " + f["file"].get<std::string>());
        auto want = test::load_tensors(dino(model + "/" + f["file"].get<std::string>()));
        PixelTensor px = m.backbone->preprocess(decode_image(image(f["image"])));
        at::Tensor pixels = stack_pixels({px});
        ASSERT_EQ(pixels[0].sizes(), want["pixel_values"].sizes());
        EXPECT_LE(test::max_abs_diff(pixels[0], want["pixel_values"]), 1e-6);
        Features out = m.backbone->encode(pixels);
        EXPECT_EQ(out.grid_h, f["grid"][0].get<int64_t>());
        EXPECT_EQ(out.grid_w, f["grid"][1].get<int64_t>());
        EXPECT_LT(test::max_abs_diff(out.taps[0][0], want["patch_tokens"]), 1e-4);
        EXPECT_LT(test::max_abs_diff(out.global[0], want["cls_token"]), 1e-4);
      }
    }
  }
}

TEST(Dino, SafetensorsCopyIsTheSameModel) {
  for (const auto& model : kModels) {
    LoadedModel a = load_model(options(model, 224)), b = load_model(options(model, 224, false, "model.safetensors"));
    EXPECT_EQ(a.backbone->fingerprint(), b.backbone->fingerprint());
    at::Tensor px = stack_pixels({a.backbone->preprocess(decode_image(image("headct_195.png")))});
    EXPECT_EQ(test::max_abs_diff(a.backbone->encode(px).taps[0], b.backbone->encode(px).taps[0]), 0.0);
  }
}

TEST(AnomalyDino, EveryCaseMatchesTheOfficialCode) {
  int checked = 0;
  for (const auto& model : kModels) {
    const auto index = index_of(model);
    for (const auto& c : index["cases"]) {
      SCOPED_TRACE(model + " case " + c["name"].get<std::string>());
      Detector engine(options(model, c["smaller_edge"], c["rotation"]));
      std::vector<std::string> refs, queries;
      for (const auto& r : c["refs"]) refs.push_back(image(r));
      for (const auto& q : c["queries"]) queries.push_back(image(q));
      const References set = engine.build_references(refs, "");  // AnomalyDINO needs no class name
      engine.score(set, queries, ScoreOptions{2}, [&](const ScoreRecord& r) {
        const std::string name = r.path.substr(r.path.rfind('/') + 1);
        const auto& want = c["results"][name];
        SCOPED_TRACE(name);
        EXPECT_NEAR(r.score, want["score"].get<double>(), 1e-4);
        auto golden = test::load_tensors(dino(model + "/cases/" + c["name"].get<std::string>() + "__" +
                                              name.substr(0, name.rfind('.')) + ".safetensors"));
        const at::Tensor d = golden["patch_distances"];
        ASSERT_EQ(r.grid, d.size(1));
        ASSERT_EQ(static_cast<int64_t>(r.residual_map.size()), d.numel());
        at::Tensor got = at::from_blob(const_cast<float*>(r.residual_map.data()), d.sizes(), at::kFloat);
        EXPECT_LT(test::max_abs_diff(got, d), 1e-4);
        if (golden.count("anomaly_map")) {
          ImageMap map = map_to_image(r.residual_map, r.grid, r.geometry, 4.0);
          at::Tensor m = at::from_blob(map.values.data(), {map.height, map.width}, at::kFloat);
          ASSERT_EQ(m.sizes(), golden["anomaly_map"].sizes());
          EXPECT_LT(test::max_abs_diff(m, golden["anomaly_map"]), 1e-3);
        }
        ++checked;
      });
    }
  }
  EXPECT_EQ(checked, 2 * 6);  // two models, four cases, six queries
}

std::string save_variant(const std::string& model, const std::function<void(c10::Dict<std::string, at::Tensor>&)>& edit) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, t] : test::load_tensors(dino(model + "/model.safetensors"))) d.insert(k, t);
  edit(d);
  const std::string path = test::temp_dir("dino-bad") + "/model.pth";
  const std::vector<char> bytes = torch::jit::pickle_save(d);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

std::string load_error(const std::string& path) {
  try {
    ModelOptions f;
    f.model = path;
    load_model(f);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Dino, BrokenFilesAreOneLineErrors) {
  struct Case {
    std::function<void(c10::Dict<std::string, at::Tensor>&)> edit;
    std::string needle;
  };
  const std::vector<Case> cases = {
      {[](auto& d) { d.erase("blocks.1.attn.proj.weight"); }, "missing key 'blocks.1.attn.proj.weight'"},
      {[](auto& d) { d.insert_or_assign("blocks.0.mlp.fc2.weight", at::zeros({128, 100})); }, "key 'blocks.0.mlp.fc2.weight' has shape [128,100], expected [128,512]"},
      {[](auto& d) { d.insert("blocks.0.mlp.w12.weight", at::zeros({4, 4})); }, "SwiGLU"},
      {[](auto& d) { d.insert("blocks.0.extra", at::zeros({4})); }, "unexpected key 'blocks.0.extra'"},
      {[](auto& d) { d.insert_or_assign("pos_embed", at::zeros({1, 1000, 128})); }, "pos_embed"},
  };
  for (const auto& c : cases) {
    const std::string path = save_variant("tiny", c.edit);
    const std::string msg = load_error(path);
    EXPECT_NE(msg.find(c.needle), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind(path, 0), 0u) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace gad

namespace gad {
namespace {

// The command line: `inspect --dump` writes pixel_values and patch_tokens; a set built without a
// class name scores like the official code and remembers its scorer; the lite model takes the
// same scorer; mistakes are one line.
TEST(AnomalyDinoCli, InspectRefsAndScore) {
  const std::string dir = test::temp_dir("dino-cli");
  const std::string model = "--model " + dino("tiny/model.pth") + " --resolution 224 --precision fp32";
  test::CliResult r = test::run_cli("inspect " + model + " " + image("mt_break_348629.jpg") + " --dump " + dir + "/d.safetensors");
  ASSERT_EQ(r.status, 0) << r.err;
  auto dump = test::load_tensors(dir + "/d.safetensors");
  auto want = test::load_tensors(dino("tiny/features/mt_break_348629_S224.safetensors"));
  EXPECT_LE(test::max_abs_diff(dump["0.pixel_values"], want["pixel_values"]), 1e-6);
  EXPECT_LT(test::max_abs_diff(dump["0.patch_tokens"], want["patch_tokens"]), 1e-4);

  r = test::run_cli("refs build " + model + " " + image("mt_fray_331149.jpg") + " -o " + dir + "/set.gadref");
  ASSERT_EQ(r.status, 0) << r.err;
  r = test::run_cli("score " + model + " --refs " + dir + "/set.gadref " + image("mt_break_348629.jpg"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NEAR(nlohmann::json::parse(r.out)["score"].get<double>(), 0.17978794872760773, 1e-4);  // case k1
  EXPECT_NE(r.err.find("scorer anomalydino"), std::string::npos) << r.err;
  r = test::run_cli("score " + model + " --scorer inctrl --refs " + dir + "/set.gadref " + image("mt_break_348629.jpg"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("built for the anomalydino scorer"), std::string::npos) << r.err;

  // The lite CNN with the same scorer and rotated references; maps written.
  r = test::run_cli("score --scorer anomalydino --rotate examples/tiles/test --ref-images examples/tiles/train/good --maps " + dir + "/maps");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 12);
  EXPECT_TRUE(std::filesystem::exists(dir + "/maps/good/001.png"));  // mirrors test/good/001.png
  r = test::run_cli("score --rotate examples/tiles/test --ref-images examples/tiles/train/good --class tile");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("rotate: applies to the anomalydino scorer only"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gad

namespace gad {
namespace {

// The fast path keeps AnomalyDINO's scores within 0.01 of the reference on every case (the same
// budget as InCTRL's bf16 path) on a CPU with a bf16 dot product; LibTorch's fallback kernels
// elsewhere round more (AVX2-only CPU: 0.0186), held to test::kBf16FallbackBudget.
TEST(AnomalyDino, Bf16StaysCloseToReference) {
  double worst = 0;
  for (const auto& model : kModels) {
    const auto index = index_of(model);
    for (const auto& c : index["cases"]) {
      ModelOptions o = options(model, c["smaller_edge"], c["rotation"]);
      o.precision = Precision::BF16;
      Detector engine(o);
      std::vector<std::string> refs, queries;
      for (const auto& r : c["refs"]) refs.push_back(image(r));
      for (const auto& q : c["queries"]) queries.push_back(image(q));
      const References set = engine.build_references(refs, "");
      engine.score(set, queries, ScoreOptions{1}, [&](const ScoreRecord& r) {
        const std::string name = r.path.substr(r.path.rfind('/') + 1);
        worst = std::max(worst, std::abs(r.score - c["results"][name]["score"].get<double>()));
      });
    }
  }
  std::printf("bf16 AnomalyDINO vs reference: worst |score - reference| %.3g\n", worst);
  EXPECT_LE(worst, cpu_has_fast_bf16() ? 0.01 : test::kBf16FallbackBudget);
}

// Queries of several sizes in one batch: every record equals its unbatched score bit for bit (each
// DINOv2 image has its own pass) and keeps its own grid, in input order.
TEST(AnomalyDino, MixedSizeBatchesEqualSinglePasses) {
  Detector d(options("tiny_reg", 224));
  const References refs = d.build_references({image("mt_break_348629.jpg"), image("elpv_cell0004.png")});
  const std::vector<std::string> queries = {image("mt_fray_331149.jpg"), image("headct_195.png"), image("mt_fray_331149.jpg"),
                                            image("cifar_cat_0000.jpg"), image("headct_195.png"), image("elpv_cell0004.png")};
  ScoreOptions one, eight;
  one.batch = 1;
  eight.batch = 8;
  const std::vector<ScoreRecord> single = d.score(refs, queries, one), batched = d.score(refs, queries, eight);
  ASSERT_EQ(batched.size(), queries.size());
  for (size_t i = 0; i < queries.size(); ++i) {
    ASSERT_TRUE(batched[i].ok()) << batched[i].error;
    EXPECT_EQ(batched[i].path, queries[i]);
    EXPECT_EQ(batched[i].grid, single[i].grid) << queries[i];
    EXPECT_EQ(batched[i].residual_map.size(), single[i].residual_map.size()) << queries[i];
    EXPECT_EQ(batched[i].score, single[i].score) << queries[i];
  }
  EXPECT_EQ(batched[0].score, batched[2].score);  // the same image twice
}

}  // namespace
}  // namespace gad
