#include "engine/engine.h"


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
#include "dino/anomalydino.h"
#include "backbone/precision.h"
#include "io/safetensors.h"
#include "inctrl/calibration.h"
#include "engine/load_model.h"
#include "util/error.h"
#include "util/fs.h"
#include "maps/anomaly_map.h"
#include <ATen/Parallel.h>
#include <cstring>

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
  r.has_img = s.s_img.defined();
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

struct Detector::Impl {
  LoadedModel model;
  std::unique_ptr<InctrlScorer> scorer;
  std::string new_set_scorer;  // inctrl | anomalydino
  bool rotate = false, explicit_scorer = false;
  int64_t max_pixels = kDefaultMaxPixels;

  const Backbone& backbone() const { return *model.backbone; }
  PixelTensor load_pixels(const std::string& path) const { return backbone().preprocess(decode_image(path, max_pixels)); }

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

  // Scores n images in batches of o.batch, in order: `prepare(i, name)` gives image i's network
  // input (and sets its name); each record goes to `emit` once its batch is done.
  void score_in_batches(const ReferenceSet& set, size_t n, const ScoreOptions& o,
                        const std::function<PixelTensor(size_t, std::string&)>& prepare,
                        const std::function<void(ScoreRecord&&)>& emit) const {
    check(o);
    at::NoGradGuard no_grad;
    for (size_t start = 0; start < n; start += o.batch) {
      const size_t end = std::min(n, start + o.batch);
      const double t0 = now_ms();
      std::vector<PixelTensor> pixels;
      std::vector<std::string> names(end - start);
      for (size_t i = start; i < end; ++i) pixels.push_back(prepare(i, names[i - start]));
      std::vector<ScoreRecord> records = score_batch(set, pixels, names);
      finish(records, o, (now_ms() - t0) / static_cast<double>(end - start));
      for (auto& r : records) emit(std::move(r));
    }
  }

  void check(const ScoreOptions& o) const {
    if (o.batch < 1) fail("--batch: must be at least 1 (got ", o.batch, ")");
    if (o.map == MapKind::Holistic && !model.heads)
      fail("--map-kind holistic: this model has no InCTRL heads (the holistic map is M + s_text + s_img)");
  }

  // Per-image time and, when asked, the map in image pixels.
  static void finish(std::vector<ScoreRecord>& records, const ScoreOptions& o, double ms) {
    for (auto& r : records) {
      r.ms = ms;
      if (o.map == MapKind::None) continue;
      if (o.map == MapKind::Holistic && r.holistic_map.empty())
        fail("--map-kind holistic: these heads have no holistic map (InCTRL's diff_head input); use --map-kind patch");
      r.map = map_to_image(o.map == MapKind::Holistic ? r.holistic_map : r.residual_map, r.grid, r.geometry, o.map_sigma);
    }
  }
};

namespace {

std::string scorer_name(Scorer s, bool dino) {
  if (s == Scorer::Auto) return dino ? "anomalydino" : "inctrl";
  return s == Scorer::AnomalyDINO ? "anomalydino" : "inctrl";
}

const ReferenceSet& set_of(const References& refs) {
  if (refs.empty()) fail("reference set: empty (build or load one first)");
  return refs.handle()->set;
}

References wrap(ReferenceSet set) {
  auto h = std::make_shared<RefHandle>();
  h->set = std::move(set);
  return References(std::move(h));
}

// 8-bit interleaved pixels of an ImageView (16-bit samples keep their high byte, as decoding does).
Image image_of(const ImageView& v, size_t index, int64_t max_pixels) {
  const std::string name = v.name.empty() ? "image " + std::to_string(index) : v.name;
  if (!v.data) fail(name, ": no pixel data");
  if (v.width < 1 || v.height < 1) fail(name, ": width and height must be at least 1 (got ", v.width, "x", v.height, ")");
  if (v.channels != 1 && v.channels != 3 && v.channels != 4) fail(name, ": channels must be 1, 3 or 4 (got ", v.channels, ")");
  if (v.bits != 8 && v.bits != 16) fail(name, ": bits per sample must be 8 or 16 (got ", v.bits, ")");
  if (static_cast<int64_t>(v.width) * v.height > max_pixels)
    fail_as(ErrorKind::ResourceLimit, name, ": ", v.width, "x", v.height, " is more than the largest image accepted (",
            max_pixels, " pixels)");
  const size_t packed = static_cast<size_t>(v.width) * v.channels * (v.bits / 8);
  const size_t stride = v.row_bytes ? v.row_bytes : packed;
  if (stride < packed) fail(name, ": row_bytes ", stride, " is less than width x channels x bytes per sample (", packed, ")");
  Image img;
  img.width = v.width;
  img.height = v.height;
  img.channels = v.channels;
  img.pixels.resize(static_cast<size_t>(v.width) * v.height * v.channels);
  const auto* base = static_cast<const uint8_t*>(v.data);
  const size_t row_values = static_cast<size_t>(v.width) * v.channels;
  for (int y = 0; y < v.height; ++y) {
    const uint8_t* src = base + static_cast<size_t>(y) * stride;
    uint8_t* dst = img.pixels.data() + static_cast<size_t>(y) * row_values;
    if (v.bits == 8) {
      std::copy(src, src + row_values, dst);
    } else {
      for (size_t i = 0; i < row_values; ++i) {
        uint16_t s;
        std::memcpy(&s, src + 2 * i, 2);  // native byte order, as a uint16_t buffer holds it
        dst[i] = static_cast<uint8_t>(s >> 8);
      }
    }
  }
  return img;
}

}  // namespace

