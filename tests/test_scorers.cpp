// SubspaceAD and MuSc against the official code (../shared/fixtures/dinov2/{subspacead,musc},
// READMEs there), fp32. Tolerances are the READMEs': SubspaceAD relative |a − b| ≤ 1e-4·max(1, |b|)
// for eigenvalues, patch scores, maps and image scores (its scores grow with the feature scale),
// 1e-4 absolute for tokens and the PCA mean, k exact; MuSc 1e-4 absolute everywhere (the official
// fp32 values against an independent float64 computation differ by ≤ 1e-5).
#include <gtest/gtest.h>

#include <ATen/Parallel.h>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "engine/load_model.h"
#include "image/image.h"
#include "scorers/reference_set.h"
#include "scorers/musc.h"
#include "scorers/subspacead.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

std::string fixture(const std::string& method, const std::string& rel) { return test::shared("fixtures/dinov2/" + method + "/" + rel); }
nlohmann::json index_of(const std::string& method) { return nlohmann::json::parse(read_file_text(fixture(method, "index.json"))); }
std::string model_path(const std::string& name) { return test::shared("fixtures/dinov2/" + name + "/model.pth"); }

double rel_diff(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  return ((g - w).abs() / w.abs().clamp_min(1.0)).max().item<double>();
}

at::Tensor grid_of(const ScoreRecord& r) {
  return at::from_blob(const_cast<float*>(r.residual_map.data()),
                       {static_cast<int64_t>(r.residual_map.size()) / r.grid, r.grid}, at::kFloat).clone();
}

std::string stem(const std::string& path) {
  const std::string name = path.substr(path.rfind('/') + 1);
  return name.substr(0, name.rfind('.'));
}

ModelOptions subspacead_options(const nlohmann::json& c) {
  ModelOptions o;
  o.model = model_path(c["model"]);
  o.precision = Precision::FP32;
  o.scorer = Scorer::SubspaceAD;
  o.scorer_options = nlohmann::json{{"image_res", c["image_res"]}, {"layers", c["layers"]}, {"pca_ev", c["pca_ev"]},
                                    {"aug_count", c["aug_count"]}, {"aug_list", c["aug_list"].empty() ? nlohmann::json{"rotate"} : c["aug_list"]}}
                         .dump();
  return o;
}

// The views of each reference as the official run drew them: itself, its pass-1 copies, its
// pass-2 copies (rotations from the stored images, which our rotation must reproduce exactly).
std::vector<PixelTensor> recorded_views(Detector& detector, const References* probe, const nlohmann::json& c) {
  std::vector<PixelTensor> views;
  LoadedModel m = load_model(subspacead_options(c));
  const FeatureRequest request = scorers::make_subspacead(*m.backbone, nlohmann::json::parse(subspacead_options(c).scorer_options), "t")->features();
  for (size_t i = 0; i < c["refs"].size(); ++i) {
    const std::string ref = c["refs"][i];
    const Image original = decode_image(fixture("subspacead", c["ref_inputs"][i]));
    views.push_back(m.backbone->preprocess(original, request));
    for (int pass : {1, 2})
      for (const auto& a : c["augmentations"]) {
        if (a["pass"] != pass || a["of"] != ref) continue;
        Image v = to_rgb(original);
        for (const auto& step : a["steps"]) {
          if (step[0] == "rotate") {
            const Image stored = decode_image(fixture("subspacead", a["image"]));
            const Image mine = scorers::pil_rotate_nearest(v, step[1].get<double>());
            EXPECT_EQ(mine.pixels, stored.pixels) << "rotation by " << step[1] << " differs from Pillow's";
            v = stored;
          } else if (step[1] == 1) {
            Image f = v;
            const size_t row = static_cast<size_t>(v.width) * 3;
            for (int y = 0; y < v.height; ++y)
              for (int x = 0; x < v.width; ++x) {
                const int sy = step[0] == "hflip" ? y : v.height - 1 - y, sx = step[0] == "hflip" ? v.width - 1 - x : x;
                std::copy_n(&v.pixels[sy * row + sx * 3], 3, &f.pixels[y * row + x * 3]);
              }
            v = f;
          }
        }
        views.push_back(m.backbone->preprocess(v, request));
      }
  }
  return views;
}

