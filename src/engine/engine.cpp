#include "engine/engine.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include <unistd.h>

#include "image/image.h"
#include "inctrl/reference_set.h"
#include "inctrl/scorer.h"
#include "methods/anomalydino.h"
#include "io/safetensors.h"
#include "model/runtime.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {


double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

double scalar_at(const at::Tensor& t, int64_t i) { return t.defined() ? t[i].item<double>() : 0.0; }

std::vector<float> row(const at::Tensor& t, int64_t b) {
  at::Tensor r = t[b].to(at::kFloat).contiguous();
  return {r.data_ptr<float>(), r.data_ptr<float>() + r.numel()};
}

// Sample `b` of a scored InCTRL batch as a ScoreRecord (path, grid and geometry set by the caller).
ScoreRecord make_record(const InctrlScores& s, int64_t b) {
  ScoreRecord r;
  r.score = scalar_at(s.final_score, b);
  r.s_patch = scalar_at(s.s_patch, b);
  r.s_img = scalar_at(s.s_img, b);
  r.s_text = scalar_at(s.s_text, b);
  r.s_hol = scalar_at(s.s_hol, b);
  r.has_text = s.s_text.defined();
  r.has_heads = s.s_hol.defined();
  r.residual_map = row(s.residual_map, b);
  if (s.holistic_map.defined()) r.holistic_map = row(s.holistic_map, b);
  return r;
}

}  // namespace

struct RefHandle {
  ReferenceSet set;
};

namespace {

// A unique temporary path for the safetensors round trip of serialize/deserialize.
std::string temp_ref_path() {
  static std::atomic<uint64_t> counter{0};
  std::error_code ec;
  auto dir = std::filesystem::temp_directory_path(ec);
  if (ec) dir = "/tmp";
  return (dir / ("gad-ref-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
                 std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()) + ".gadref"))
      .string();
}

struct RemoveOnExit {
  std::string path;
  ~RemoveOnExit() {
    std::error_code ec;
    std::filesystem::remove(path, ec);
  }
};

}  // namespace

struct Engine::Impl {
  LoadedModel model;
  std::unique_ptr<InctrlScorer> scorer;
  std::unique_ptr<ReferenceSet> refs;
  int threads = 0;
  std::string new_set_scorer;  // inctrl | anomalydino
  bool rotate = false, explicit_scorer = false;
  int64_t max_pixels = kDefaultMaxPixels;

  const Backbone& backbone() const { return *model.backbone; }
  PixelTensor load_pixels(const std::string& path) const { return backbone().preprocess(decode_image(path, max_pixels)); }

  const ReferenceSet& require_refs() const {
    if (!refs) fail("no reference set: give --refs FILE or --ref-images ... --class NAME");
    return *refs;
  }

  // The preprocessed views of one reference image: itself and, with rotate, its rotations by
  // 45, ..., 315 degrees (AnomalyDINO's augment_image).
  std::vector<PixelTensor> reference_views(const Image& image) const {
    std::vector<PixelTensor> views;
    for (int v = 0; v < (rotate ? kAnomalyDinoRotations : 1); ++v)
      views.push_back(backbone().preprocess(v ? rotate_image(image, 45.0 * v) : image));
    return views;
  }

  // A new set from the views of its references (reference_views of each, in order).
  ReferenceSet build_set_from_views(const std::vector<PixelTensor>& views, const std::vector<ReferenceSource>& sources,
                                    const std::string& class_name) const {
    if (views.empty()) fail("reference set: K must be at least 1 (no reference images given)");
    at::NoGradGuard no_grad;
    ReferenceSet set = ReferenceSet::build(backbone(), views, sources, class_name, new_set_scorer == "inctrl");
    set.scorer = new_set_scorer;
    set.views = rotate ? kAnomalyDinoRotations : 1;
    return set;
  }

