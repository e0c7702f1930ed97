// gad_bench — honest numbers for the CLIP path: cold start, image-tower and per-query times in
// fp32 and bf16, the reference code's "uncached" per-query cost, and peak RSS. Random weights
// (speed does not depend on values). Prints one Markdown table.
//
//   gad_bench [--config ViT-B-16-plus-240] [--threads 2] [--reps 3] [--k 8] [--keep-model FILE]
// --keep-model leaves the random-weight model file behind (e.g. to measure `gad score` RSS).
#include <sys/resource.h>

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
#include "model/load_model.h"

extern "C" void openblas_set_num_threads(int) __attribute__((weak));

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
  std::printf("| %-44s | %-4s | %5d | %10.1f |\n", what, precision, batch, ms);
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = "ViT-B-16-plus-240";
  int threads = 2, reps = 3, k = 8;
  std::string keep_model;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--config") config = argv[i + 1];
    else if (a == "--threads") threads = std::atoi(argv[i + 1]);
    else if (a == "--reps") reps = std::atoi(argv[i + 1]);
    else if (a == "--k") k = std::atoi(argv[i + 1]);
    else if (a == "--keep-model") keep_model = argv[i + 1];
  }
  at::set_num_threads(threads);
  if (openblas_set_num_threads) openblas_set_num_threads(threads);
  at::NoGradGuard no_grad;

  // A random-weight model saved to disk, so cold start measures the real load path.
  gad::ClipConfig cfg = gad::load_clip_config(config);
  std::string path = keep_model.empty()
                         ? (std::filesystem::temp_directory_path() / "gad-bench-model.safetensors").string()
                         : keep_model;
  {
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
  std::printf("gad_bench: %s, random weights, %d thread(s), K = %d, best of %d\n\n", config.c_str(), threads, k, reps);
  std::printf("| %-44s | %-4s | %5s | %10s |\n", "what", "prec", "batch", "ms (/image)");
  std::printf("|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), "------", "-------", "------------");

  auto t0 = Clock::now();
  gad::LoadedModel m = gad::load_model({path, config, ""});
  double cold_fp32 = seconds_since(t0);
  row("cold start: load + build model (mmap)", "fp32", 0, cold_fp32 * 1e3);
  t0 = Clock::now();
  m.backbone->set_precision(gad::Precision::BF16);
  row("  + convert weights to bf16 (once)", "bf16", 0, seconds_since(t0) * 1e3);

  const int size = cfg.vision.image_size;
  auto refs_px = random_images(k, size, 2);
  auto queries = random_images(8, size, 3);
  gad::InctrlScorer scorer(*m.backbone, m.heads);
  for (gad::Precision p : {gad::Precision::FP32, gad::Precision::BF16}) {
    m.backbone->set_precision(p);
    const char* pn = gad::precision_name(p);
    gad::ReferenceSet set;
    double build = best_of(1, [&] { set = gad::ReferenceSet::build(*m.backbone, refs_px, {}, "metal_nut"); });
    row("reference-set build (K images + 242 sentences)", pn, k, build * 1e3);
    for (int batch : {1, 8}) {
      std::vector<gad::PixelTensor> q(queries.begin(), queries.begin() + batch);
      at::Tensor px = gad::stack_pixels(q);
      double tower = best_of(reps, [&] { m.backbone->encode(px); });
      row("image tower", pn, batch, tower * 1e3 / batch);
      double query = best_of(reps, [&] { scorer.score(set, m.backbone->encode(px)); });
      row("cached-reference query (tower + scoring)", pn, batch, query * 1e3 / batch);
    }
    // What the reference code does per query: re-encode the text prompts and the K references.
    double uncached = best_of(1, [&] {
      gad::ReferenceSet fresh = gad::ReferenceSet::build(*m.backbone, refs_px, {}, "metal_nut");
      scorer.score(fresh, m.backbone->encode(gad::stack_pixels({queries[0]})));
    });
    row("uncached query (text + references re-encoded)", pn, 1, uncached * 1e3);
  }
  std::printf("\npeak RSS: %.0f MB\n", peak_rss_mb());
  if (keep_model.empty()) std::filesystem::remove(path);
  return 0;
}