TEST(SubspaceAD, EveryCaseMatchesTheOfficialCode) {
  int checked = 0;
  const auto index = index_of("subspacead");
  for (const auto& c : index["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    Detector detector(subspacead_options(c));
    std::vector<std::string> refs, queries;
    for (const auto& r : c["ref_inputs"]) refs.push_back(fixture("subspacead", r));
    for (const auto& q : c["query_inputs"]) queries.push_back(fixture("subspacead", q));
    References set;
    if (c["aug_count"] == 0) {
      set = detector.build_references(refs);
    } else {
      std::vector<ImageSource> sources;
      for (const auto& r : refs) sources.push_back({r, file_sha256(r)});
      set = build_references(detector, recorded_views(detector, nullptr, c), sources, "");
    }
    auto want = test::load_tensors(fixture("subspacead", c["file"]));
    const ReferenceSet& rs = reference_set(set);
    EXPECT_EQ(rs.state.at("pca_components").size(1), c["pca_k"].get<int64_t>());
    EXPECT_LT(test::max_abs_diff(rs.state.at("pca_mean"), want["pca_mean"]), 1e-4);
    EXPECT_LT(rel_diff(rs.state.at("pca_eigenvalues"), want["pca_eigenvalues"]), 1e-4);
    const at::Tensor U = rs.state.at("pca_components").to(at::kDouble), V = want["pca_components"].to(at::kDouble);
    EXPECT_LT(test::max_abs_diff(U.mm(U.t()), V.mm(V.t())), 1e-4);  // signs are arbitrary: the projector
    ScoreOptions options;
    options.batch = 3;
    const int res = c["image_res"];
    for (const ScoreRecord& r : detector.score(set, queries, options)) {
      ASSERT_TRUE(r.ok()) << r.error;
      const std::string q = stem(r.path);
      SCOPED_TRACE(q);
      const double score = c["results"][q]["score"];
      EXPECT_LE(std::fabs(r.score - score), 1e-4 * std::max(1.0, std::fabs(score)));
      EXPECT_LT(rel_diff(grid_of(r), want["patch_scores__" + q]), 1e-4);
      if (want.count("anomaly_map__" + q)) EXPECT_LT(rel_diff(scorers::subspace_map(grid_of(r), res), want["anomaly_map__" + q]), 1e-4);
      ++checked;
    }
    // The fused tokens the fixtures store (k1, k4): the first reference and the first query.
    LoadedModel m = load_model(subspacead_options(c));
    const auto scorer = scorers::make_subspacead(*m.backbone, nlohmann::json::parse(subspacead_options(c).scorer_options), "t");
    const std::vector<std::pair<std::string, std::string>> stored = {{"ref_tokens_0", c["tokens_stored_for"].empty() ? "" : c["tokens_stored_for"][0]},
                                                                     {"query_tokens_0", c["tokens_stored_for"].empty() ? "" : c["tokens_stored_for"][1]}};
    for (const auto& [key, image] : stored) {
      if (!want.count(key)) continue;
      const Features f = m.backbone->encode(stack_pixels({m.backbone->preprocess(decode_image(fixture("subspacead", "inputs/" + image + ".png")), scorer->features())}),
                                            scorer->features());
      EXPECT_LT(test::max_abs_diff(at::stack(f.taps).mean(0)[0], want[key]), 1e-4) << key;
    }
  }
  EXPECT_EQ(checked, 4 + 4 + 4 + 4 + 3);
}

// A saved set loads and scores identically, from a file and from bytes; its options travel with it.
TEST(SubspaceAD, SavedSetsScoreTheSame) {
  const auto c = index_of("subspacead")["cases"][0];
  Detector detector(subspacead_options(c));
  const std::vector<std::string> queries = {fixture("subspacead", c["query_inputs"][0]), fixture("subspacead", c["query_inputs"][1])};
  const References set = detector.build_references({fixture("subspacead", c["ref_inputs"][0])});
  const std::string path = test::temp_dir("subspacead") + "/set.gadref";
  set.save(path);
  ModelOptions plain;  // a detector with default options: the set brings its own
  plain.model = model_path(c["model"]);
  plain.precision = Precision::FP32;
  Detector other(plain);
  const References loaded = other.load_references(path), from_bytes = other.references_from_bytes(set.to_bytes());
  EXPECT_EQ(loaded.scorer(), "subspacead");
  const auto a = detector.score(set, queries), b = other.score(loaded, queries), d = other.score(from_bytes, queries);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].score, b[i].score);
    EXPECT_EQ(a[i].score, d[i].score);
  }
  EXPECT_EQ(reference_set(loaded).scorer_options, reference_set(set).scorer_options);
}

