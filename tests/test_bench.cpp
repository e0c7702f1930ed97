// `gad bench` on the shipped demo tiles with the fixture lite model: the output files, one result
// row per (scorer, K, draw), reproducible draws, clear refusals, and an interrupted run that
// keeps only finished categories.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clip/clip_backbone.h"
#include "data/convert.h"
#include "engine/engine.h"
#include "benchmark/benchmark.h"
#include "image/image.h"
#include "clip/prompts.h"
#include "scorers/scorer.h"
#include "scorers/winclip.h"
#include "engine/load_model.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

BenchOptions tiles_options(const std::string& out) {
  BenchOptions o;
  o.files.model = test::shared("fixtures/lite/mobilenet_v2/model.json");
  o.roots = {"examples/tiles"};
  o.ks = {1, 2};
  o.draws = 2;
  o.out_dir = out;
  o.precision = "fp32";
  return o;
}

// The scores of a bench scores.csv (dataset, category, method, K, draw, path, label, score) by
// "<column key> <path>".
std::map<std::string, double> bench_scores(const std::string& csv, size_t key) {
  std::map<std::string, double> out;
  std::ifstream in(csv);
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line)) {
    std::vector<std::string> c;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) c.push_back(cell);
    EXPECT_EQ(c.size(), 8u) << line;
    if (c.size() == 8) out[c[key] + " " + c[5]] = std::stod(c[7]);
  }
  return out;
}

size_t line_count(const std::string& path) {
  std::string text = read_file_text(path);
  return std::count(text.begin(), text.end(), '\n');
}