const char* version() { return GAD_VERSION; }

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::InvalidArgument: return "invalid argument";
    case ErrorKind::NotFound: return "not found";
    case ErrorKind::CorruptFile: return "corrupt file";
    case ErrorKind::Unsupported: return "unsupported";
    case ErrorKind::Io: return "I/O error";
    case ErrorKind::ResourceLimit: return "resource limit";
  }
  return "error";
}

// ---- References ----

int64_t References::k() const { return set_of(*this).k(); }
std::string References::class_name() const { return set_of(*this).class_name; }
std::string References::scorer() const { return set_of(*this).scorer; }
std::optional<Threshold> References::threshold() const { return set_of(*this).threshold; }

std::string References::summary() const {
  const ReferenceSet& r = set_of(*this);
  std::ostringstream o;
  o << "class '" << r.class_name << "', K = " << r.k() << (r.text_prior.defined() ? ", text prior" : "") << ", scorer "
    << r.scorer << (r.views > 1 ? " with " + std::to_string(r.views) + " rotations per reference" : "");
  return o.str();
}

size_t References::memory_bytes() const {
  const ReferenceSet& s = set_of(*this);
  size_t bytes = 0;
  for (const auto* list : {&s.banks, &s.banks_bf16})
    for (const auto& t : *list) bytes += t.nbytes();
  for (const auto& t : {s.globals, s.text_prior})
    if (t.defined()) bytes += t.nbytes();
  return bytes;
}

void References::save(const std::string& path) const { set_of(*this).save(path); }

std::string References::to_bytes() const {
  RemoveOnExit tmp{temp_ref_path()};
  save(tmp.path);
  auto bytes = read_file_bytes(tmp.path);
  return std::string(bytes.begin(), bytes.end());
}

References References::with_threshold(const Threshold& t) const {
  auto h = std::make_shared<RefHandle>(RefHandle{set_of(*this)});  // the tensors are shared, not copied
  h->set.threshold = t;
  return References(std::move(h));
}

// ---- Detector ----

Detector::Detector(const ModelOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.max_pixels < 1) fail("--max-pixels: must be at least 1 (got ", options.max_pixels, ")");
  impl_->max_pixels = options.max_pixels;
  impl_->model = load_model(options);
  impl_->model.backbone->set_precision(resolve_precision(options.precision));
  impl_->scorer = std::make_unique<InctrlScorer>(*impl_->model.backbone, impl_->model.heads);
  impl_->new_set_scorer = scorer_name(options.scorer, impl_->model.backbone->kind() == "dinov2");
  if (impl_->new_set_scorer == "anomalydino" && impl_->model.heads)
    fail("--scorer anomalydino: is training-free and uses no heads; drop --heads");
  impl_->rotate = options.rotate;
  if (options.rotate && impl_->new_set_scorer != "anomalydino") fail("--rotate: applies to --scorer anomalydino only");
  impl_->explicit_scorer = options.scorer != Scorer::Auto;
}

Detector::~Detector() = default;
Detector::Detector(Detector&&) noexcept = default;
Detector& Detector::operator=(Detector&&) noexcept = default;