TEST(SubspaceAD, OptionsAreCheckedByName) {
  auto open = [](const std::string& json) {
    ModelOptions o;
    o.model = model_path("tiny_reg");
    o.scorer = Scorer::SubspaceAD;
    o.scorer_options = json;
    return test::error_of([&] { Detector d(o); });
  };
  EXPECT_NE(open(R"({"pca_evv": 0.9})").find("unknown key 'pca_evv'"), std::string::npos);
  EXPECT_NE(open(R"({"pca_ev": 1.5})").find("'pca_ev'"), std::string::npos);
  EXPECT_NE(open(R"({"layers": [-9]})").find("'layers'"), std::string::npos);
  EXPECT_NE(open(R"({"image_res": 3})").find("'image_res'"), std::string::npos);
  EXPECT_NE(open(R"({"aug_list": ["spin"]})").find("'aug_list'"), std::string::npos);
  EXPECT_NE(open(R"({"agg_method": "concat"})").find("'agg_method'"), std::string::npos);
  EXPECT_EQ(open(R"({"image_res": 224, "aug_count": 0})"), "(no error)");
  EXPECT_EQ(open(R"({"agg_method": "mean", "score_method": "reconstruction", "drop_k": 0, "img_score_agg": "mtop1p"})"), "(no error)");
}

// drop_k takes the leading components out of the subspace: no patch's residual can shrink.
TEST(SubspaceAD, DropKOnlyAddsResidual) {
  const auto index = index_of("subspacead");
  const auto& c = index["cases"][0];
  std::vector<std::vector<float>> maps;
  for (int drop : {0, 3}) {
    ModelOptions o = subspacead_options(c);
    auto opts = nlohmann::json::parse(o.scorer_options);
    opts["drop_k"] = drop;
    o.scorer_options = opts.dump();
    Detector d(o);
    const References set = d.build_references({fixture("subspacead", c["ref_inputs"][0])});
    maps.push_back(d.score(set, {fixture("subspacead", c["query_inputs"][0])})[0].residual_map);
  }
  double grew = 0;
  for (size_t p = 0; p < maps[0].size(); ++p) {
    EXPECT_GE(maps[1][p], maps[0][p] - 1e-4f * std::max(1.0f, maps[0][p]));
    grew = std::max(grew, static_cast<double>(maps[1][p] - maps[0][p]));
  }
  EXPECT_GT(grew, 1e-3);
}

// Defaults: the paper's settings mapped to the depth (3 blocks: hidden state 2 = layer −2).
TEST(SubspaceAD, DefaultsFollowThePaper) {
  ModelOptions o;
  o.model = model_path("tiny_reg");
  o.scorer = Scorer::SubspaceAD;
  const auto summary = nlohmann::json::parse(Detector(o).scorer_summary().substr(std::string("subspacead ").size()));
  EXPECT_EQ(summary["image_res"], 672);
  EXPECT_EQ(summary["pca_ev"], 0.99);
  EXPECT_EQ(summary["aug_count"], 30);
  EXPECT_EQ(summary["layers"], nlohmann::json({-2}));
}

