// gad_bench — honest numbers for the CLIP path: cold start, image-tower and per-query times in
// fp32 and bf16, the reference code's "uncached" per-query cost, `gad train` step time, and peak RSS. Random weights
// (speed does not depend on values). Prints one Markdown table.
//
//   gad_bench [--config ViT-B-16-plus-240] [--threads 2] [--reps 3] [--k 8] [--keep-model FILE]
//             [--lite FILE]
// --keep-model leaves the random-weight model file behind (e.g. to measure `gad score` RSS).
// The lite rows use the installed default lite model (or --lite FILE) and are skipped without it.
// The random model is written by a child process, so peak RSS is that of loading and scoring.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "clip/clip_backbone.h"
#include "inctrl/heads.h"
#include "inctrl/reference_set.h"
#include "inctrl/scorer.h"
#include "io/safetensors.h"
#include "lite/fetch.h"
#include "model/load_model.h"
#include "model/runtime.h"
#include "train/episode.h"
#include "util/allocator.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

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

// Best of `reps` timings of fn(), in seconds.
template <typename Fn>
double best_of(int reps, Fn&& fn) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    fn();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

void row(const char* what, const char* precision, int batch, double ms) {
  std::printf("| %-46s | %-4s | %5d | %11.1f |\n", what, precision, batch, ms);
}

// Writes a random-weight CLIP+InCTRL model of `config` to `path`.
void write_random_model(const gad::ClipConfig& cfg, const std::string& path) {
  gad::Weights w = gad::Weights::synthetic(1);
  gad::ClipBackbone build(cfg, w);
  gad::InctrlHeads::load(w, build.embed_dim(), build.num_patches());
  gad::RawTensorList list;
  for (const auto& [name, t] : w.all()) {
    gad::RawTensor r;
    r.dtype = t.scalar_type() == at::kLong ? gad::DType::I64 : gad::DType::F32;
    r.shape.assign(t.sizes().begin(), t.sizes().end());
    r.data = static_cast<const uint8_t*>(t.data_ptr());
    r.nbytes = t.nbytes();
    list.emplace_back(name, r);
  }
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
    double build = best_of(1, [&] { set = gad::ReferenceSet::build(*m.backbone, refs_px, {}, b.class_name); });
    row(m.backbone->has_text() ? "reference-set build (K images + 242 sentences)" : "reference-set build (K images)", pn,
        b.k, build * 1e3);
    for (int batch : {1, 8}) {
      std::vector<gad::PixelTensor> q(queries.begin(), queries.begin() + batch);
      at::Tensor px = gad::stack_pixels(q);
      double tower = best_of(b.reps, [&] { m.backbone->encode(px); });
      row("image tower", pn, batch, tower * 1e3 / batch);
      double query = best_of(b.reps, [&] { scorer.score(set, m.backbone->encode(px)); });
      row("cached-reference query (tower + scoring)", pn, batch, query * 1e3 / batch);
    }
    double uncached = best_of(1, [&] {
      gad::ReferenceSet fresh = gad::ReferenceSet::build(*m.backbone, refs_px, {}, b.class_name);
      scorer.score(fresh, m.backbone->encode(gad::stack_pixels({queries[0]})));
    });
    row(uncached_what, pn, 1, uncached * 1e3);
  }
}

// One `gad train` step as the trainer runs it (on one thread, see trainer.h): episode residuals
// from cached features, adapter + heads forward/backward, AdamW. Features are random, shaped like
// the backbone's (from one encode), 64 cached images, batch 16, K prompts per query.
void bench_training(const gad::Backbone& b, int reps, int k) {
  at::AutoGradMode grad(true);
  gad::Features probe = b.encode(gad::stack_pixels(random_images(1, b.kind() == "lite" ? 224 : 240, 5)));
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
  double s = best_of(reps, [&] {
    for (int i = 0; i < steps; ++i) {
      gad::EpisodeBatch e = gad::make_episode(taps, globals, priors, queries, prompts, category, labels, b.grid(), workers);
      gad::inctrl_loss(gad::forward_episode(heads, e, true), e.labels, gad::LossKind::Focal).backward();
      opt.update(params);
    }
  });
  char what[96];
  std::snprintf(what, sizeof what, "train step (batch 16, K=%d; x1000 = %.0f s)", k, s / steps * 1000);
  row(what, "fp32", 16, s / steps * 1e3);
}

void header(const std::string& title) {
  std::printf("\n%s\n\n", title.c_str());
  std::printf("| %-46s | %-4s | %5s | %11s |\n", "what", "prec", "batch", "ms (/image)");
  std::printf("|%s|%s|%s|%s|\n", std::string(48, '-').c_str(), "------", "-------", "-------------");
}

}  // namespace

int main(int argc, char** argv) {
  gad::tune_allocator();
  std::string config = "ViT-B-16-plus-240", keep_model, lite;
  int threads = 2, reps = 3, k = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--config") config = argv[i + 1];
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--k") k = std::atoi(argv[i + 1]);
    else if (a == "--keep-model") keep_model = argv[i + 1];
    else if (a == "--lite") lite = argv[i + 1];
  }
  gad::ClipConfig cfg = gad::load_clip_config(config);
  std::string path = keep_model.empty()
                         ? (std::filesystem::temp_directory_path() / "gad-bench-model.safetensors").string()
                         : keep_model;
  // Before any torch thread pool exists, so the fork is safe.
  pid_t child = fork();
  if (child == 0) {
    write_random_model(cfg, path);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "gad_bench: could not write the random model to %s\n", path.c_str());
    return 1;
  }

  gad::configure_threads(threads);
  at::NoGradGuard no_grad;
  std::printf("gad_bench: %d thread(s), K = %d, best of %d\n", threads, k, reps);

  header(config + ", random weights");
  auto t0 = Clock::now();
  gad::LoadedModel m = gad::load_model({path, config, ""});
  row("cold start: load + build model (mmap)", "fp32", 0, seconds_since(t0) * 1e3);
  t0 = Clock::now();
  m.backbone->set_precision(gad::Precision::BF16);
  row("  + convert weights to bf16 (once)", "bf16", 0, seconds_since(t0) * 1e3);
  bench_model(m, {reps, k, cfg.vision.image_size, "metal_nut"});
  bench_training(*m.backbone, reps, 2);
  std::printf("\npeak RSS so far: %.0f MB\n", peak_rss_mb());
  if (keep_model.empty()) std::filesystem::remove(path);

  if (lite.empty()) lite = gad::lite_model_path(gad::default_models_dir());
  if (!std::filesystem::exists(lite)) {
    std::printf("\nlite: %s not installed (gad models fetch lite); skipped\n", lite.c_str());
    return 0;
  }
  header("lite MobileNetV2 (" + lite + ")");
  t0 = Clock::now();
  gad::LoadedModel l = gad::load_model({lite, "", ""});
  row("cold start: load + build model", "fp32", 0, seconds_since(t0) * 1e3);
  bench_model(l, {reps, k, 224, "tile"});
  for (int train_k : {2, 4, 8}) bench_training(*l.backbone, reps, train_k);
  std::printf("\npeak RSS: %.0f MB\n", peak_rss_mb());
  return 0;
}