  // Scores preprocessed queries with the set's scorer, in one forward pass (one per image when the
  // backbone's grid follows each image); `ms` is left for the caller.
  std::vector<ScoreRecord> score_batch(const ReferenceSet& set, const std::vector<PixelTensor>& pixels,
                                       const std::vector<std::string>& names) const {
    const Backbone& bb = backbone();
    std::vector<ScoreRecord> out;
    for (size_t start = 0; start < pixels.size();) {
      const size_t end = bb.grid() ? pixels.size() : start + 1;
      const Features f = bb.encode(stack_pixels({pixels.begin() + start, pixels.begin() + end}));
      if (set.scorer == "anomalydino") {
        const at::Tensor d = anomalydino_distances(bb, set, f), score = mean_top1p(d), top = std::get<0>(d.max(1));
        for (size_t i = start; i < end; ++i) {
          const auto b = static_cast<int64_t>(i - start);
          ScoreRecord r;
          r.score = score[b].item<double>();
          r.s_patch = top[b].item<double>();  // the largest patch distance
          r.residual_map = row(d, b);
          out.push_back(std::move(r));
        }
      } else {
        const InctrlScores s = scorer->score(set, f);
        for (size_t i = start; i < end; ++i) out.push_back(make_record(s, static_cast<int64_t>(i - start)));
      }
      for (size_t i = start; i < end; ++i) {
        out[i].path = i < names.size() ? names[i] : std::string();
        out[i].grid = static_cast<int>(f.grid_w);
        out[i].geometry = pixels[i].geometry;
        if (set.threshold) out[i].threshold = set.threshold->value;
      }
      start = end;
    }
    return out;
  }
};

Engine::Engine(const EngineOptions& options) : impl_(std::make_unique<Impl>()) {
  impl_->threads = configure_threads(options.threads);
  if (options.max_pixels < 1) fail("--max-pixels: must be at least 1 (got ", options.max_pixels, ")");
  impl_->max_pixels = options.max_pixels;
  Precision precision = parse_precision(options.precision);
  impl_->model = load_model(options.files);
  impl_->model.backbone->set_precision(precision);
  impl_->scorer = std::make_unique<InctrlScorer>(*impl_->model.backbone, impl_->model.heads);
  const bool dino = impl_->model.backbone->kind() == "dinov2";
  impl_->new_set_scorer = options.scorer == "auto" ? (dino ? "anomalydino" : "inctrl") : options.scorer;
  if (impl_->new_set_scorer != "inctrl" && impl_->new_set_scorer != "anomalydino")
    fail("--scorer: unknown scorer '", options.scorer, "' (inctrl, anomalydino or auto)");
  if (impl_->new_set_scorer == "anomalydino" && impl_->model.heads)
    fail("--scorer anomalydino: is training-free and uses no heads; drop --heads");
  impl_->rotate = options.rotate;
  if (options.rotate && impl_->new_set_scorer != "anomalydino") fail("--rotate: applies to --scorer anomalydino only");
  impl_->explicit_scorer = options.scorer != "auto";
}

Engine::~Engine() = default;

std::string Engine::describe() const {
  std::ostringstream o;
  o << impl_->model.backbone->description() << " (fingerprint " << impl_->model.backbone->fingerprint() << "); heads: "
    << (impl_->model.heads ? impl_->model.heads_source : "none (score = untrained patch residual)") << "; "
    << impl_->threads << " thread(s), " << precision_name(impl_->model.backbone->precision())
    << (impl_->model.backbone->precision() == Precision::BF16 ? " (CPU has AVX512-BF16/AMX)" : "");
  return o.str();
}

bool Engine::has_heads() const { return impl_->model.heads.has_value(); }

void Engine::build_references(const std::vector<std::string>& image_paths, const std::string& class_name) {
  std::vector<PixelTensor> views;  // one full-resolution image decoded at a time
  std::vector<ReferenceSource> sources;
  for (const auto& p : image_paths) {
    for (auto& v : impl_->reference_views(decode_image(p, impl_->max_pixels))) views.push_back(std::move(v));
    sources.push_back({p, file_sha256(p)});
  }
  impl_->refs = std::make_unique<ReferenceSet>(impl_->build_set_from_views(views, sources, class_name));
}

bool Engine::needs_class_name() const { return impl_->new_set_scorer == "inctrl"; }

void Engine::build_references_from_prompts(const std::string& prompt_file, const std::string& class_name) {
  const Backbone& bb = *impl_->model.backbone;
  if (impl_->new_set_scorer != "inctrl" || bb.kind() == "dinov2")
    fail("--prompts: InCTRL prompt files are preprocessed for CLIP or lite models and the inctrl scorer");
  PromptFile prompts = read_prompt_file(prompt_file, bb.input_size());
  at::NoGradGuard no_grad;
  impl_->refs = std::make_unique<ReferenceSet>(ReferenceSet::build(bb, prompts.pixels, prompts.sources, class_name));
}

void Engine::load_references(const std::string& path) {
  impl_->refs = std::make_unique<ReferenceSet>(ReferenceSet::load(path, *impl_->model.backbone));
  if (impl_->explicit_scorer && impl_->refs->scorer != impl_->new_set_scorer)
    fail(path, ": this set was built for the ", impl_->refs->scorer, " scorer, not ", impl_->new_set_scorer,
         " (a set keeps its scorer; rebuild it with --scorer ", impl_->new_set_scorer, ")");
}

