// gad train: gradients, optimiser, determinism, resume and a small synthetic task on the real
// lite backbone (fixture weights).
#include <gtest/gtest.h>
#include <torch/optim/adamw.h>

#include <cmath>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <random>

#include "inctrl/heads.h"
#include "engine/load_model.h"
#include "model/runtime.h"
#include "support.h"
#include "train/episode.h"
#include "train/feature_cache.h"
#include "train/trainer.h"
#include "train/training_data.h"
#include "util/fs.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace gad {
namespace {

void write_text(const std::string& path, const std::string& text) {
  write_file_atomically(path, [&](std::FILE* f) { std::fputs(text.c_str(), f); });
}

EpisodeBatch random_batch(int64_t B, int64_t K, int64_t D, int64_t P, at::ScalarType dtype) {
  at::manual_seed(3);
  EpisodeBatch b;
  b.holistic_base = at::rand({B, P}, dtype) * 0.5;
  b.s_patch = std::get<0>(b.holistic_base.max(-1));
  b.query_global = at::randn({B, D}, dtype);
  b.prompt_globals = at::randn({B, K, D}, dtype);
  b.labels = at::cat({at::zeros({B / 2}), at::ones({B - B / 2})}).to(dtype);
  return b;
}

double loss_of(const InctrlHeads& h, const EpisodeBatch& b, LossKind kind) {
  return inctrl_loss(forward_episode(h, b, /*train=*/true), b.labels, kind).item<double>();
}

// Autograd through adapter, both heads and both BatchNorms (batch statistics) equals central
// differences in float64. Tolerance: |analytic − numeric| ≤ 1e-6 + 1e-4·|numeric|, far above the
// O(eps²) truncation and rounding of a 1e-5 step, far below any real error.
TEST(Train, GradientsMatchFiniteDifferences) {
  const int64_t B = 8, K = 2, D = 16, P = 9;
  for (LossKind kind : {LossKind::Focal, LossKind::Official}) {
    InctrlHeads h = InctrlHeads::init(D, P, 5).clone(at::kDouble);
    EpisodeBatch b = random_batch(B, K, D, P, at::kDouble);
    auto params = h.parameters();
    for (auto& p : params) p.requires_grad_(true);
    inctrl_loss(forward_episode(h, b, true), b.labels, kind).backward();
    auto named = h.state();
    at::NoGradGuard no_grad;
    int checked = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      at::Tensor p = params[i], g = p.grad().reshape(-1), flat = p.view(-1);
      for (int64_t j : {int64_t{0}, flat.numel() / 2, flat.numel() - 1}) {
        const double orig = flat[j].item<double>(), eps = 1e-5;
        flat[j] = orig + eps;
        const double up = loss_of(h, b, kind);
        flat[j] = orig - eps;
        const double down = loss_of(h, b, kind);
        flat[j] = orig;
        const double numeric = (up - down) / (2 * eps), analytic = g[j].item<double>();
        EXPECT_NEAR(analytic, numeric, 1e-6 + 1e-4 * std::abs(numeric)) << loss_name(kind) << " param " << i << "[" << j << "]";
        ++checked;
      }
    }
    EXPECT_EQ(params.size(), 2u + 2 * 10u);  // adapter + per head 3 Linear (w, b) + 2 BN (w, b)
    EXPECT_GT(checked, 60);
  }
}

// Our AdamW (state kept in plain tensors for checkpoints) follows torch.optim.AdamW exactly.
TEST(Train, AdamWMatchesTorch) {
  at::manual_seed(1);
  at::Tensor a = at::randn({5, 3}, at::kDouble), b = a.clone();
  a.requires_grad_(true);
  b.requires_grad_(true);
  AdamW ours;
  ours.lr = 0.01;
  torch::optim::AdamW theirs({b}, torch::optim::AdamWOptions(0.01).weight_decay(0.01));
  for (int step = 0; step < 5; ++step) {
    at::Tensor target = at::randn({5, 3}, at::kDouble);
    ((a - target).pow(2).sum() * (step + 1)).backward();
    ((b - target).pow(2).sum() * (step + 1)).backward();
    ours.update({a});
    theirs.step();
    theirs.zero_grad();
  }
  EXPECT_LT(test::max_abs_diff(a.detach(), b.detach()), 1e-12);
}