ModelOptions musc_options(const nlohmann::json& c) {
  ModelOptions o;
  o.model = model_path("tiny");
  o.precision = Precision::FP32;
  o.scorer = Scorer::MuSc;
  o.scorer_options = nlohmann::json{{"image_size", c["image_size"]}, {"feature_layers", c["feature_layers"]}, {"r_list", c["r_list"]},
                                    {"topmin", c["topmin"]}, {"rscin_k_list", c["rscin_k_list"]}}
                         .dump();
  return o;
}

std::vector<std::string> musc_inputs(const nlohmann::json& c) {
  std::vector<std::string> paths;
  for (const auto& p : c["inputs"]) paths.push_back(fixture("musc", p));
  return paths;
}

TEST(MuSc, EveryCaseMatchesTheOfficialCode) {
  const auto index = index_of("musc");
  for (const auto& c : index["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    auto want = test::load_tensors(fixture("musc", c["file"]));
    Detector detector(musc_options(c));
    const auto records = detector.score_zero_shot(musc_inputs(c));
    ASSERT_EQ(records.size(), c["batch_order"].size());
    for (size_t i = 0; i < records.size(); ++i) {
      const std::string id = c["batch_order"][i];
      SCOPED_TRACE(id);
      ASSERT_TRUE(records[i].ok()) << records[i].error;
      EXPECT_NEAR(records[i].score, c["results"][id]["score"].get<double>(), 1e-4);
      EXPECT_NEAR(records[i].s_patch, c["results"][id]["ac_score"].get<double>(), 1e-4);
      EXPECT_LT(test::max_abs_diff(grid_of(records[i]), want["patch_map"][static_cast<int64_t>(i)]), 1e-4);
      if (want.count("anomaly_map__" + id))
        EXPECT_LT(test::max_abs_diff(scorers::musc_upsample(grid_of(records[i]), c["image_size"]), want["anomaly_map__" + id]), 1e-4);
    }
    // The stages: pixels, tokens, LNAMD, every MSM, CLS tokens, RsCIN.
    LoadedModel m = load_model(musc_options(c));
    const scorers::MuscOptions mo = scorers::musc_options(*m.backbone, nlohmann::json::parse(musc_options(c).scorer_options), "t");
    const FeatureRequest request = scorers::musc_request(*m.backbone, mo);
    std::vector<std::vector<at::Tensor>> per_layer(mo.feature_layers.size());
    std::vector<at::Tensor> cls;
    for (const auto& path : musc_inputs(c)) {
      const PixelTensor px = m.backbone->preprocess(decode_image(path), request);
      const at::Tensor pixels = stack_pixels({px});
      const Features f = m.backbone->encode(pixels, request);
      for (size_t l = 0; l < f.taps.size(); ++l) per_layer[l].push_back(f.taps[l][0]);
      cls.push_back(f.global[0]);
      if (cls.size() > 1 || !want.count("pixel_values_0")) continue;
      EXPECT_LE(test::max_abs_diff(pixels[0], want["pixel_values_0"]), 1e-6);
      EXPECT_LT(test::max_abs_diff(at::stack({f.taps[0][0], f.taps[1][0], f.taps[2][0]}), want["tokens_0"]), 1e-4);
      for (int r : mo.r_list)
        EXPECT_LT(test::max_abs_diff(scorers::lnamd(f.taps[0][0], c["grid"][0], r), want["Z_r" + std::to_string(r) + "_layer0_0"]), 1e-4);
    }
    EXPECT_LT(test::max_abs_diff(at::stack(cls), want["cls_tokens"]), 1e-4);
    std::vector<at::Tensor> layers;
    for (auto& l : per_layer) layers.push_back(at::stack(l));
    const auto result = scorers::musc_score(layers, at::stack(cls), c["grid"][0], c["image_size"], mo, true);
    size_t n = 0;
    for (int r : mo.r_list)
      for (size_t l = 0; l < layers.size(); ++l, ++n)
        EXPECT_LT(test::max_abs_diff(result.msm[n].view(want["patch_map"].sizes()),
                                     want["msm_r" + std::to_string(r) + "_layer" + std::to_string(l)]), 1e-4) << r << " " << l;
    EXPECT_LT(test::max_abs_diff(result.ac_score, want["ac_score"]), 1e-4);
    EXPECT_LT(test::max_abs_diff(result.score, want["rscin_score"]), 1e-4);
  }
}

// Every score depends on the whole collection, never on the batch size or the thread count.
TEST(MuSc, SameNumbersForAnyThreadCount) {
  const auto c = index_of("musc")["cases"][0];
  Detector detector(musc_options(c));
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const auto one = detector.score_zero_shot(musc_inputs(c));
  at::set_num_threads(2);
  ScoreOptions o;
  o.batch = 3;
  const auto two = detector.score_zero_shot(musc_inputs(c), o);
  at::set_num_threads(threads);
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i].score, two[i].score);
    EXPECT_EQ(one[i].residual_map, two[i].residual_map);
  }
}