TEST(Bench, WritesEveryOutputAndReproducesFromDrawsFile) {
  std::string dir = test::temp_dir("bench");
  ASSERT_EQ(run_benchmark(tiles_options(dir + "/a"), nullptr), 1);
  for (const char* f : {"results.csv", "scores.csv", "draws.json", "summary.md", "curves/examples_tiles_K1.svg"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/a/" + f)) << f;
  EXPECT_EQ(line_count(dir + "/a/results.csv"), 1u + 3 * 2 * 2);       // header + methods x K x draws
  EXPECT_EQ(line_count(dir + "/a/scores.csv"), 1u + 3 * 2 * 2 * 12);   // x 12 test tiles
  auto draws = nlohmann::json::parse(read_file_text(dir + "/a/draws.json"))["draws"];
  ASSERT_EQ(draws.size(), 4u);
  EXPECT_NE(draws[2]["references"], draws[3]["references"]);  // two K=2 draws differ

  // Same seed again, and the saved draws reused: identical metrics.
  ASSERT_EQ(run_benchmark(tiles_options(dir + "/b"), nullptr), 1);
  BenchOptions reuse = tiles_options(dir + "/c");
  reuse.seed = 99;  // ignored: the draws come from the file
  reuse.draws_file = dir + "/a/draws.json";
  ASSERT_EQ(run_benchmark(reuse, nullptr), 1);
  auto metrics = [](const std::string& path) {  // drop the timing column
    std::ifstream in(path);
    std::string line, out;
    while (std::getline(in, line)) out += line.substr(0, line.rfind(',')) + "\n";
    return out;
  };
  EXPECT_EQ(metrics(dir + "/a/results.csv"), metrics(dir + "/b/results.csv"));
  EXPECT_EQ(metrics(dir + "/a/results.csv"), metrics(dir + "/c/results.csv"));
}

TEST(Bench, RefusesWhatCannotRun) {
  std::string dir = test::temp_dir("bench-refuse");
  BenchOptions o = tiles_options(dir);
  o.methods = {"winclip"};
  try {
    run_benchmark(o, nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs a CLIP model"), std::string::npos) << e.what();
  }
  o.methods = {"nearest-unicorn"};
  EXPECT_THROW(run_benchmark(o, nullptr), Error);
  o = tiles_options(dir);
  o.roots = {dir};  // no category inside
  EXPECT_THROW(run_benchmark(o, nullptr), Error);
}

TEST(Bench, InterruptKeepsOnlyFinishedCategories) {
  std::string dir = test::temp_dir("bench-stop");
  std::atomic<bool> stop{true};  // Ctrl-C before the first batch finishes
  EXPECT_EQ(run_benchmark(tiles_options(dir), &stop), 0);
  EXPECT_EQ(line_count(dir + "/results.csv"), 1u);  // header only: no partial category
  EXPECT_NE(read_file_text(dir + "/summary.md").find("categories finished: 0 of 1"), std::string::npos);
}

}  // namespace
}  // namespace gad

namespace gad {
namespace {

// WinCLIP+ on the tiny CLIP model: a query identical to its single reference has every window
// and patch residual ~0, so the harmonic maps vanish and the score is s_text / 2.
TEST(Bench, WinclipOnClipSelfQueryIsHalfTheTextScore) {
  LoadedModel m = load_model({test::inctrl_fixture("tiny_model/model.safetensors"),
                              test::inctrl_fixture("tiny_model/config.json"), ""});
  const auto winclip = scorers::make_winclip(*m.backbone, nlohmann::json::object(), "test");
  auto px_of = [&](const std::string& name) {
    return m.backbone->preprocess(decode_image(test::inctrl_fixture("preprocess/" + name)));
  };
  const PixelTensor ref = px_of("elpv_cell0004.png");
  const ReferenceSet set = winclip->build(*m.backbone, {ref}, {{"ref", ""}}, "elpv");
  auto score = [&](const PixelTensor& px) {
    return winclip->score(set, m.backbone->encode(stack_pixels({px}), winclip->features()))[0];
  };
  const ScoreRecord self = score(ref);
  auto& clip = dynamic_cast<ClipBackbone&>(*m.backbone);
  at::Tensor text = clip.text_features(ensemble_prompt_sentences("elpv"));
  at::Tensor f = m.backbone->encode(stack_pixels({ref})).global;
  f = f / f.norm(2, -1, true);
  double s_text = at::softmax(100.0 * at::matmul(f, text.t()), -1)[0][1].item<double>();
  EXPECT_NEAR(self.s_text, s_text, 1e-6);
  EXPECT_NEAR(self.score, s_text / 2, 1e-4);
  EXPECT_EQ(self.residual_map.size(), static_cast<size_t>(m.backbone->num_patches()));
  EXPECT_GT(score(px_of("mt_fray_331149.jpg")).score, self.score);  // a different image has visual residuals
}

TEST(Bench, AllFourScorersOnTheTinyClipModel) {
  std::string dir = test::temp_dir("bench-clip");
  BenchOptions o;
  o.files = {test::inctrl_fixture("tiny_model/model.safetensors"), test::inctrl_fixture("tiny_model/config.json"), ""};
  o.roots = {"examples/tiles"};
  o.ks = {1};
  o.draws = 1;
  o.out_dir = dir;
  o.precision = "fp32";
  o.methods = {"inctrl", "patch-knn", "image-knn", "winclip"};
  ASSERT_EQ(run_benchmark(o, nullptr), 1);
  EXPECT_EQ(line_count(dir + "/results.csv"), 1u + 4);
  EXPECT_NE(read_file_text(dir + "/summary.md").find("| winclip |"), std::string::npos);
}

// Magnetic tiles with their defect masks (converted to ground_truth/): pixel AUROC and AUPRO for
// the scorers with a map, blank for image-knn; a missing mask turns pixel metrics off.
TEST(Bench, PixelMetricsOnMagneticTileMasks) {
  std::string dir = test::temp_dir("bench-pixel");
  ConvertOptions co;
  co.normal_dir = "MT_Free";
  co.anomalous_dirs = {"MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Uneven"};
  co.category = "magnetic_tile";
  convert_dataset("folder", test::shared("data/magnetic_tile_sample"), dir + "/data", co);
  BenchOptions o = tiles_options(dir + "/out");
  o.roots = {dir + "/data"};
  o.ks = {2};
  o.draws = 1;
  o.report = true;
  ASSERT_EQ(run_benchmark(o, nullptr), 1);
  const std::string html = read_file_text(dir + "/out/report.html");
  EXPECT_NE(html.find("<h2>data/magnetic_tile</h2>"), std::string::npos);
  EXPECT_NE(html.find("<th>pixel AUROC</th>"), std::string::npos);
  EXPECT_NE(html.find("data:image/png;base64,"), std::string::npos);
  std::ifstream in(dir + "/out/results.csv");
  std::string header, line;
  std::getline(in, header);
  EXPECT_NE(header.find(",pixel_AUROC,AUPRO"), std::string::npos) << header;
  int rows = 0;
  while (std::getline(in, line)) {
    ++rows;
    std::vector<std::string> cells;
    std::stringstream ss(line);
    for (std::string cell; std::getline(ss, cell, ',');) cells.push_back(cell);
    if (line.find(",image-knn,") != std::string::npos) {
      EXPECT_EQ(line.substr(line.size() - 2), ",,") << line;
      continue;
    }
    ASSERT_EQ(cells.size(), 12u) << line;
    const double pixel_auroc = std::stod(cells[10]), aupro = std::stod(cells[11]);
    EXPECT_GT(pixel_auroc, 0.6) << line;  // the lite patch residual localises real defects
    EXPECT_LT(pixel_auroc, 1.0) << line;
    EXPECT_GT(aupro, 0.3) << line;
    EXPECT_LT(aupro, 1.0) << line;
  }
  EXPECT_EQ(rows, 3);
  EXPECT_NE(read_file_text(dir + "/out/summary.md").find("Pixel level"), std::string::npos);

  std::filesystem::path gt = dir + "/data/magnetic_tile/ground_truth/MT_Crack";
  std::filesystem::remove(std::filesystem::directory_iterator(gt)->path());
  o.out_dir = dir + "/out2";
  ASSERT_EQ(run_benchmark(o, nullptr), 1);
  EXPECT_EQ(read_file_text(dir + "/out2/results.csv").find("pixel_AUROC"), std::string::npos);
}

// The paper's protocol: references from the released prompt-set layout DIR/<K>/<category>.pt, one
// fixed draw per K, recorded in draws.json and summary.md; the scores equal `gad score --prompts`
// with the same file (same computation; 1e-6 allows for batch composition).
TEST(Bench, PromptSetsGiveTheScoresOfScoringWithThePromptFile) {
  const std::string dir = test::temp_dir("bench-prompts");
  const std::string cat = dir + "/data/tinycat", pre = test::inctrl_fixture("preprocess/");
  const std::vector<std::pair<std::string, std::string>> files = {
      {"train/good", "mt_break_348629.jpg"}, {"test/good", "cifar_cat_0000.jpg"}, {"test/good", "headct_195.png"},
      {"test/crack", "mt_fray_331149.jpg"},  {"test/crack", "elpv_cell0004.png"}};
  for (const auto& [folder, name] : files) {
    std::filesystem::create_directories(cat + "/" + folder);
    std::filesystem::copy_file(pre + name, cat + "/" + folder + "/" + name);
  }
  for (int k : {1, 2}) {
    std::filesystem::create_directories(dir + "/prompts/" + std::to_string(k));
    std::filesystem::copy_file(test::inctrl_fixture("release_formats/fs_samples/tiny/" + std::to_string(k) + "/list_of_tensors.pt"),
                               dir + "/prompts/" + std::to_string(k) + "/tinycat.pt");
  }
  BenchOptions o;
  o.files = {test::inctrl_fixture("tiny_model/model.safetensors"), test::inctrl_fixture("tiny_model/config.json"), ""};
  o.roots = {dir + "/data"};
  o.ks = {1, 2};
  o.out_dir = dir + "/out";
  o.precision = "fp32";
  o.methods = {"inctrl"};
  o.prompt_sets_dir = dir + "/prompts";
  o.draws = 1;
  ASSERT_EQ(run_benchmark(o, nullptr), 1);
  auto draws = nlohmann::json::parse(read_file_text(dir + "/out/draws.json"))["draws"];
  ASSERT_EQ(draws.size(), 2u);
  EXPECT_EQ(draws[1]["prompt_file"], dir + "/prompts/2/tinycat.pt");
  EXPECT_EQ(draws[1]["references"].size(), 2u);
  EXPECT_NE(read_file_text(dir + "/out/summary.md").find("fixed prompt sets"), std::string::npos);

  const std::map<std::string, double> bench = bench_scores(dir + "/out/scores.csv", 3);  // "K path" -> score
  ASSERT_EQ(bench.size(), 2u * 4);
  for (int k : {1, 2}) {
    ModelOptions eo;
    eo.model = o.files.model;
    eo.config = o.files.config;
    eo.heads = o.files.heads;
    eo.precision = Precision::FP32;
    Detector engine(eo);
    const References set = engine.build_references_from_prompts(dir + "/prompts/" + std::to_string(k) + "/tinycat.pt", "tinycat");
    std::vector<std::string> queries;
    for (const auto& [folder, name] : files)
      if (folder != "train/good") queries.push_back(cat + "/" + folder + "/" + name);
    ScoreOptions one;
    one.batch = 1;
    for (const auto& r : engine.score(set, queries, one)) {
      ASSERT_TRUE(bench.count(std::to_string(k) + " " + r.path)) << r.path;
      EXPECT_NEAR(bench.at(std::to_string(k) + " " + r.path), r.score, 1e-6) << r.path;
    }
  }
  // A category without a prompt file for some K is refused before any work, naming the file.
  std::filesystem::remove(dir + "/prompts/2/tinycat.pt");
  o.out_dir = dir + "/out2";
  try {
    run_benchmark(o, nullptr);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/prompts/2/tinycat.pt"), std::string::npos) << e.what();
  }
}

#ifdef GAD_BENCH
TEST(GadBench, BadArgumentsAreOneLineErrorsBeforeAnyMeasurement) {
  const std::string dir = test::temp_dir("gad-bench-args");
  for (const std::string args : {"--bogus 1", "--threads", "--reps x", "--k 0", "--lite /nonexistent", "--config Nope"}) {
    const int status = std::system((std::string(GAD_BENCH) + " " + args + " >" + dir + "/out 2>" + dir + "/err").c_str());
    EXPECT_NE(WEXITSTATUS(status), 0) << args;
    const std::string err = read_file_text(dir + "/err");
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    EXPECT_EQ(err.rfind("gad_bench: ", 0), 0u) << err;
    EXPECT_EQ(read_file_text(dir + "/out"), "") << args;  // nothing measured, nothing printed
  }
}
#endif

}  // namespace
}  // namespace gad

namespace gad {
namespace {

// `gad bench` scores as `gad score` does, for every scorer: each draw's set built from the same
// references, the same queries; 1e-6, relative for SubspaceAD's large scores (the same code on the
// same features; the CSV prints 9 significant digits).
std::map<std::string, double> bench_of(BenchOptions o, const std::vector<std::string>& scorers, nlohmann::json& draws) {
  o.ks = {2};
  o.draws = 1;
  o.methods = scorers;
  EXPECT_EQ(run_benchmark(o, nullptr), 1);
  draws = nlohmann::json::parse(read_file_text(o.out_dir + "/draws.json"))["draws"];
  return bench_scores(o.out_dir + "/scores.csv", 2);  // "scorer path" -> score
}

void expect_bench_equals(const std::map<std::string, double>& bench, const std::string& name,
                         const std::vector<ScoreRecord>& records) {
  ASSERT_FALSE(records.empty());
  for (const auto& r : records) {
    ASSERT_TRUE(r.ok()) << r.error;
    ASSERT_TRUE(bench.count(name + " " + r.path)) << name << " " << r.path;
    EXPECT_NEAR(bench.at(name + " " + r.path), r.score, 1e-6 * std::max(1.0, std::fabs(r.score))) << name << " " << r.path;
  }
}

TEST(Bench, EveryScorerEqualsTheEngineOnLite) {
  const std::string dir = test::temp_dir("bench-scorers");
  BenchOptions o = tiles_options(dir + "/out");
  o.scorer_options = R"({"subspacead": {"aug_count": 1}})";  // the augmentation path, kept short
  nlohmann::json draws;
  const std::vector<std::pair<std::string, Scorer>> scorers = {
      {"inctrl", Scorer::InCTRL},           {"patch-knn", Scorer::PatchKNN},        {"image-knn", Scorer::ImageKNN},
      {"anomalydino", Scorer::AnomalyDINO}, {"anomalydino-rot", Scorer::AnomalyDINO}, {"subspacead", Scorer::SubspaceAD}};
  std::vector<std::string> names = {"musc"};
  for (const auto& s : scorers) names.push_back(s.first);
  const std::map<std::string, double> bench = bench_of(o, names, draws);
  EXPECT_EQ(bench.size(), names.size() * 12);
  EXPECT_NE(read_file_text(o.out_dir + "/summary.md").find("K = 0 (zero-shot"), std::string::npos);
  const auto refs = draws[0]["references"].get<std::vector<std::string>>();
  const std::vector<std::string> test_images = list_images({"examples/tiles/test"});
  for (const auto& [name, scorer] : scorers) {
    ModelOptions eo;
    eo.model = o.files.model;
    eo.precision = Precision::FP32;
    eo.scorer = scorer;
    eo.rotate = name == "anomalydino-rot";
    if (name == "subspacead") eo.scorer_options = R"({"aug_count": 1})";
    Detector engine(eo);
    expect_bench_equals(bench, name, engine.score(engine.build_references(refs), test_images));
  }
  ModelOptions zo;
  zo.model = o.files.model;
  zo.precision = Precision::FP32;
  zo.scorer = Scorer::MuSc;
  expect_bench_equals(bench, "musc", Detector(zo).score_zero_shot(test_images));
}

// WinCLIP+ and zero-shot WinCLIP on the tiny CLIP model: `gad bench` equals the product's scorer
// (`gad score --scorer winclip`, `gad score --zero-shot --scorer winclip --class NAME`).
TEST(Bench, WinclipFewAndZeroShotEqualTheEngine) {
  const std::string dir = test::temp_dir("bench-winclip");
  BenchOptions o = tiles_options(dir + "/out");
  o.files = {test::inctrl_fixture("tiny_model/model.safetensors"), test::inctrl_fixture("tiny_model/config.json"), ""};
  nlohmann::json draws;
  const std::map<std::string, double> bench = bench_of(o, {"winclip", "winclip-zero-shot"}, draws);
  EXPECT_EQ(bench.size(), 2u * 12);
  ModelOptions eo;
  eo.model = o.files.model;
  eo.config = o.files.config;
  eo.precision = Precision::FP32;
  eo.scorer = Scorer::WinCLIP;
  Detector engine(eo);
  const std::vector<std::string> test_images = list_images({"examples/tiles/test"});
  const References refs = engine.build_references(draws[0]["references"].get<std::vector<std::string>>(), "tiles");
  EXPECT_EQ(refs.scorer(), "winclip");
  expect_bench_equals(bench, "winclip", engine.score(refs, test_images));
  ScoreOptions zs;
  zs.class_name = "tiles";
  const std::vector<ScoreRecord> zero = engine.score_zero_shot(test_images, zs);
  expect_bench_equals(bench, "winclip-zero-shot", zero);
  // Another batch size moves CLIP's embeddings by float rounding only; s_text's logit scale of 100
  // turns that into ~1e-6.
  zs.batch = 3;
  const std::vector<ScoreRecord> batched = engine.score_zero_shot(test_images, zs);
  for (size_t i = 0; i < zero.size(); ++i) EXPECT_NEAR(batched[i].score, zero[i].score, 1e-5);
  for (const auto& r : zero) {
    EXPECT_EQ(r.s_text, r.score);
    EXPECT_EQ(r.verdict_rule, "robust-z>3.5");
  }
  zs.class_name.clear();
  try {
    engine.score_zero_shot(test_images, zs);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("class name"), std::string::npos) << e.what();
  }
  // A saved WinCLIP set keeps its memory and scores the same after loading.
  const std::string path = dir + "/winclip.gadref";
  refs.save(path);
  const std::vector<ScoreRecord> before = engine.score(refs, {test_images[0]});
  const std::vector<ScoreRecord> after = engine.score(engine.load_references(path), {test_images[0]});
  EXPECT_EQ(before[0].score, after[0].score);
}

}  // namespace
}  // namespace gad