TEST(Train, LossNamesAndErrors) {
  EXPECT_EQ(parse_loss("focal"), LossKind::Focal);
  EXPECT_EQ(parse_loss("official"), LossKind::Official);
  EXPECT_THROW(parse_loss("mse"), Error);
}

// The reference's loss never reaches zero (probabilities read as logits); ours does.
TEST(Train, OfficialLossHasAFloorFocalDoesNot) {
  HeadOutputs perfect;
  perfect.final_score = at::tensor({0.0, 1.0}, at::kDouble);
  perfect.s_img = perfect.final_score;
  perfect.s_img_logit = at::tensor({-40.0, 40.0}, at::kDouble);
  at::Tensor y = at::tensor({0.0, 1.0}, at::kDouble);
  EXPECT_LT(inctrl_loss(perfect, y, LossKind::Focal).item<double>(), 1e-8);
  EXPECT_GT(inctrl_loss(perfect, y, LossKind::Official).item<double>(), 0.05);
}

// ---- end to end on a small synthetic task ------------------------------------------------------

// Two categories of 64x64 noisy textures; anomalies carry a faint small square, or (a third of
// them) the wrong texture frequency, so neither s_patch nor the image branch alone is perfect.
std::string make_task(const std::string& root) {
  std::mt19937_64 rng(11);
  auto texture = [&](int category, double freq = 1.0) {
    cv::Mat m(64, 64, CV_8UC1);
    const double phase = (rng() % 628) / 100.0;
    for (int y = 0; y < 64; ++y)
      for (int x = 0; x < 64; ++x) {
        double v = category == 0 ? std::sin(y * 0.6 * freq + phase) : std::sin(x * 0.5 * freq + phase) * std::sin(y * 0.5);
        m.at<uint8_t>(y, x) = static_cast<uint8_t>(128 + 50 * v + static_cast<int>(rng() % 41) - 20);
      }
    return m;
  };
  for (int c = 0; c < 2; ++c) {
    const fs::path dir = fs::path(root) / (c ? "dots" : "stripes");
    for (const char* sub : {"train/good", "test/good", "test/defect"}) fs::create_directories(dir / sub);
    for (int i = 0; i < 30; ++i) cv::imwrite((dir / "train/good" / ("n" + std::to_string(i) + ".png")).string(), texture(c));
    for (int i = 0; i < 10; ++i) cv::imwrite((dir / "test/good" / ("g" + std::to_string(i) + ".png")).string(), texture(c));
    for (int i = 0; i < 30; ++i) {
      cv::Mat m = texture(c, i % 3 == 0 ? 1.3 : 1.0);
      if (i % 3) {
        const int x = static_cast<int>(rng() % 56), y = static_cast<int>(rng() % 56);
        cv::Mat patch = m(cv::Rect(x, y, 7, 7));
        patch += cv::Scalar(rng() % 2 ? 45 : -45);
      }
      cv::imwrite((dir / "test/defect" / ("d" + std::to_string(i) + ".png")).string(), m);
    }
  }
  return root;
}

struct TaskRun {
  TrainReport report;
  std::map<std::string, at::Tensor> heads;
};

class TrainTask : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = test::temp_dir("gad_train_task");
    make_task(dir_ + "/data");
    ModelOptions f;
    f.model = test::shared("fixtures/lite/mobilenet_v2/model.json");
    model_ = new LoadedModel(load_model(f));
  }
  static void TearDownTestSuite() {
    delete model_;
    fs::remove_all(dir_);
  }
  TrainOptions options(const std::string& name) const {
    TrainOptions o;
    o.data = {dir_ + "/data"};
    o.k = 2;
    o.epochs = 3;
    o.steps = 15;
    o.batch = 8;
    o.val_fraction = 0.25;
    o.out = dir_ + "/" + name + ".safetensors";
    o.cache_dir = dir_ + "/cache";
    o.progress = false;
    return o;
  }
  TaskRun run(const TrainOptions& o, int threads = 2) const {
    ScopedThreads t(threads);
    TaskRun r;
    r.report = train_heads(*model_->backbone, o);
    r.heads = test::load_tensors(o.out);
    return r;
  }
  static void expect_identical(const std::map<std::string, at::Tensor>& a, const std::map<std::string, at::Tensor>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (const auto& [k, t] : a) EXPECT_TRUE(at::equal(t, b.at(k))) << k;
  }
  static std::string dir_;
  static LoadedModel* model_;
};
std::string TrainTask::dir_;
LoadedModel* TrainTask::model_ = nullptr;

