// gad_bench — honest numbers for the CLIP, DINOv2 (AnomalyDINO) and lite paths: cold start, image-tower and per-query
// times in fp32 and bf16, the reference code's "uncached" per-query cost, `gad train` step time,
// and peak RSS. Random CLIP weights (speed does not depend on values). Prints Markdown: a line
// naming the machine and the software, then one table per model with, per row, the number of
// timed runs, their mean ± sample standard deviation and their minimum.
//
//   gad_bench [--config ViT-B-16-plus-240] [--threads 2] [--reps 3] [--k 8] [--keep-model FILE]
//             [--lite FILE] [--models clip,dinov2,lite]
// --keep-model leaves the random-weight model file behind (e.g. to measure `gad score` RSS).
// The lite rows use the installed default lite model (or --lite FILE) and are skipped without it.
//
// Peak RSS belongs to one model: the scoring rows and the training rows of each model run in a
// fresh child process each, and the parent reads that child's peak from wait4(). The parent
// itself never starts torch (so forking is safe); the random model is written by a child too.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/csrc/api/include/torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "clip/clip_backbone.h"
#include "dino/dino_backbone.h"
#include "inctrl/heads.h"
#include "scorers/reference_set.h"
#include "inctrl/scorer.h"
#include "io/safetensors.h"
#include "lite/fetch.h"
#include "dino/anomalydino.h"
#include "engine/load_model.h"
#include "backbone/precision.h"
#include "model/runtime.h"
#include "train/episode.h"
#include "util/allocator.h"

