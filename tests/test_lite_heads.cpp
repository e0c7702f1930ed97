// The shipped lite heads (`--heads lite`: gad's statistics head, src/inctrl/stats_head.h, made by
// scripts/train-lite-heads.sh) against the untrained patch residual s_patch on a held-out slice:
// the 200 cells of shared/data/elpv_sample, which the heads' training data (ELPV without these
// cells, CIFAR-10, MNIST, Fashion-MNIST) left out. Same references, same features, both scores.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "backbone/backbone.h"
#include "benchmark/benchmark.h"
#include "eval/metrics.h"
#include "image/image.h"
#include "scorers/reference_set.h"
#include "inctrl/scorer.h"
#include "io/safetensors.h"
#include "engine/load_model.h"
#include "model/weights.h"
#include "util/error.h"
#include "support.h"
#include "util/image_list.h"

namespace gad {
namespace {

TEST(StatsHead, StatisticsAreMaxAndTopMeansOfTheMap) {
  // 196 values 0..195 shuffled: max 195, top 4 (2 %) mean 193.5, top 20 (10 %) mean 185.5.
  at::Tensor m = at::arange(196, at::kFloat).index_select(0, at::randperm(196, at::kLong)).unsqueeze(0);
  at::Tensor s = StatsHead::statistics(at::cat({m, m.flip({1}) * 2}));
  ASSERT_EQ(s.sizes(), (at::IntArrayRef{2, 3}));
  EXPECT_FLOAT_EQ(s[0][0].item<float>(), 195.f);
  EXPECT_FLOAT_EQ(s[0][1].item<float>(), 193.5f);
  EXPECT_FLOAT_EQ(s[0][2].item<float>(), 185.5f);
  EXPECT_FLOAT_EQ(s[1][2].item<float>(), 371.f);  // position-free: the flipped map, doubled
  StatsHead h{at::zeros({3}), at::ones({3}), at::tensor({1.f, -1.f, 0.5f}), at::tensor({0.25f}), at::ones({1})};
  EXPECT_NEAR(h.forward(m, 14)[0].item<float>(), 195 - 193.5 + 0.5 * 185.5 + 0.25, 1e-3);
}

// The window averages M over squares of the grid before the statistics: a lone hot patch counts
// a ninth of a 3x3 blob of the same height, wherever either sits.
TEST(StatsHead, WindowAveragesSquaresOfTheGridFirst) {
  at::Tensor lone = at::zeros({14, 14}), blob = at::zeros({14, 14});
  lone[2][11] = 9;
  blob.slice(0, 10, 13).slice(1, 0, 3).fill_(9);
  const at::Tensor maps = at::stack({lone.flatten(), blob.flatten()});
  const at::Tensor smoothed = StatsHead::smooth(maps, 14, 3);
  ASSERT_EQ(smoothed.sizes(), (at::IntArrayRef{2, 144}));
  EXPECT_FLOAT_EQ(smoothed[0].max().item<float>(), 1.f);
  EXPECT_FLOAT_EQ(smoothed[1].max().item<float>(), 9.f);
  EXPECT_TRUE(StatsHead::smooth(maps, 14, 1).equal(maps)) << "window 1 is M as it is";
  StatsHead h{at::zeros({3}), at::ones({3}), at::tensor({1.f, 0.f, 0.f}), at::zeros({1}), at::full({1}, 3.f)};
  EXPECT_FLOAT_EQ(h.forward(maps, 14)[1].item<float>(), 9.f);
  EXPECT_THROW(StatsHead::smooth(maps, 13, 3), Error) << "a map that is not the grid";
  EXPECT_THROW(StatsHead::smooth(maps, 14, 15), Error) << "a window larger than the grid";
}

// A window that is not a whole number 1..64 is refused with the file's name.
TEST(StatsHead, RefusesABadWindow) {
  for (float bad : {0.f, 2.5f, 65.f, NAN}) {
    const std::string path = test::temp_dir("stats-head-window") + "/stats.safetensors";
    const at::Tensor three = at::ones({3}), one = at::zeros({1}), window = at::full({1}, bad);
    write_safetensors(path, {{"stats_head.mean", raw_view(three)}, {"stats_head.scale", raw_view(three)},
                             {"stats_head.weight", raw_view(three)}, {"stats_head.bias", raw_view(one)},
                             {"stats_head.window", raw_view(window)}});
    Weights w = Weights::load(path);
    try {
      StatsHead::load(w);
      ADD_FAILURE() << "window " << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path + ": stats_head.window must be a whole number 1..64"), std::string::npos)
          << e.what();
    }
  }
}