// Below the method's minimum the official code returns NaN: gad refuses in one line; an image that
// cannot be read is an error of its own and the rest are scored without it.
TEST(MuSc, SmallCollectionsAreRefusedAndBadImagesStandAlone) {
  const auto c = index_of("musc")["cases"][0];
  Detector detector(musc_options(c));
  auto paths = musc_inputs(c);
  const std::string few = test::error_of([&] { detector.score_zero_shot(std::vector<std::string>(paths.begin(), paths.begin() + 4)); });
  EXPECT_NE(few.find("at least 5"), std::string::npos) << few;
  EXPECT_EQ(few.find('\n'), std::string::npos);
  const std::string dir = test::temp_dir("musc-bad");
  write_file_atomically(dir + "/broken.png", [](std::FILE* f) { std::fputs("not a png", f); });
  paths.insert(paths.begin() + 2, dir + "/broken.png");
  const auto records = detector.score_zero_shot(paths);
  ASSERT_EQ(records.size(), 11u);
  EXPECT_FALSE(records[2].ok());
  EXPECT_FALSE(records[2].anomalous().has_value());
  EXPECT_NE(records[2].error.find("broken.png"), std::string::npos);
  for (size_t i = 0; i < records.size(); ++i)
    if (i != 2) EXPECT_TRUE(records[i].ok() && std::isfinite(records[i].score)) << records[i].error;
}

// Interrupted while encoding or during the mutual scoring (minutes for a large collection):
// nothing is scored, and the error says so.
TEST(MuSc, InterruptedRunsScoreNothing) {
  const auto c = index_of("musc")["cases"][0];
  Detector detector(musc_options(c));
  for (int after : {3, 12}) {  // 10 encodes, then one question per image and (r, layer)
    int asked = 0;
    ScoreOptions o;
    o.interrupted = [&] { return ++asked > after; };
    const std::string e = test::error_of([&] { detector.score_zero_shot(musc_inputs(c), o); });
    EXPECT_NE(e.find("interrupted"), std::string::npos) << e;
    EXPECT_NE(e.find(after == 3 ? "encoded" : "mutual scoring"), std::string::npos) << e;
  }
}