TEST_F(TrainTask, LossFallsAndValidationAurocRises) {
  TaskRun r = run(options("learn"));
  const auto& e = r.report.epochs;
  ASSERT_EQ(e.size(), 3u);
  for (const auto& s : e) std::printf("epoch %d: loss %.4f, val AUROC %.4f\n", s.epoch, s.train_loss, s.val_auroc);
  std::printf("before training %.4f, s_patch alone %.4f\n", r.report.initial_val_auroc, r.report.val_patch_auroc);
  EXPECT_LT(e.back().train_loss, e.front().train_loss);
  double best = 0;
  for (const auto& s : e) best = std::max(best, s.val_auroc);
  EXPECT_GT(best, r.report.initial_val_auroc + 0.02);
  // The output is the best epoch and loads as ordinary InCTRL heads.
  const auto& chosen = e.at(r.report.best_epoch - 1);
  EXPECT_EQ(chosen.val_auroc, best);
  Weights w = Weights::load(options("learn").out);
  InctrlHeads::load(w, model_->backbone->embed_dim(), model_->backbone->num_patches());
  w.check_all_taken();
  // One CSV row per epoch, read by a real CSV parser.
  const auto log = test::python_csv_rows(dir_ + "/learn.checkpoints/train_log.csv");
  ASSERT_EQ(log.size(), 1u + 3);
  EXPECT_EQ(log[0], (std::vector<std::string>{"epoch", "train_loss", "val_auroc", "val_auprc", "val_patch_auroc", "seconds"}));
  for (size_t i = 1; i < log.size(); ++i) {
    ASSERT_EQ(log[i].size(), 6u);
    EXPECT_EQ(log[i][0], std::to_string(i));
    EXPECT_NEAR(std::stod(log[i][2]), e[i - 1].val_auroc, 1e-5);
  }
}

TEST_F(TrainTask, SameSeedGivesBitIdenticalHeadsForAnyThreadCount) {
  TaskRun one = run(options("det1"), 1), two = run(options("det2"), 2);
  expect_identical(one.heads, two.heads);
  TrainOptions other = options("det3");
  other.seed = 11;
  TaskRun three = run(other, 2);
  EXPECT_FALSE(at::equal(one.heads.at("adapter.fc.0.weight"), three.heads.at("adapter.fc.0.weight")));
}

TEST_F(TrainTask, ResumeContinuesBitIdentically) {
  TrainOptions full = options("full");
  full.epochs = 2;
  TaskRun a = run(full);
  TrainOptions part = options("part");
  part.epochs = 1;
  run(part);
  part.epochs = 2;
  part.resume = true;
  TaskRun b = run(part);
  ASSERT_EQ(b.report.epochs.size(), 2u);
  EXPECT_EQ(b.report.epochs[1].train_loss, a.report.epochs[1].train_loss);
  expect_identical(test::load_tensors(dir_ + "/full.checkpoints/epoch_002.safetensors"),
                   test::load_tensors(dir_ + "/part.checkpoints/epoch_002.safetensors"));
  // Changed settings are refused.
  part.lr = 0.5;
  part.epochs = 3;
  EXPECT_THROW(run(part), Error);
}