void Engine::save_references(const std::string& path) const { impl_->require_refs().save(path); }

std::string Engine::references_summary() const {
  const auto& r = impl_->require_refs();
  std::ostringstream o;
  o << "class '" << r.class_name << "', K = " << r.k() << (r.text_prior.defined() ? ", text prior" : "") << ", scorer "
    << r.scorer << (r.views > 1 ? " with " + std::to_string(r.views) + " rotations per reference" : "");
  return o.str();
}

std::optional<Threshold> Engine::threshold() const { return impl_->require_refs().threshold; }

void Engine::set_threshold(const Threshold& t) {
  impl_->require_refs();
  impl_->refs->threshold = t;
}

std::vector<double> Engine::leave_one_out_scores() {
  const ReferenceSet& refs = impl_->require_refs();
  const int64_t K = refs.k();
  if (K < 2) fail("leave-one-out calibration needs K >= 2 references (this set has K = ", K, "); give --normals");
  // It splits the banks into K equal blocks: InCTRL sets on a fixed grid only.
  if (refs.scorer != "inctrl" || refs.views != 1 || impl_->backbone().grid() == 0)
    fail("leave-one-out calibration is available for InCTRL sets on CLIP or lite models; give --normals");
  at::NoGradGuard no_grad;
  std::vector<double> scores;
  for (int64_t k = 0; k < K; ++k) {
    // Reference k becomes the query (its bank rows are its tapped tokens, already normalised,
    // which the patch residual normalises anyway); the other K − 1 form the set.
    ReferenceSet rest = refs;
    rest.threshold.reset();
    Features query;
    rest.banks.clear();
    rest.banks_bf16.clear();
    for (const auto& bank : refs.banks) {
      const int64_t P = bank.size(0) / K;
      query.taps.push_back(bank.slice(0, k * P, (k + 1) * P).unsqueeze(0));
      rest.banks.push_back(at::cat({bank.slice(0, 0, k * P), bank.slice(0, (k + 1) * P)}).contiguous());
      rest.banks_bf16.push_back(rest.banks.back().to(at::kBFloat16));
    }
    query.global = refs.globals.slice(0, k, k + 1);
    rest.globals = at::cat({refs.globals.slice(0, 0, k), refs.globals.slice(0, k + 1)}).contiguous();
    scores.push_back(impl_->scorer->score(rest, query).final_score[0].item<double>());
  }
  return scores;
}

void Engine::score(const std::vector<std::string>& paths, int batch,
                   const std::function<void(const ScoreRecord&)>& on_record) {
  if (batch < 1) fail("--batch: must be at least 1 (got ", batch, ")");
  const ReferenceSet& refs = impl_->require_refs();
  at::NoGradGuard no_grad;
  for (size_t start = 0; start < paths.size(); start += batch) {
    const size_t end = std::min(paths.size(), start + batch);
    const double t0 = now_ms();
    std::vector<PixelTensor> pixels;
    for (size_t i = start; i < end; ++i) pixels.push_back(impl_->load_pixels(paths[i]));
    std::vector<ScoreRecord> records = impl_->score_batch(refs, pixels, {paths.begin() + start, paths.begin() + end});
    const double ms = (now_ms() - t0) / static_cast<double>(end - start);
    for (auto& r : records) {
      r.ms = ms;
      on_record(r);
    }
  }
}