// OpenBLAS runs torch's fp32 GEMMs here; weak, so the bench still links against another BLAS.
extern "C" char* openblas_get_config() __attribute__((weak));

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<gad::PixelTensor> random_images(int n, int size, uint64_t seed) {
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<gad::PixelTensor> out(n);
  for (auto& p : out) {
    p.height = p.width = size;
    at::Tensor t = at::randn({3, size, size}, g);
    p.chw.assign(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  }
  return out;
}

struct Timing {
  int runs = 0;
  double mean = 0, sd = 0, min = 0;  // seconds
};

// Times `runs` calls of fn(); sd is the sample standard deviation (0 for one run).
template <typename Fn>
Timing time_runs(int runs, Fn&& fn) {
  std::vector<double> s;
  for (int r = 0; r < runs; ++r) {
    auto t0 = Clock::now();
    fn();
    s.push_back(seconds_since(t0));
  }
  Timing t{runs, 0, 0, *std::min_element(s.begin(), s.end())};
  for (double v : s) t.mean += v / runs;
  for (double v : s) t.sd += runs > 1 ? (v - t.mean) * (v - t.mean) / (runs - 1) : 0;
  t.sd = std::sqrt(t.sd);
  return t;
}

// One table row; times are divided by `per` (images in the batch, or steps in a run) and shown in ms.
void row(const std::string& what, const char* precision, int batch, const Timing& t, double per = 1) {
  char spread[48];
  if (t.runs > 1) std::snprintf(spread, sizeof spread, "%.1f ± %.1f", t.mean * 1e3 / per, t.sd * 1e3 / per);
  else std::snprintf(spread, sizeof spread, "%.1f", t.mean * 1e3 / per);
  const int width = t.runs > 1 ? 20 : 19;  // "±" is two bytes
  std::printf("| %-46s | %-4s | %5d | %4d | %*s | %9.1f |\n", what.c_str(), precision, batch, t.runs, width, spread,
              t.min * 1e3 / per);
  std::fflush(stdout);
}

void table_header(const std::string& title) {
  std::printf("\n%s\n\n", title.c_str());
  std::printf("| %-46s | %-4s | %5s | %4s | %20s | %9s |\n", "what", "prec", "batch", "runs", "ms mean ± sd", "ms min");
  std::printf("|%s|------|-------|------|---------------------|-----------|\n", std::string(48, '-').c_str());
}

// Writes a random-weight CLIP+InCTRL model of `config` to `path`.
void write_random_model(const gad::ClipConfig& cfg, const std::string& path) {
  gad::Weights w = gad::Weights::synthetic(1);
  gad::ClipBackbone build(cfg, w);
  gad::InctrlHeads::load(w, build.embed_dim(), build.num_patches());
  gad::RawTensorList list;
  for (const auto& [name, t] : w.all()) list.emplace_back(name, gad::raw_view(t));
  gad::write_safetensors(path, list);
}

struct BenchSetup {
  int reps, k, image_size;
  std::string class_name;
};

// Rows for one loaded model: reference-set build, tower and cached query at batch 1 and 8, and
// the reference code's uncached query, for each precision the backbone supports.
void bench_model(gad::LoadedModel& m, const BenchSetup& b) {
  auto refs_px = random_images(b.k, b.image_size, 2);
  auto queries = random_images(8, b.image_size, 3);
  gad::InctrlScorer scorer(*m.backbone, m.heads);
  const char* uncached_what = m.backbone->has_text() ? "uncached query (text + references re-encoded)"
                                                     : "uncached query (references re-encoded)";
  for (gad::Precision p : {gad::Precision::FP32, gad::Precision::BF16}) {
    m.backbone->set_precision(p);
    if (m.backbone->precision() != p) continue;  // the lite CNN runs fp32 only
    const char* pn = gad::precision_name(p);
    gad::ReferenceSet set;
    Timing build = time_runs(b.reps, [&] { set = gad::ReferenceSet::build(*m.backbone, refs_px, {}, b.class_name); });
    row(m.backbone->has_text() ? "reference-set build (K images + 242 sentences)" : "reference-set build (K images)", pn,
        b.k, build);
    for (int batch : {1, 8}) {
      std::vector<gad::PixelTensor> q(queries.begin(), queries.begin() + batch);
      at::Tensor px = gad::stack_pixels(q);
      row("image tower", pn, batch, time_runs(b.reps, [&] { m.backbone->encode(px); }), batch);
      row("cached-reference query (tower + scoring)", pn, batch,
          time_runs(b.reps, [&] { scorer.score(set, m.backbone->encode(px)); }), batch);
    }
    row(uncached_what, pn, 1, time_runs(b.reps, [&] {
          gad::ReferenceSet fresh = gad::ReferenceSet::build(*m.backbone, refs_px, {}, b.class_name);
          scorer.score(fresh, m.backbone->encode(gad::stack_pixels({queries[0]})));
        }));
  }
}

// One `gad train` step as the trainer runs it (on one thread, see trainer.h): episode residuals
// from cached features, adapter + heads forward/backward, AdamW. Features are random, shaped like
// the backbone's (from one encode), 64 cached images, batch 16, K prompts per query. A run is 20
// steps; the row shows time per step.
void bench_training(const gad::Backbone& b, int image_size, int reps, int k) {
  at::AutoGradMode grad(true);
  gad::Features probe = b.encode(gad::stack_pixels(random_images(1, image_size, 5)));
  const int64_t n = 64, batch = 16;
  at::Tensor globals = at::randn({n, b.embed_dim()});
  std::vector<at::Tensor> taps;
  for (const auto& t : probe.taps) taps.push_back(at::randn({n, t.size(1), t.size(2)}).to(at::kHalf));
  at::Tensor priors = b.has_text() ? at::randn({1, 2, b.embed_dim()}) : at::Tensor();
  gad::InctrlHeads heads = gad::InctrlHeads::init(b.embed_dim(), b.num_patches(), 1);
  auto params = heads.parameters();
  for (auto& p : params) p.requires_grad_(true);
  gad::AdamW opt;
  std::vector<int64_t> queries, prompts, category(batch, 0);
  std::vector<float> labels;
  for (int64_t i = 0; i < batch; ++i) {
    queries.push_back(i);
    labels.push_back(i < batch / 2 ? 0.f : 1.f);
    for (int j = 0; j < k; ++j) prompts.push_back(batch + (i * k + j) % (n - batch));
  }
  const int steps = 20;
  const int workers = at::get_num_threads();
  gad::ScopedThreads one(1);
  Timing t = time_runs(reps, [&] {
    for (int i = 0; i < steps; ++i) {
      gad::EpisodeBatch e = gad::make_episode(taps, globals, priors, queries, prompts, category, labels, b.grid(), workers);
      gad::inctrl_loss(gad::forward_episode(heads, e, true), e.labels, gad::LossKind::Focal).backward();
      opt.update(params);
    }
  });
  char what[96];
  std::snprintf(what, sizeof what, "train step (batch 16, K=%d; x1000 = %.0f s)", k, t.mean / steps * 1000);
  row(what, "fp32", 16, t, steps);
}

// A random-weight DINOv2 ViT-S/14 (the real shapes: embed 384, 12 blocks, 6 heads, MLP 1536,
// 37 x 37 position grid), built in memory.
std::unique_ptr<gad::DinoBackbone> random_dino(int resolution) {
  gad::Weights w("<random DINOv2 ViT-S/14>");
  const int64_t D = 384, H = 1536;
  auto rnd = [](at::IntArrayRef s) { return at::normal(0.0, 0.02, s); };
  w.insert("cls_token", rnd({1, 1, D}));
  w.insert("pos_embed", rnd({1, 1 + 37 * 37, D}));
  w.insert("mask_token", rnd({1, D}));
  w.insert("patch_embed.proj.weight", rnd({D, 3, 14, 14}));
  w.insert("patch_embed.proj.bias", rnd({D}));
  for (int i = 0; i < 12; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    for (const char* n : {"norm1", "norm2"}) {
      w.insert(p + n + ".weight", at::ones({D}));
      w.insert(p + n + ".bias", at::zeros({D}));
    }
    w.insert(p + "attn.qkv.weight", rnd({3 * D, D}));
    w.insert(p + "attn.qkv.bias", rnd({3 * D}));
    w.insert(p + "attn.proj.weight", rnd({D, D}));
    w.insert(p + "attn.proj.bias", rnd({D}));
    w.insert(p + "mlp.fc1.weight", rnd({H, D}));
    w.insert(p + "mlp.fc1.bias", rnd({H}));
    w.insert(p + "mlp.fc2.weight", rnd({D, H}));
    w.insert(p + "mlp.fc2.bias", rnd({D}));
    w.insert(p + "ls1.gamma", at::ones({D}));
    w.insert(p + "ls2.gamma", at::ones({D}));
  }
  w.insert("norm.weight", at::ones({D}));
  w.insert("norm.bias", at::zeros({D}));
  return std::make_unique<gad::DinoBackbone>(gad::dino_config(w, ""), w, resolution);
}

// AnomalyDINO on ViT-S/14 at `size` x `size` (grid size/14 squared): the tower at batch 1 and 8,
// one query (tower + 1-NN search + mean top 1 %) against K references, and the search alone, for
// K = 1, 8, 64. The bank of K references is random (search time does not depend on the values).
void bench_dino(int size, int reps) {
  auto dino = random_dino(size);
  auto images = random_images(8, size, 7);
  for (gad::Precision p : {gad::Precision::FP32, gad::Precision::BF16}) {
    dino->set_precision(p);
    if (dino->precision() != p) continue;
    const char* pn = gad::precision_name(p);
    for (int batch : {1, 8}) {
      at::Tensor px = gad::stack_pixels({images.begin(), images.begin() + batch});
      row("image tower", pn, batch, time_runs(reps, [&] { dino->encode(px); }), batch);
    }
    const at::Tensor one = gad::stack_pixels({images[0]});
    const gad::Features q = dino->encode(one);
    for (int k : {1, 8, 64}) {
      gad::Features refs{at::randn({k, 384}), {at::randn({1, k * q.taps[0].size(1), 384})}, 0, 0};
      const gad::ReferenceSet set = gad::ReferenceSet::from_features(*dino, refs, {}, {}, "");
      char what[96];
      std::snprintf(what, sizeof what, "query, K = %d (%lld bank patches)", k, static_cast<long long>(set.banks[0].size(0)));
      row(what, pn, 1, time_runs(reps, [&] { gad::mean_top1p(gad::anomalydino_distances(*dino, set, dino->encode(one))); }));
      std::snprintf(what, sizeof what, "  search + score only, K = %d", k);
      row(what, pn, 1, time_runs(reps, [&] { gad::mean_top1p(gad::anomalydino_distances(*dino, set, q)); }));
    }
  }
}

struct Args {
  std::string config = "ViT-B-16-plus-240", keep_model, lite;
  std::string models = "clip,dinov2,lite";  // which tables to run
  int threads = 2, reps = 3, k = 8;
  bool wants(const std::string& model) const { return ("," + models + ",").find("," + model + ",") != std::string::npos; }
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr,
               "gad_bench: %s (usage: gad_bench [--config NAME|FILE] [--threads N] [--reps N] [--k N] "
               "[--keep-model FILE] [--lite FILE])\n",
               message.c_str());
  std::exit(2);
}