std::string Detector::describe() const {
  const Backbone& bb = impl_->backbone();
  std::ostringstream o;
  o << bb.description() << " (fingerprint " << bb.fingerprint() << "); heads: "
    << (impl_->model.heads ? impl_->model.heads_source : "none (score = untrained patch residual)") << "; "
    << at::get_num_threads() << " thread(s), " << precision_name(bb.precision())
    << (bb.precision() == Precision::BF16 ? " (CPU has AVX512-BF16/AMX)" : "");
  return o.str();
}

std::string Detector::fingerprint() const { return impl_->backbone().fingerprint(); }
bool Detector::has_heads() const { return impl_->model.heads.has_value(); }
bool Detector::needs_class_name() const { return impl_->new_set_scorer == "inctrl"; }
int64_t Detector::max_pixels() const { return impl_->max_pixels; }

References Detector::build_references(const std::vector<std::string>& paths, const std::string& class_name) {
  std::vector<PixelTensor> views;  // one full-resolution image decoded at a time
  std::vector<ReferenceSource> sources;
  for (const auto& p : paths) {
    for (auto& v : impl_->reference_views(decode_image(p, impl_->max_pixels))) views.push_back(std::move(v));
    sources.push_back({p, file_sha256(p)});
  }
  return wrap(impl_->build_set_from_views(views, sources, class_name));
}

References Detector::build_references(const std::vector<ImageView>& images, const std::string& class_name) {
  std::vector<PixelTensor> views;
  std::vector<ReferenceSource> sources;
  for (size_t i = 0; i < images.size(); ++i) {
    for (auto& v : impl_->reference_views(image_of(images[i], i, impl_->max_pixels))) views.push_back(std::move(v));
    sources.push_back({images[i].name.empty() ? "image " + std::to_string(i) : images[i].name, ""});
  }
  return wrap(impl_->build_set_from_views(views, sources, class_name));
}

References Detector::build_references_from_prompts(const std::string& prompt_file, const std::string& class_name) {
  const Backbone& bb = impl_->backbone();
  if (impl_->new_set_scorer != "inctrl" || bb.kind() == "dinov2")
    fail("--prompts: InCTRL prompt files are preprocessed for CLIP or lite models and the inctrl scorer");
  PromptFile prompts = read_prompt_file(prompt_file, bb.input_size());
  at::NoGradGuard no_grad;
  return wrap(ReferenceSet::build(bb, prompts.pixels, prompts.sources, class_name));
}

References Detector::load_references(const std::string& path) const {
  References refs = wrap(ReferenceSet::load(path, impl_->backbone()));
  if (impl_->explicit_scorer && refs.scorer() != impl_->new_set_scorer)
    fail(path, ": this set was built for the ", refs.scorer(), " scorer, not ", impl_->new_set_scorer,
         " (a set keeps its scorer; rebuild it with --scorer ", impl_->new_set_scorer, ")");
  return refs;
}

References Detector::references_from_bytes(const std::string& bytes) const {
  RemoveOnExit tmp{temp_ref_path()};
  write_file_atomically(tmp.path, [&](std::FILE* f) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) fail_as(ErrorKind::Io, tmp.path, ": write failed");
  });
  return wrap(ReferenceSet::load(tmp.path, impl_->backbone()));  // tensors are copied out of the mapping
}

std::vector<double> Detector::leave_one_out_scores(const References& references) {
  const ReferenceSet& refs = set_of(references);
  const int64_t K = refs.k();
  if (K < 2) fail("leave-one-out calibration needs K >= 2 references (this set has K = ", K, "); give --normals");
  // It splits the banks into K equal blocks: InCTRL sets on a fixed grid only.
  if (refs.scorer != "inctrl" || refs.views != 1 || impl_->backbone().grid() == 0)
    fail("leave-one-out calibration is available for InCTRL sets on CLIP or lite models; give --normals");
  at::NoGradGuard no_grad;
  std::vector<double> scores;
  for (int64_t k = 0; k < K; ++k) {
    const HeldOutReference h = hold_out_reference(refs, k);
    scores.push_back(impl_->scorer->score(h.rest, h.query).final_score[0].item<double>());
  }
  return scores;
}

References Detector::calibrate(const References& refs, const std::vector<std::string>& normal_paths, double far,
                               std::string* warning) {
  std::vector<double> scores;
  if (normal_paths.empty()) {
    scores = leave_one_out_scores(refs);
  } else {
    for (const auto& r : score(refs, normal_paths)) scores.push_back(r.score);
  }
  return refs.with_threshold(conformal_threshold(
      scores, far, normal_paths.empty() ? "conformal-leave-one-out" : "conformal-heldout", warning));
}