std::string load_error(const std::string& heads) {
  try {
    load_model({test::inctrl_fixture("tiny_model/model.safetensors"), test::inctrl_fixture("tiny_model/config.json"), heads});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The variant is for the lite backbone only: the CLIP path keeps the reference's heads.
TEST(StatsHead, RefusesAClipBackbone) {
  EXPECT_NE(load_error("lite").find("trained on another backbone"), std::string::npos) << load_error("lite");
  const std::string bare = test::temp_dir("stats-head-bare") + "/stats.safetensors";  // no gad metadata
  const at::Tensor three = at::ones({3}), one = at::zeros({1});
  write_safetensors(bare, {{"stats_head.mean", raw_view(three)}, {"stats_head.scale", raw_view(three)},
                           {"stats_head.weight", raw_view(three)}, {"stats_head.bias", raw_view(one)}});
  const std::string e = load_error(bare);
  EXPECT_NE(e.find("statistics head (gad's variant for the lite backbone) cannot score with"), std::string::npos) << e;
  EXPECT_NE(e.find(bare), std::string::npos) << e;
}

// `gad bench --dump-maps` writes what the heads see: one row per test image and draw, s_patch the
// max of the map, and with the statistics head s_hol is the inctrl score of scores.csv.
TEST(LiteHeads, BenchDumpsMapsAndScoresOfEveryRun) {
  const std::string dir = test::temp_dir("lite-heads-dump");
  BenchOptions o;
  o.files.model = test::shared("fixtures/lite/mobilenet_v2/model.json");
  o.files.heads = "lite";
  o.roots = {"examples/tiles"};
  o.ks = {2};
  o.draws = 2;
  o.methods = {"inctrl"};
  o.out_dir = dir;
  o.precision = "fp32";
  o.dump_maps = true;
  ASSERT_EQ(run_benchmark(o, nullptr), 1);
  const auto maps = test::python_csv_rows(dir + "/maps.csv");
  const auto scores = test::python_csv_rows(dir + "/scores.csv");
  ASSERT_EQ(maps.size(), scores.size());  // both with a header row
  ASSERT_GT(maps.size(), 2u);
  ASSERT_EQ(maps[0].size(), 15u + 196u);
  EXPECT_EQ(maps[0][9], "g_mean");
  EXPECT_EQ(maps[0][14], "ref_gnn");
  EXPECT_EQ(maps[0][15], "m0");
  std::map<std::string, double> inctrl;  // by K, draw and image (maps.csv is written batch by batch)
  for (size_t i = 1; i < scores.size(); ++i) inctrl[scores[i][3] + "," + scores[i][4] + "," + scores[i][5]] = std::stod(scores[i][7]);
  for (size_t i = 1; i < maps.size(); ++i) {
    double top = -1;
    for (size_t j = 15; j < maps[i].size(); ++j) top = std::max(top, std::stod(maps[i][j]));
    EXPECT_NEAR(std::stod(maps[i][6]), top, 1e-5) << "s_patch is the max of M, row " << i;
    for (size_t j = 9; j < 15; ++j) {  // residuals ½(1 − cos) of global features and the references' own
      const double v = std::stod(maps[i][j]);
      EXPECT_TRUE(v >= 0 && v <= 1) << maps[0][j] << " = " << v << ", row " << i;
    }
    EXPECT_TRUE(maps[i][7].empty()) << "the statistics head has no s_img";
    const auto it = inctrl.find(maps[i][2] + "," + maps[i][3] + "," + maps[i][4]);
    ASSERT_NE(it, inctrl.end()) << maps[i][4];
    EXPECT_NEAR(std::stod(maps[i][8]), it->second, 1e-8) << "final = s_hol, " << maps[i][4];
  }
}

struct Cell {
  std::string path;
  int label;
};

std::vector<Cell> elpv_sample() {
  std::ifstream in(test::shared("data/elpv_sample/labels.csv"));
  std::string line;
  std::getline(in, line);
  std::vector<Cell> cells;
  while (std::getline(in, line))
    cells.push_back({test::shared("data/elpv_sample/" + line.substr(0, line.find(','))), line.back() == '1' ? 1 : 0});
  return cells;
}

// Measured with the shipped file: mean image AUROC over K = 2, 4, 8 and 3 draws (175 queries,
// 25 reference candidates), heads 0.8909 vs s_patch 0.8562 (+0.035; every one of the 9 runs
// gains, by 0.018 to 0.068). The bound is "at least as well" (heads ≥ s_patch) on the mean, a
// margin of 0.035 below the measured gain, so a refit on re-obtained data that moves the weights
// a little still passes while a head that stops helping does not.
TEST(LiteHeads, ShippedHeadsScoreAtLeastAsWellAsThePatchResidualOnHeldOutElpv) {
  LoadedModel model = load_model({test::shared("fixtures/lite/mobilenet_v2/model.json"), "", "lite", {}});
  ASSERT_TRUE(model.heads && model.heads->stats) << "the shipped lite heads are the statistics head";
  const Backbone& bb = *model.backbone;
  const std::vector<Cell> cells = elpv_sample();
  ASSERT_EQ(cells.size(), 200u);
  // Every 4th normal is a reference candidate (25); the other 175 cells are queries.
  std::vector<int64_t> candidates, queries;
  std::vector<int> labels;
  for (size_t i = 0, normals = 0; i < cells.size(); ++i)
    if (cells[i].label == 0 && normals++ % 4 == 0) {
      candidates.push_back(static_cast<int64_t>(i));
    } else {
      queries.push_back(static_cast<int64_t>(i));
      labels.push_back(cells[i].label);
    }
  at::NoGradGuard no_grad;
  std::vector<PixelTensor> px;
  for (const auto& c : cells) px.push_back(bb.preprocess(decode_image(c.path)));
  std::vector<Features> encoded;  // in batches of 25
  for (size_t s = 0; s < px.size(); s += 25) encoded.push_back(bb.encode(stack_pixels({px.begin() + s, px.begin() + s + 25})));
  auto rows = [&](const std::vector<int64_t>& idx) {
    Features f;
    std::vector<at::Tensor> g, t;
    for (int64_t i : idx) {
      g.push_back(encoded[i / 25].global.slice(0, i % 25, i % 25 + 1));
      t.push_back(encoded[i / 25].taps[0].slice(0, i % 25, i % 25 + 1));
    }
    f.global = at::cat(g);
    f.taps = {at::cat(t)};
    f.grid_h = encoded[0].grid_h;
    f.grid_w = encoded[0].grid_w;
    return f;
  };
  ASSERT_EQ(encoded[0].taps.size(), 1u);
  const Features q = rows(queries);
  const InctrlScorer scorer(bb, model.heads);
  double heads_sum = 0, patch_sum = 0;
  int runs = 0;
  for (int k : {2, 4, 8})
    for (uint64_t draw = 0; draw < 3; ++draw) {
      std::vector<int64_t> refs;
      std::mt19937_64 rng(100 + draw);
      for (size_t j : draw_indices(candidates.size(), static_cast<size_t>(k), rng))
        refs.push_back(candidates[j]);
      Features rf = rows(refs);
      rf.taps[0] = rf.taps[0].reshape({1, -1, rf.taps[0].size(-1)});  // one bank of every reference patch
      const InctrlScores s = scorer.score(ReferenceSet::from_features(bb, rf, {}, {}, "elpv"), q);
      auto vec = [](const at::Tensor& t) {
        at::Tensor d = t.to(at::kDouble).contiguous();
        return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
      };
      const double heads = roc_auc(labels, vec(s.final_score)), patch = roc_auc(labels, vec(s.s_patch));
      std::printf("ELPV sample, K = %d, draw %d: AUROC heads %.4f, s_patch %.4f\n", k, static_cast<int>(draw), heads, patch);
      heads_sum += heads;
      patch_sum += patch;
      ++runs;
    }
  const double heads = heads_sum / runs, patch = patch_sum / runs;
  std::printf("mean over K = 2, 4, 8 and 3 draws: heads %.4f, s_patch %.4f (%+.4f)\n", heads, patch, heads - patch);
  EXPECT_GE(heads, patch) << "the shipped heads fell below the untrained patch residual";
}

// The statistics head has s_hol but no image-level head: results say so (no "s_img": 0), and a
// holistic map, which it does not have, is refused in one line before anything is written.
TEST(LiteHeads, ResultsCarryOnlyTheSubScoresTheHeadHas) {
  const std::string model = test::shared("fixtures/lite/mobilenet_v2/model.json");
  const std::string args = "score --model " + test::shell_quote(model) +
                           " --heads lite --precision fp32 --ref-images examples/tiles/train/good --class tile "
                           "examples/tiles/test/defect/000_scratch.png";
  const auto r = test::run_cli(args);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out.substr(0, r.out.find('\n')));
  EXPECT_TRUE(j.contains("s_hol")) << r.out;
  EXPECT_FALSE(j.contains("s_img")) << r.out;
  const std::string dir = test::temp_dir("stats-head-maps");
  const auto m = test::run_cli(args + " --maps " + test::shell_quote(dir) + " --map-kind holistic");
  EXPECT_NE(m.status, 0);
  EXPECT_NE(m.err.find("no holistic map"), std::string::npos) << m.err;
  EXPECT_EQ(m.out, "") << "partial output";
}

}  // namespace
}  // namespace gad