int positive_int(const std::string& option, const std::string& value) {
  char* end = nullptr;
  const long v = std::strtol(value.c_str(), &end, 10);
  if (value.empty() || *end != '\0' || v < 1 || v > 1 << 20) usage_error(option + ": expected a positive integer, got '" + value + "'");
  return static_cast<int>(v);
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; i += 2) {
    const std::string opt = argv[i];
    const bool known = opt == "--config" || opt == "--threads" || opt == "--reps" || opt == "--k" ||
                       opt == "--keep-model" || opt == "--lite" || opt == "--models";
    if (!known) usage_error("unknown argument '" + opt + "'");
    if (i + 1 >= argc) usage_error(opt + ": missing value");
    const std::string v = argv[i + 1];
    if (opt == "--config") a.config = v;
    else if (opt == "--threads") a.threads = positive_int(opt, v);
    else if (opt == "--reps") a.reps = positive_int(opt, v);
    else if (opt == "--k") a.k = positive_int(opt, v);
    else if (opt == "--keep-model") a.keep_model = v;
    else if (opt == "--models") a.models = v;
    else a.lite = v;
  }
  return a;
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0 && line.find(':') != std::string::npos) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

double rss_mb(long max_rss_kb) { return max_rss_kb / 1024.0; }

// Runs `fn` in a fresh child process; returns its peak RSS in MB, or fails the bench when it fails.
double in_child(const char* what, const std::function<void()>& fn) {
  std::fflush(stdout);
  const pid_t child = fork();
  if (child == 0) {
    int rc = 0;
    try {
      fn();
    } catch (const std::exception& e) {
      const std::string message = e.what();
      std::fprintf(stderr, "gad_bench: %s: %s\n", what, message.substr(0, message.find('\n')).c_str());
      rc = 1;
    }
    std::fflush(stdout);
    _exit(rc);
  }
  int status = 0;
  rusage usage{};
  if (child < 0 || wait4(child, &status, 0, &usage) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "gad_bench: %s failed\n", what);
    std::exit(1);
  }
  return rss_mb(usage.ru_maxrss);
}