References Detector::calibrate(const References& refs, const std::vector<ImageView>& normals, double far,
                               std::string* warning) {
  if (normals.empty()) return calibrate(refs, std::vector<std::string>{}, far, warning);
  std::vector<double> scores;
  for (const auto& r : score(refs, normals)) scores.push_back(r.score);
  return refs.with_threshold(conformal_threshold(scores, far, "conformal-heldout", warning));
}

void Detector::score(const References& refs, const std::vector<std::string>& paths, const ScoreOptions& options,
                     const std::function<void(const ScoreRecord&)>& on_result) {
  impl_->score_in_batches(
      set_of(refs), paths.size(), options,
      [&](size_t i, std::string& name) {
        name = paths[i];
        return impl_->load_pixels(paths[i]);
      },
      [&](ScoreRecord&& r) { on_result(r); });
}

std::vector<ScoreRecord> Detector::score(const References& refs, const std::vector<std::string>& paths,
                                         const ScoreOptions& options) {
  std::vector<ScoreRecord> out;
  score(refs, paths, options, [&](const ScoreRecord& r) { out.push_back(r); });
  return out;
}

std::vector<ScoreRecord> Detector::score(const References& refs, const std::vector<ImageView>& images,
                                         const ScoreOptions& options) {
  std::vector<ScoreRecord> out;
  impl_->score_in_batches(
      set_of(refs), images.size(), options,
      [&](size_t i, std::string& name) {
        name = images[i].name.empty() ? "image " + std::to_string(i) : images[i].name;
        return impl_->backbone().preprocess(image_of(images[i], i, impl_->max_pixels));
      },
      [&](ScoreRecord&& r) { out.push_back(std::move(r)); });
  return out;
}

// ---- Internal extensions (engine/engine.h) ----

PixelTensor preprocess(const Detector& detector, const Image& image) { return detector.impl().backbone().preprocess(image); }

std::vector<PixelTensor> reference_views(const Detector& detector, const Image& image) {
  return detector.impl().reference_views(image);
}

References build_references(Detector& detector, const std::vector<PixelTensor>& views,
                            const std::vector<ImageSource>& sources, const std::string& class_name) {
  std::vector<ReferenceSource> srcs;
  for (const auto& s : sources) srcs.push_back({s.name, s.sha256});
  return wrap(detector.impl().build_set_from_views(views, srcs, class_name));
}

std::vector<ScoreRecord> score_pixels(Detector& detector, const References& refs, const std::vector<PixelTensor>& pixels,
                                      int batch) {
  ScoreOptions options;
  options.batch = batch;
  std::vector<ScoreRecord> out;
  detector.impl().score_in_batches(
      set_of(refs), pixels.size(), options, [&](size_t i, std::string&) { return pixels[i]; },
      [&](ScoreRecord&& r) { out.push_back(std::move(r)); });
  return out;
}

std::vector<InspectRecord> inspect(Detector& detector, const std::vector<std::string>& paths, const std::string& dump_path,
                                   const References* refs) {
  const Detector::Impl& impl = detector.impl();
  const Backbone& bb = impl.backbone();
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
  const ReferenceSet* set = refs && !refs->empty() && refs->scorer() == "inctrl" ? &set_of(*refs) : nullptr;
  for (size_t i = 0; i < paths.size(); ++i) {
    double t0 = now_ms();
    Image img = decode_image(paths[i], impl.max_pixels);
    PixelTensor px = bb.preprocess(img);
    at::Tensor pixels = stack_pixels({px});
    Features f = bb.encode(pixels);
    records.push_back({paths[i], img.width, img.height, f.global[0].norm().item<double>(), now_ms() - t0});
    if (dump_path.empty()) continue;
    const std::string p = std::to_string(i) + ".";
    add(p + "pixel_values", pixels[0]);
    add(p + "cls_embedding", f.global[0]);
    std::vector<at::Tensor> taps;
    for (const auto& t : f.taps) taps.push_back(t[0]);
    add(p + "tapped_tokens", at::stack(taps));
    if (bb.kind() == "dinov2") add(p + "patch_tokens", f.taps[0][0]);  // [h·w, D], AnomalyDINO's features
    if (!set) continue;
    InctrlScores s = impl.scorer->score(*set, f);
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

int64_t image_encodes(const Detector& detector) { return detector.impl().backbone().image_encodes(); }
int64_t text_encodes(const Detector& detector) { return detector.impl().backbone().text_encodes(); }

}  // namespace gad