// The verdict without normals: a robust z-score over the collection, named in the JSON.
TEST(MuSc, ZeroShotVerdictIsAStatedRule) {
  const auto c = index_of("musc")["cases"][0];
  Detector detector(musc_options(c));
  ScoreOptions o;
  o.zero_shot_z = 1.0;
  const auto records = detector.score_zero_shot(musc_inputs(c), o);
  std::vector<double> scores;
  for (const auto& r : records) scores.push_back(r.score);
  std::sort(scores.begin(), scores.end());
  const double median = (scores[4] + scores[5]) / 2;
  std::vector<double> dev;
  for (double s : scores) dev.push_back(std::fabs(s - median));
  std::sort(dev.begin(), dev.end());
  const double threshold = median + 1.4826 * (dev[4] + dev[5]) / 2;
  int flagged = 0;
  for (const auto& r : records) {
    ASSERT_TRUE(r.threshold.has_value());
    EXPECT_NEAR(*r.threshold, threshold, 1e-12);
    EXPECT_EQ(*r.anomalous(), r.score > threshold);
    flagged += *r.anomalous();
    const auto j = nlohmann::json::parse(to_json(r));
    EXPECT_EQ(j["verdict_rule"], "robust-z>1");
  }
  EXPECT_GT(flagged, 0);
  EXPECT_LT(flagged, 10);
}

TEST(MuSc, OptionsAreCheckedByName) {
  auto open = [](const std::string& json) {
    ModelOptions o;
    o.model = model_path("tiny");
    o.scorer = Scorer::MuSc;
    o.scorer_options = json;
    return test::error_of([&] { Detector d(o); });
  };
  EXPECT_NE(open(R"({"r_lst": [1]})").find("unknown key 'r_lst'"), std::string::npos);
  EXPECT_NE(open(R"({"r_list": [2]})").find("'r_list'"), std::string::npos);
  EXPECT_NE(open(R"({"image_size": 225})").find("'image_size'"), std::string::npos);
  EXPECT_NE(open(R"({"feature_layers": [3]})").find("'feature_layers'"), std::string::npos);
  EXPECT_NE(open(R"({"topmin": [0.5, 0.3]})").find("'topmin'"), std::string::npos);
}

// The command line, end to end: `gad score --zero-shot` prints the official scores; a too-small
// collection is one line and a non-zero exit.
// Each line of `gad score`'s stdout as JSON.
std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(MuScCli, ZeroShotScores) {
  const auto c = index_of("musc")["cases"][0];
  const std::string dir = test::temp_dir("musc-cli");
  write_file_atomically(dir + "/o.json", [&](std::FILE* f) { std::fputs(musc_options(c).scorer_options.c_str(), f); });
  std::string inputs;
  for (const auto& p : musc_inputs(c)) inputs += " " + test::shell_quote(p);
  const std::string model = "--model " + model_path("tiny") + " --precision fp32 --scorer-options " + dir + "/o.json";
  test::CliResult r = test::run_cli("score --zero-shot " + model + inputs);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> lines = json_lines(r.out);
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_NEAR(lines[i]["score"].get<double>(), c["results"][c["batch_order"][i].get<std::string>()]["score"].get<double>(), 1e-4);
    EXPECT_EQ(lines[i]["verdict_rule"], "robust-z>3.5");
  }
  EXPECT_EQ(lines.size(), 10u);
  r = test::run_cli("score --zero-shot " + model + " " + test::shell_quote(musc_inputs(c)[0]));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("at least 5"), std::string::npos) << r.err;
  r = test::run_cli("score --zero-shot --scorer inctrl " + model + inputs);
  EXPECT_EQ(r.status, 1);
  // SubspaceAD from the command line, options from a file.
  const auto s = index_of("subspacead")["cases"][0];
  write_file_atomically(dir + "/s.json", [&](std::FILE* f) { std::fputs(subspacead_options(s).scorer_options.c_str(), f); });
  r = test::run_cli("score --scorer subspacead --precision fp32 --model " + model_path("tiny_reg") + " --scorer-options " + dir +
                    "/s.json --ref-images " + fixture("subspacead", s["ref_inputs"][0]) + " " + fixture("subspacead", s["query_inputs"][0]));
  ASSERT_EQ(r.status, 0) << r.err;
  const double want = s["results"][stem(s["query_inputs"][0])]["score"];
  EXPECT_NEAR(nlohmann::json::parse(r.out)["score"].get<double>(), want, 1e-4 * std::max(1.0, want));
}

}  // namespace
}  // namespace gad