// Each section's child: threads set, no autograd unless a row asks for it.
gad::LoadedModel load_timed(const gad::ModelOptions& files, const char* what, int threads, bool to_bf16) {
  gad::configure_threads(threads);
  auto t0 = Clock::now();
  gad::LoadedModel m = gad::load_model(files);
  row(what, "fp32", 0, {1, seconds_since(t0), 0, seconds_since(t0)});
  if (to_bf16) {
    t0 = Clock::now();
    m.backbone->set_precision(gad::Precision::BF16);
    const double s = seconds_since(t0);
    row("  + convert weights to bf16 (once)", "bf16", 0, {1, s, 0, s});
  }
  return m;
}

void print_rss(double scoring_mb, double training_mb) {
  std::printf("\npeak RSS: %.0f MB loading and scoring, %.0f MB in the training rows (each a fresh process)\n",
              scoring_mb, training_mb);
}

}  // namespace

int main(int argc, char** argv) {
  gad::tune_allocator();
  const Args a = parse_args(argc, argv);
  gad::ClipConfig cfg;
  try {
    cfg = gad::load_clip_config(a.config);
  } catch (const std::exception& e) {
    usage_error(std::string("--config: ") + e.what());
  }
  const std::string path = a.keep_model.empty()
                               ? (std::filesystem::temp_directory_path() / "gad-bench-model.safetensors").string()
                               : a.keep_model;
  std::string lite = a.lite.empty() ? gad::lite_model_path(gad::default_models_dir()) : a.lite;
  if (!a.lite.empty() && !std::filesystem::exists(lite)) usage_error("--lite: no such file '" + lite + "'");

  rusage self{};
  getrusage(RUSAGE_SELF, &self);
  std::printf("gad_bench: %s; %d thread(s); fp32 rows and, where the model has them, bf16 rows (this CPU: %s bf16); "
              "LibTorch %s, %s, oneDNN %s; gad %s, git %s (at configure time)\n",
              cpu_model().c_str(), a.threads, gad::cpu_has_fast_bf16() ? "native" : "no native", TORCH_VERSION,
              openblas_get_config ? openblas_get_config() : "BLAS: not OpenBLAS", at::get_mkldnn_version().c_str(),
              GAD_VERSION, GAD_GIT_REVISION);
  std::printf("K = %d; %d timed run(s) per row, except the cold start and the bf16 conversion, which happen once; "
              "ms per image (batch rows) or per step (training rows); peak RSS includes %.0f MB of loaded libraries\n",
              a.k, a.reps, rss_mb(self.ru_maxrss));

  if (a.wants("clip")) {
  in_child("writing the random model", [&] { write_random_model(cfg, path); });
  table_header(a.config + ", random weights");
  const double clip_scoring = in_child("CLIP scoring rows", [&] {
    at::NoGradGuard no_grad;
    gad::LoadedModel m = load_timed({path, a.config, ""}, "cold start: load + build model (mmap)", a.threads, true);
    bench_model(m, {a.reps, a.k, cfg.vision.image_size, "metal_nut"});
  });
  const double clip_training = in_child("CLIP training rows", [&] {
    gad::configure_threads(a.threads);
    at::NoGradGuard no_grad;
    gad::LoadedModel m = gad::load_model({path, a.config, ""});
    bench_training(*m.backbone, cfg.vision.image_size, a.reps, 2);
  });
  print_rss(clip_scoring, clip_training);
  if (a.keep_model.empty()) std::filesystem::remove(path);
  }

  if (a.wants("dinov2")) {
  table_header("DINOv2 ViT-S/14 + AnomalyDINO, random weights, 448 x 448 input (grid 32 x 32)");
  const double dino_scoring = in_child("DINOv2 rows", [&] {
    gad::configure_threads(a.threads);
    at::NoGradGuard no_grad;
    bench_dino(448, a.reps);
  });
  std::printf("\npeak RSS: %.0f MB (DINOv2 rows, a fresh process)\n", dino_scoring);
  }
  if (!a.wants("lite")) return 0;

  if (!std::filesystem::exists(lite)) {
    std::printf("\nlite: %s not installed (gad models fetch lite); skipped\n", lite.c_str());
    return 0;
  }
  table_header("lite MobileNetV2 (" + lite + ")");
  const double lite_scoring = in_child("lite scoring rows", [&] {
    at::NoGradGuard no_grad;
    gad::LoadedModel m = load_timed({lite, "", ""}, "cold start: load + build model", a.threads, false);
    bench_model(m, {a.reps, a.k, 224, "tile"});
  });
  const double lite_training = in_child("lite training rows", [&] {
    gad::configure_threads(a.threads);
    at::NoGradGuard no_grad;
    gad::LoadedModel m = gad::load_model({lite, "", ""});
    for (int train_k : {2, 4, 8}) bench_training(*m.backbone, 224, a.reps, train_k);
  });
  print_rss(lite_scoring, lite_training);
  return 0;
}