// Each image is encoded once; a second pass (another run, another epoch) reads the cache only,
// and a damaged entry is re-encoded instead of failing.
TEST_F(TrainTask, FeatureCacheEncodesEachImageOnce) {
  const std::string cache = dir_ + "/cache-once";
  std::vector<std::string> paths = {dir_ + "/data/dots/train/good/n0.png", dir_ + "/data/dots/train/good/n1.png",
                                    dir_ + "/data/stripes/test/defect/d3.png"};
  FeatureCacheOptions o;
  o.dir = cache;
  o.progress = false;
  const Backbone& b = *model_->backbone;
  const int64_t before = b.image_encodes();
  CachedFeatures first = cached_features(b, paths, o);
  EXPECT_EQ(b.image_encodes() - before, 3);
  CachedFeatures again = cached_features(b, paths, o);
  EXPECT_EQ(b.image_encodes() - before, 3);
  EXPECT_TRUE(at::equal(first.global, again.global));
  ASSERT_EQ(first.taps.size(), again.taps.size());
  EXPECT_TRUE(at::equal(first.taps[0], again.taps[0]));
  EXPECT_EQ(first.taps[0].size(0), 3);
  // Truncate every entry: each is re-encoded (the first one included, which gives the shapes).
  for (const auto& e : fs::recursive_directory_iterator(cache))
    if (e.is_regular_file()) fs::resize_file(e.path(), 100);
  CachedFeatures repaired = cached_features(b, paths, o);
  EXPECT_EQ(b.image_encodes() - before, 6);
  EXPECT_TRUE(at::equal(first.global, repaired.global));
}

// The CLIP path (text prior per category, CLIP grid) trains and its heads score through the
// ordinary loader: the tiny random-weight InCTRL model.
TEST_F(TrainTask, ClipBackboneTrainsWithTextPrior) {
  ModelOptions f;
  f.model = test::inctrl_fixture("tiny_model/model.safetensors");
  f.config = test::inctrl_fixture("tiny_model/config.json");
  f.heads = "none";
  LoadedModel clip = load_model(f);
  ASSERT_TRUE(clip.backbone->has_text());
  TrainOptions o = options("clip");
  o.epochs = 2;
  o.steps = 3;
  TrainReport r = train_heads(*clip.backbone, o);
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_TRUE(std::isfinite(r.epochs[1].train_loss));
  EXPECT_TRUE(std::isfinite(r.epochs[1].val_auroc));
  f.heads = o.out;
  EXPECT_TRUE(load_model(f).heads.has_value());
}

TEST_F(TrainTask, HeadsRefuseAnotherBackbone) {
  TrainOptions o = options("fp");
  o.epochs = 1;
  o.steps = 2;
  run(o);
  ModelOptions f;
  f.model = test::inctrl_fixture("tiny_model/model.safetensors");
  f.config = test::inctrl_fixture("tiny_model/config.json");
  f.heads = o.out;
  try {
    load_model(f);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("trained on another backbone"), std::string::npos) << e.what();
  }
}

// The reference's JSON lists: merged by type, relative paths against the JSON's folder, and
// malformed entries named.
TEST_F(TrainTask, JsonListsAreReadAndCheckedLikeFolders) {
  const std::string d = dir_ + "/data/stripes";
  write_text(dir_ + "/normal.json", "[{\"image_path\": \"data/stripes/train/good/n0.png\", \"target\": 0, \"type\": \"wavy_stripes\"},"
                                    " {\"image_path\": \"" + d + "/train/good/n1.png\", \"target\": 0, \"type\": \"wavy_stripes\"}]");
  write_text(dir_ + "/outlier.json", "[{\"image_path\": \"data/stripes/test/defect/d0.png\", \"target\": 1, \"type\": \"wavy_stripes\"}]");
  TrainingData data = read_training_data({dir_ + "/outlier.json", dir_ + "/normal.json"});
  ASSERT_EQ(data.categories.size(), 1u);
  EXPECT_EQ(data.categories[0].class_name, "wavy stripes");
  ASSERT_EQ(data.samples.size(), 3u);
  int anomalous = 0;
  for (const auto& s : data.samples) anomalous += s.label;
  EXPECT_EQ(anomalous, 1);
  write_text(dir_ + "/bad.json", "[{\"image_path\": \"data/stripes/test/defect/d0.png\", \"target\": 2, \"type\": \"x\"}]");
  try {
    read_training_data({dir_ + "/bad.json"});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.json: entry 0: target must be 0 or 1"), std::string::npos) << e.what();
  }
}

TEST_F(TrainTask, BadOptionsFailClearly) {
  TrainOptions o = options("bad");
  o.k = 0;
  EXPECT_THROW(run(o), Error);
  o = options("bad");
  o.batch = 7;
  EXPECT_THROW(run(o), Error);
  o = options("bad");
  o.k = 40;  // more prompts than any category has training normals
  try {
    run(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("training normal"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(o.out));
}

}  // namespace
}  // namespace gad