namespace gad {
namespace {

// Sets written before the scorer interface (tests/data/sets/README.md) load and score as they
// did, the threshold's verdict included. Within 1e-6, not bit for bit: the lite CNN's
// convolutions round differently with another thread count (1e-7 here), and the files were
// scored by `gad score` on whatever cores that machine had.
TEST(SavedSets, FromBeforeTheScorerInterfaceScoreIdentically) {
  struct Case {
    std::string set, model;
    int resolution;
  };
  const std::string data = std::string(GAD_SOURCE_DIR) + "/tests/data/sets/";
  for (const Case& c : {Case{"lite-tile", test::shared("fixtures/lite/mobilenet_v2/model.json"), 0},
                        Case{"dino-rotate", model_path("tiny_reg"), 112}}) {
    SCOPED_TRACE(c.set);
    ModelOptions o;
    o.model = c.model;
    o.resolution = c.resolution;
    o.precision = Precision::FP32;
    Detector detector(o);
    const References refs = detector.load_references(data + c.set + ".gadref");
    std::vector<nlohmann::json> want;
    std::vector<std::string> paths;
    std::istringstream lines(read_file_text(data + c.set + ".scores.jsonl"));
    for (std::string line; std::getline(lines, line);) {
      want.push_back(nlohmann::json::parse(line));
      const std::string p = want.back()["path"];
      paths.push_back(p.rfind("../shared/", 0) == 0 ? test::shared(p.substr(10)) : std::string(GAD_SOURCE_DIR) + "/" + p);
    }
    const auto got = detector.score(refs, paths);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i].score, want[i]["score"].get<double>(), 1e-6) << paths[i];
      EXPECT_NEAR(got[i].s_patch, want[i]["s_patch"].get<double>(), 1e-6) << paths[i];
      if (want[i].contains("anomalous")) EXPECT_EQ(*got[i].anomalous(), want[i]["anomalous"].get<bool>()) << paths[i];
      else EXPECT_FALSE(got[i].anomalous().has_value());
    }
  }
}

}  // namespace
}  // namespace gad

namespace gad {
namespace {

ModelOptions tiny_clip(Scorer scorer) {
  ModelOptions o;
  o.model = test::inctrl_fixture("tiny_model/model.safetensors");
  o.config = test::inctrl_fixture("tiny_model/config.json");
  o.precision = Precision::FP32;
  o.scorer = scorer;
  return o;
}

// Zero-shot WinCLIP from the command line: one JSON line per image whose score is its s_text (the
// library's own number, 1e-6: printed with 6+ significant digits), the stated verdict rule; a
// missing class name and maps are refused in one line; WinCLIP on a model without CLIP is refused
// naming the model.
TEST(WinClipCli, ZeroShotScoresAndRefusals) {
  const std::vector<std::string> images = list_images({"examples/tiles/test"});
  ScoreOptions so;
  so.class_name = "tile";
  const std::vector<ScoreRecord> lib = Detector(tiny_clip(Scorer::WinCLIP)).score_zero_shot(images, so);
  const std::string model = "--model " + test::inctrl_fixture("tiny_model/model.safetensors") + " --config " +
                            test::inctrl_fixture("tiny_model/config.json") + " --precision fp32 --scorer winclip ";
  test::CliResult r = test::run_cli("score --zero-shot " + model + "--class tile examples/tiles/test");
  ASSERT_EQ(r.status, 0) << r.err;
  const std::vector<nlohmann::json> lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), images.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    EXPECT_NEAR(lines[i]["score"].get<double>(), lib[i].score, 1e-6);
    EXPECT_EQ(lines[i]["score"], lines[i]["s_text"]);
    EXPECT_EQ(lines[i]["verdict_rule"], "robust-z>3.5");
    EXPECT_FALSE(lines[i].contains("s_patch"));  // no map, no patch score
  }
  for (const std::string args : {"score --zero-shot " + model + "examples/tiles/test",
                                 "score --zero-shot " + model + "--class tile --maps " + test::temp_dir("wz-maps") + " examples/tiles/test"}) {
    r = test::run_cli(args);
    EXPECT_EQ(r.status, 1) << args;
    EXPECT_NE(r.err.find("gad: error: "), std::string::npos) << r.err;  // one line, after the log lines
    EXPECT_EQ(r.err.find('\n', r.err.find("gad: error: ")), r.err.size() - 1) << r.err;
    EXPECT_EQ(r.out, "") << args;
  }
  r = test::run_cli("score --zero-shot --scorer winclip --class tile --precision fp32 --model " +
                    test::shared("fixtures/lite/mobilenet_v2/model.json") + " examples/tiles/test");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("needs a CLIP model"), std::string::npos) << r.err;
}