std::vector<InspectRecord> Engine::inspect(const std::vector<std::string>& paths, const std::string& dump_path) {
  const Backbone& bb = *impl_->model.backbone;
  at::NoGradGuard no_grad;
  std::vector<InspectRecord> records;
  std::vector<at::Tensor> keep_alive;  // dumped tensors must outlive the write
  RawTensorList dump;
  auto add = [&](const std::string& name, at::Tensor t) {
    t = t.to(at::kFloat).contiguous();
    keep_alive.push_back(t);
    RawTensor r;
    r.shape.assign(t.sizes().begin(), t.sizes().end());
    r.data = static_cast<const uint8_t*>(t.data_ptr());
    r.nbytes = t.nbytes();
    dump.emplace_back(name, r);
  };
  for (size_t i = 0; i < paths.size(); ++i) {
    double t0 = now_ms();
    Image img = decode_image(paths[i], impl_->max_pixels);
    PixelTensor px = bb.preprocess(img);
    at::Tensor pixels = stack_pixels({px});
    Features f = bb.encode(pixels);
    InspectRecord rec{paths[i], img.width, img.height, f.global[0].norm().item<double>(), now_ms() - t0};
    records.push_back(rec);
    if (dump_path.empty()) continue;
    const std::string p = std::to_string(i) + ".";
    add(p + "pixel_values", pixels[0]);
    add(p + "cls_embedding", f.global[0]);
    std::vector<at::Tensor> taps;
    for (const auto& t : f.taps) taps.push_back(t[0]);
    add(p + "tapped_tokens", at::stack(taps));
    if (bb.kind() == "dinov2") add(p + "patch_tokens", f.taps[0][0]);  // [h·w, D], AnomalyDINO's features
    if (!impl_->refs || impl_->refs->scorer != "inctrl") continue;
    InctrlScores s = impl_->scorer->score(*impl_->refs, f);
    add(p + "residual_map", s.residual_map[0]);
    add(p + "s_patch", s.s_patch[0]);
    if (s.s_text.defined()) add(p + "s_text", s.s_text[0]);
    if (s.s_img.defined()) {
      add(p + "s_img", s.s_img[0]);
      add(p + "holistic_map", s.holistic_map[0]);
      add(p + "s_hol", s.s_hol[0]);
    }
    add(p + "final_score", s.final_score[0]);
  }
  if (!dump_path.empty()) write_safetensors(dump_path, dump, {{"producer", "gad inspect"}});
  return records;
}

std::string Engine::fingerprint() const { return impl_->model.backbone->fingerprint(); }

PixelTensor Engine::preprocess(const Image& image) const { return impl_->model.backbone->preprocess(image); }

std::vector<PixelTensor> Engine::reference_views(const Image& image) const { return impl_->reference_views(image); }

std::shared_ptr<const RefHandle> Engine::build_reference_handle(const std::vector<PixelTensor>& pixels,
                                                                const std::vector<ImageSource>& sources,
                                                                const std::string& class_name) {
  std::vector<ReferenceSource> srcs;
  for (size_t i = 0; i < sources.size(); ++i) srcs.push_back({sources[i].name, sources[i].sha256});
  auto h = std::make_shared<RefHandle>();
  h->set = impl_->build_set_from_views(pixels, srcs, class_name);
  return h;
}

std::string Engine::serialize_references(const RefHandle& refs) const {
  RemoveOnExit tmp{temp_ref_path()};
  refs.set.save(tmp.path);
  auto bytes = read_file_bytes(tmp.path);
  return std::string(bytes.begin(), bytes.end());
}

std::shared_ptr<const RefHandle> Engine::references_from_bytes(const std::string& bytes) const {
  RemoveOnExit tmp{temp_ref_path()};
  write_file_atomically(tmp.path, [&](std::FILE* f) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) fail(tmp.path, ": write failed");
  });
  auto h = std::make_shared<RefHandle>();
  h->set = ReferenceSet::load(tmp.path, *impl_->model.backbone);  // tensors are copied out of the mapping
  return h;
}

std::shared_ptr<const RefHandle> Engine::with_threshold(const RefHandle& refs, const Threshold& t) {
  auto h = std::make_shared<RefHandle>(refs);
  h->set.threshold = t;
  return h;
}

size_t Engine::memory_bytes(const RefHandle& refs) {
  const ReferenceSet& s = refs.set;
  size_t bytes = 0;
  for (const auto* list : {&s.banks, &s.banks_bf16})
    for (const auto& t : *list) bytes += t.nbytes();
  for (const auto& t : {s.globals, s.text_prior})
    if (t.defined()) bytes += t.nbytes();
  return bytes;
}

std::vector<ScoreRecord> Engine::score_pixels(const RefHandle& refs, const std::vector<PixelTensor>& pixels, int batch) {
  if (batch < 1) fail("batch: must be at least 1 (got ", batch, ")");
  at::NoGradGuard no_grad;
  std::vector<ScoreRecord> out;
  for (size_t start = 0; start < pixels.size(); start += batch) {
    const size_t end = std::min(pixels.size(), start + batch);
    const double t0 = now_ms();
    std::vector<ScoreRecord> records =
        impl_->score_batch(refs.set, {pixels.begin() + start, pixels.begin() + end}, {});
    const double ms = (now_ms() - t0) / static_cast<double>(end - start);
    for (auto& r : records) {
      r.ms = ms;
      out.push_back(std::move(r));
    }
  }
  return out;
}

int64_t Engine::image_encodes() const { return impl_->model.backbone->image_encodes(); }
int64_t Engine::text_encodes() const { return impl_->model.backbone->text_encodes(); }

}  // namespace gad