// WinCLIP+ and the baselines are product scorers: sets save and load with their state, a set
// stripped of its state is refused on load naming what is missing, image-knn has no map to give,
// and an InCTRL file's own heads are set aside for them (naming heads explicitly is refused).
TEST(WinClip, SetsKeepTheirStateAndRefuseWhatTheyLack) {
  Detector d(tiny_clip(Scorer::WinCLIP));
  const std::vector<std::string> images = list_images({"examples/tiles/test"});
  const References refs = d.build_references(list_images({"examples/tiles/train/good"}), "tile");
  const References back = d.references_from_bytes(refs.to_bytes(), "copy");
  EXPECT_EQ(d.score(refs, images)[3].score, d.score(back, images)[3].score);
  const std::vector<ScoreRecord> with_maps = [&] {
    ScoreOptions o;
    o.map = MapKind::Patch;
    return d.score(refs, {images[0]}, o);
  }();
  ASSERT_TRUE(with_maps[0].ok()) << with_maps[0].error;
  EXPECT_FALSE(with_maps[0].map.values.empty());
  ReferenceSet stripped = reference_set(refs);
  stripped.state.erase("window.3");
  try {
    d.references_from_bytes(stripped.to_bytes(), "stripped.gadref");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("stripped.gadref: reference set lacks its WinCLIP memory (state.window.3)"),
              std::string::npos) << e.what();
  }
  ReferenceSet unknown = reference_set(refs);
  unknown.scorer = "nearest-unicorn";
  try {
    d.references_from_bytes(unknown.to_bytes(), "unknown.gadref");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown scorer 'nearest-unicorn'"), std::string::npos) << e.what();
  }
  Detector knn(tiny_clip(Scorer::ImageKNN));
  const References global_refs = knn.build_references(list_images({"examples/tiles/train/good"}));
  EXPECT_EQ(global_refs.scorer(), "image-knn");
  ScoreOptions maps;
  maps.map = MapKind::Patch;
  EXPECT_THROW(knn.score(global_refs, {images[0]}, maps), Error);
  const ScoreRecord r = knn.score(global_refs, {images[0]})[0];
  EXPECT_TRUE(r.ok() && r.score >= 0 && r.score <= 2) << r.error;
  EXPECT_FALSE(Detector(tiny_clip(Scorer::PatchKNN)).has_heads());  // the file's heads, set aside
  EXPECT_TRUE(Detector(tiny_clip(Scorer::InCTRL)).has_heads());
  ModelOptions explicit_heads = tiny_clip(Scorer::PatchKNN);
  explicit_heads.heads = explicit_heads.model;
  EXPECT_THROW(Detector{explicit_heads}, Error);
}

}  // namespace
}  // namespace gad
