#include "engine/engine.h"


#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "image/image.h"
#include "scorers/reference_set.h"
#include "inctrl/scorer.h"
#include "dino/anomalydino.h"
#include "scorers/scorer.h"
#include "scorers/musc.h"
#include "scorers/winclip.h"
#include "backbone/precision.h"
#include "io/safetensors.h"
#include "inctrl/calibration.h"
#include "engine/load_model.h"
#include "util/error.h"
#include "util/fs.h"
#include "maps/anomaly_map.h"
#include "model/weights.h"
#include <ATen/Parallel.h>
#include <cmath>
#include <cstring>
#include <ctime>

namespace gad {
namespace {


double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// A non-finite value anywhere in a record's scores or maps: the record becomes an error, never a
// verdict. Returns the name of the first such value, or "".
std::string non_finite_part(const ScoreRecord& r) {
  const std::pair<const char*, double> parts[] = {{"score", r.score}, {"s_patch", r.s_patch}, {"s_img", r.s_img},
                                                  {"s_text", r.s_text}, {"s_hol", r.s_hol}};
  for (const auto& [name, v] : parts)
    if (!std::isfinite(v)) return name;
  for (float v : r.residual_map)
    if (!std::isfinite(v)) return "residual map";
  for (float v : r.holistic_map)
    if (!std::isfinite(v)) return "holistic map";
  return "";
}

ScoreRecord error_record(const std::string& path, const std::string& error, ErrorKind kind = ErrorKind::InvalidArgument) {
  ScoreRecord r;
  r.path = path;
  r.error = error;
  r.error_kind = kind;
  return r;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string heads_fingerprint(const std::optional<InctrlHeads>& heads) {
  if (!heads) return "none";
  InctrlHeads h = *heads;  // state() hands out the (shared) tensors, so it is not const
  std::map<std::string, at::Tensor> named;
  for (auto& [key, t] : h.state()) named[key] = t;
  if (h.stats)
    for (const auto& [key, t] : {std::pair<const char*, at::Tensor>{"stats.mean", h.stats->mean}, {"stats.scale", h.stats->scale},
                                 {"stats.weight", h.stats->weight}, {"stats.bias", h.stats->bias}, {"stats.window", h.stats->window}})
      if (t.defined()) named[key] = t;
  return fingerprint(named);
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ",") + p;
  return out;
}

}  // namespace

struct RefHandle {
  ReferenceSet set;
};

struct Detector::Impl {
  ModelOptions options;
  LoadedModel model;
  std::unique_ptr<InctrlScorer> inctrl;                // leave-one-out and `gad inspect`'s score chain
  std::unique_ptr<scorers::Scorer> new_set_scorer;    // how new sets score
  // Scorers of loaded sets (a set keeps the scorer and options it was built with), by name+options.
  mutable std::map<std::string, std::unique_ptr<scorers::Scorer>> set_scorers;
  std::string heads_fingerprint;
  bool explicit_scorer = false;
  int64_t max_pixels = kDefaultMaxPixels;

  // (Re)loads the model of `options` (construction, and a lite set that brings its own taps).
  void load(const ModelOptions& o) {
    model = load_model(o);
    model.backbone->set_precision(resolve_precision(o.precision));
    inctrl = std::make_unique<InctrlScorer>(*model.backbone, model.heads);
    heads_fingerprint = gad::heads_fingerprint(model.heads);
    set_scorers.clear();  // they refer to the previous backbone
    if (new_set_scorer) make_new_set_scorer(o);
    options = o;
  }

  void make_new_set_scorer(const ModelOptions& o) {
    const std::string name = scorers::scorer_name(o.scorer, backbone());
    nlohmann::json given = nlohmann::json::object();
    if (!o.scorer_options.empty()) {
      given = nlohmann::json::parse(o.scorer_options, nullptr, false);
      if (given.is_discarded()) fail("scorer options: not valid JSON");
    }
    if (o.rotate) {
      if (name != "anomalydino") fail("rotate: applies to the anomalydino scorer only");
      given["rotate"] = true;
    }
    if (name == "musc") {
      scorers::musc_options(backbone(), given, "scorer options");  // checked now, used by score_zero_shot
      new_set_scorer.reset();
      zero_shot_options = given;
      return;
    }
    new_set_scorer = scorers::make_scorer(name, backbone(), model.heads, given);
    if (!new_set_scorer->uses_heads() && model.heads) {
      // Heads that merely came inside an InCTRL model file are not the user's choice: set them aside.
      if (!o.heads.empty()) fail("scorer ", name, ": is training-free and uses no heads; open the detector without heads");
      model.heads.reset();
      inctrl = std::make_unique<InctrlScorer>(*model.backbone, model.heads);
      heads_fingerprint = gad::heads_fingerprint(model.heads);
    }
  }

  nlohmann::json zero_shot_options = nlohmann::json::object();

  std::string zero_shot_summary() const { return scorers::musc_options(backbone(), zero_shot_options, "scorer options").to_json().dump(); }

  // Zero-shot WinCLIP (the detector's scorer is winclip) or MuSc over a collection: image i from
  // `load(i)`; see Detector::score_zero_shot.
  std::vector<ScoreRecord> score_zero_shot(size_t n, const ScoreOptions& o, const std::function<std::string(size_t)>& name_of,
                                           const std::function<Image(size_t)>& load) const {
    check(o);
    if (new_set_scorer && new_set_scorer->name() == "winclip") return winclip_zero_shot(n, o, name_of, load);
    const scorers::MuscOptions mo = scorers::musc_options(backbone(), zero_shot_options, "scorer options");
    const FeatureRequest request = scorers::musc_request(backbone(), mo);
    at::NoGradGuard no_grad;
    const double t0 = now_ms();
    std::vector<ScoreRecord> records(n);
    std::vector<size_t> scored;  // record index of each encoded image, in order
    std::vector<at::Tensor> layers;  // per layer [n, L, C], filled row by row
    at::Tensor cls;
    int64_t grid = 0;
    for (size_t i = 0; i < n; ++i) {
      ScoreRecord& r = records[i];
      r.path = name_of(i);
      if (o.interrupted && o.interrupted()) fail("zero-shot: interrupted before every image was encoded; nothing scored");
      try {
        const PixelTensor px = backbone().preprocess(load(i), request);
        // One image per pass: a batched pass may round differently, and every score depends on all.
        const Features f = backbone().encode(stack_pixels({px}), request);
        if (f.grid_h != f.grid_w) fail(r.path, ": zero-shot needs a square patch grid (got ", f.grid_h, "x", f.grid_w, ")");
        if (layers.empty()) {
          grid = f.grid_w;
          for (const auto& t : f.taps) layers.push_back(at::empty({static_cast<int64_t>(n), t.size(1), t.size(2)}));
          cls = at::empty({static_cast<int64_t>(n), f.global.size(1)});
        }
        const auto row = static_cast<int64_t>(scored.size());
        for (size_t l = 0; l < layers.size(); ++l) layers[l][row].copy_(f.taps[l][0]);
        cls[row].copy_(f.global[0]);
        r.grid = static_cast<int>(grid);
        r.geometry = px.geometry;
        scored.push_back(i);
      } catch (const Error& e) {
        r.error = e.what();
        r.error_kind = e.kind();
      }
    }
    const auto count = static_cast<int64_t>(scored.size());
    for (auto& t : layers) t = t.narrow(0, 0, count);
    if (count < scorers::musc_min_images(mo))
      fail("zero-shot: MuSc needs a collection of at least ", scorers::musc_min_images(mo), " readable images (got ", count,
           " of ", n, "); below that the official code returns NaN");
    const int map_size = backbone().kind() == "dinov2" ? mo.image_size : static_cast<int>(backbone().input_size());
    const scorers::MuscResult m = scorers::musc_score(layers, cls.narrow(0, 0, count), grid, map_size, mo, false, o.interrupted);
    for (int64_t k = 0; k < count; ++k) {
      ScoreRecord& r = records[scored[static_cast<size_t>(k)]];
      r.score = m.score[k].item<double>();
      r.s_patch = m.ac_score[k].item<double>();  // the largest value of the pixel map, before RsCIN
      const at::Tensor map = m.patch_map[k].to(at::kFloat).contiguous();
      r.residual_map.assign(map.data_ptr<float>(), map.data_ptr<float>() + map.numel());
    }
    finish(records, o, (now_ms() - t0) / static_cast<double>(std::max<size_t>(1, n)), nullptr);
    if (o.use_threshold) apply_robust_z(records, o.zero_shot_z);
    return records;
  }

  // WinCLIP's shot 0: each image scored by its text prompts alone, in batches of o.batch.
  std::vector<ScoreRecord> winclip_zero_shot(size_t n, const ScoreOptions& o, const std::function<std::string(size_t)>& name_of,
                                             const std::function<Image(size_t)>& load) const {
    if (o.class_name.empty()) fail("zero-shot: WinCLIP needs the object's name for its text prompts (class name, --class NAME)");
    if (o.map != MapKind::None) fail("maps: zero-shot WinCLIP gives image scores only (the reference code has no zero-shot maps)");
    at::NoGradGuard no_grad;
    const at::Tensor text = scorers::winclip_text(backbone(), o.class_name);
    std::vector<ScoreRecord> records(n);
    for (size_t start = 0; start < n; start += o.batch) {
      if (o.interrupted && o.interrupted()) fail("zero-shot: interrupted before every image was scored; nothing scored");
      const double t0 = now_ms();
      const size_t end = std::min(n, start + o.batch);
      std::vector<PixelTensor> pixels;
      std::vector<size_t> slots;
      for (size_t i = start; i < end; ++i) {
        records[i].path = name_of(i);
        try {
          pixels.push_back(backbone().preprocess(load(i)));
          slots.push_back(i);
        } catch (const Error& e) {
          records[i].error = e.what();
          records[i].error_kind = e.kind();
        }
      }
      scorers::encode_batches(backbone(), {}, pixels, [&](const scorers::PassImages& pass, const Features& f) {
        const at::Tensor s = scorers::winclip_text_score(f.global, text).to(at::kDouble).contiguous();
        for (size_t b = 0; b < pass.size(); ++b) {
          ScoreRecord& r = records[slots[pass[b]]];
          r.score = r.s_text = s[static_cast<int64_t>(b)].item<double>();
          r.has_text = true;
          r.grid = static_cast<int>(f.grid_w);
          r.geometry = pixels[pass[b]].geometry;
        }
      });
      std::vector<ScoreRecord> batch(records.begin() + start, records.begin() + end);
      finish(batch, o, (now_ms() - t0) / static_cast<double>(end - start), nullptr);
      std::move(batch.begin(), batch.end(), records.begin() + start);
    }
    if (o.use_threshold) apply_robust_z(records, o.zero_shot_z);
    return records;
  }

  // The zero-shot verdict: anomalous when (score − median) / (1.4826 · MAD) > z over the scored
  // images (with MAD = 0, anything above the median).
  static void apply_robust_z(std::vector<ScoreRecord>& records, double z) {
    std::vector<double> scores;
    for (const auto& r : records)
      if (r.ok()) scores.push_back(r.score);
    if (scores.empty()) return;
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      const size_t h = v.size() / 2;
      return v.size() % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
    };
    const double med = median(scores);
    std::vector<double> dev;
    for (double s : scores) dev.push_back(std::fabs(s - med));
    const double threshold = med + z * 1.4826 * median(dev);
    char rule[64];
    std::snprintf(rule, sizeof rule, "robust-z>%g", z);
    for (auto& r : records)
      if (r.ok()) r.threshold = threshold, r.verdict_rule = rule;
  }

  const scorers::Scorer& new_scorer() const {
    if (!new_set_scorer) fail("scorer musc: is zero-shot and builds no reference set; score a collection with --zero-shot");
    return *new_set_scorer;
  }

  // The scorer a set was built with, made once per name and options.
  const scorers::Scorer& scorer_for(const ReferenceSet& set) const {
    const std::string key = set.scorer + " " + set.scorer_options + " " + std::to_string(set.views);
    auto it = set_scorers.find(key);
    if (it == set_scorers.end()) {
      nlohmann::json opts = nlohmann::json::parse(set.scorer_options, nullptr, false);
      if (opts.is_discarded()) fail("reference set: its scorer options are not valid JSON");
      if (set.scorer == "anomalydino" && set.views == kAnomalyDinoRotations) opts["rotate"] = true;
      it = set_scorers.emplace(key, scorers::make_scorer(set.scorer, backbone(), model.heads, opts, "reference set")).first;
    }
    return *it->second;
  }

  // A lite set records the taps its banks came from; a detector opened without explicit taps
  // switches to them (the lite model reloads in well under a second), so a set is used as built.
  void adopt_taps(const std::string& path) {
    if (backbone().kind() != "lite" || !options.lite_taps.empty()) return;
    const std::vector<std::string> taps = ReferenceSet::saved_taps(path);
    if (taps.empty() || taps == backbone().patch_taps()) return;
    ModelOptions o = options;
    o.lite_taps = taps;
    load(o);
    options.lite_taps.clear();  // still the user's choice: the next set may bring other taps
  }

  ScoringSetup setup(const ReferenceSet& set) const {
    const Backbone& bb = backbone();
    return {{"model", bb.fingerprint()},
            {"heads", set.scorer == "inctrl" ? heads_fingerprint : "none"},
            {"scorer", set.scorer},
            {"scorer_options", set.scorer_options},
            {"taps", join(bb.patch_taps())},
            {"views", std::to_string(set.views)},
            {"resolution", std::to_string(bb.input_size())},
            {"precision", precision_name(bb.precision())}};
  }

  // Whether the set's threshold applies to scores made now: yes when calibrated under this setup
  // (or before setups were recorded); an error naming what differs otherwise, unless the caller
  // asked for scores without a verdict. Precision moves scores by ~0.01 only: it never refuses.
  bool threshold_applies(const ReferenceSet& set, const ScoreOptions& o) const {
    if (!set.threshold || !o.use_threshold) return false;
    const std::string diff = setup_difference(set.threshold->setup, setup(set));
    if (!diff.empty())
      fail("threshold: calibrated under another scoring setup (", diff,
           "); recalibrate under this one, or score without a verdict (no threshold)");
    return true;
  }

  const Backbone& backbone() const { return *model.backbone; }
  PixelTensor load_pixels(const std::string& path, const FeatureRequest& request) const {
    return backbone().preprocess(decode_image(path, max_pixels), request);
  }

  // The preprocessed views of reference image `index` for the new-set scorer: itself and, with
  // AnomalyDINO's rotate or SubspaceAD's augmentations, its transformed copies.
  std::vector<PixelTensor> reference_views(const Image& image, size_t index) const {
    return scorers::reference_views(backbone(), new_scorer(), image, index);
  }

  // A new set from the views of its references (reference_views of each, in order).
  ReferenceSet build_set_from_views(const std::vector<PixelTensor>& views, const std::vector<ReferenceSource>& sources,
                                    const std::string& class_name) const {
    if (views.empty()) fail("reference set: K must be at least 1 (no reference images given)");
    at::NoGradGuard no_grad;
    return new_scorer().build(backbone(), views, sources, class_name);
  }

  // Scores preprocessed queries with the set's scorer, in one forward pass (one per image when the
  // backbone's grid follows each image); `ms` is left for the caller.
  std::vector<ScoreRecord> score_batch(const ReferenceSet& set, const std::vector<PixelTensor>& pixels,
                                       const std::vector<std::string>& names) const {
    const scorers::Scorer& scorer = scorer_for(set);
    std::vector<ScoreRecord> out(pixels.size());
    scorers::encode_batches(backbone(), scorer.features(), pixels, [&](const scorers::PassImages& pass, const Features& f) {
      std::vector<ScoreRecord> records = scorers::records_of(scorer, set, f, pixels, pass);
      for (size_t b = 0; b < pass.size(); ++b) out[pass[b]] = std::move(records[b]);
    });
    for (size_t i = 0; i < out.size(); ++i) out[i].path = i < names.size() ? names[i] : std::string();
    return out;
  }

  // Scores n images in batches of o.batch, in order: `prepare(i)` gives image i's network input,
  // `name_of(i)` its name; each record goes to `emit` once its batch is done. An image that
  // cannot be prepared, or whose scoring gives a non-finite value, becomes an error record.
  void score_in_batches(const ReferenceSet& set, size_t n, const ScoreOptions& o,
                        const std::function<std::string(size_t)>& name_of,
                        const std::function<PixelTensor(size_t)>& prepare,
                        const std::function<void(ScoreRecord&&)>& emit) const {
    check(o);
    check_taps(set);
    if (o.map != MapKind::None && !scorer_for(set).has_map())
      fail("maps: the ", set.scorer, " scorer gives image scores only (no patch map); score without maps");
    const bool verdict = threshold_applies(set, o);
    at::NoGradGuard no_grad;
    for (size_t start = 0; start < n; start += o.batch) {
      const size_t end = std::min(n, start + o.batch);
      if (o.interrupted && o.interrupted()) {
        for (size_t i = start; i < n; ++i) emit(error_record(name_of(i), name_of(i) + ": not scored: the run was interrupted"));
        return;
      }
      const double t0 = now_ms();
      std::vector<ScoreRecord> records(end - start);
      std::vector<PixelTensor> pixels;
      std::vector<std::string> names;
      std::vector<size_t> slots;  // record index of each prepared image
      for (size_t i = start; i < end; ++i) {
        ScoreRecord& r = records[i - start];
        r.path = name_of(i);
        try {
          pixels.push_back(prepare(i));
          names.push_back(r.path);
          slots.push_back(i - start);
        } catch (const Error& e) {
          r.error = e.what();
          r.error_kind = e.kind();
        }
      }
      std::vector<ScoreRecord> scored = score_batch(set, pixels, names);
      for (size_t j = 0; j < scored.size(); ++j) records[slots[j]] = std::move(scored[j]);
      finish(records, o, (now_ms() - t0) / static_cast<double>(end - start), verdict ? &*set.threshold : nullptr);
      for (auto& r : records) emit(std::move(r));
    }
  }

  // A set's banks come from its taps: scoring it with other taps would compare other layers.
  void check_taps(const ReferenceSet& set) const {
    const std::vector<std::string> mine = backbone().patch_taps();
    if (!set.taps.empty() && set.taps != mine)
      fail("reference set: built with the lite taps ", join(set.taps), ", but this detector uses ", join(mine),
           " (load the set into a detector opened with its taps)");
  }

  void check(const ScoreOptions& o) const {
    if (o.batch < 1) fail("batch: must be at least 1 (got ", o.batch, ")");
    if (!(o.zero_shot_z > 0 && o.zero_shot_z < 1e6)) fail("zero-shot z: must be a positive number (got ", o.zero_shot_z, ")");
    if (!(o.map_sigma >= 0 && o.map_sigma <= kMaxMapSigma))
      fail("map sigma: must be within 0..", kMaxMapSigma, " px at a 240 px input (got ", o.map_sigma, ")");
    if (o.map == MapKind::Holistic && !model.heads)
      fail("holistic map: this model has no InCTRL heads (the holistic map is M + s_text + s_img)");
  }

  // Per-image time, the finiteness check, the threshold and, when asked, the map in image pixels.
  static void finish(std::vector<ScoreRecord>& records, const ScoreOptions& o, double ms, const Threshold* threshold) {
    for (auto& r : records) {
      if (!r.ok()) continue;
      r.ms = ms;
      if (const std::string part = non_finite_part(r); !part.empty()) {
        r = error_record(r.path, r.path + ": scoring gave a non-finite " + part + " (NaN or infinity); no verdict",
                         ErrorKind::Unsupported);
        continue;
      }
      if (threshold) r.threshold = threshold->value;
      if (o.map == MapKind::None) continue;
      if (o.map == MapKind::Holistic && r.holistic_map.empty())
        fail("holistic map: these heads have no holistic map (InCTRL's diff_head input); ask for the patch map");
      r.map = map_to_image(o.map == MapKind::Holistic ? r.holistic_map : r.residual_map, r.grid, r.geometry, o.map_sigma);
    }
  }
};

namespace {

const ReferenceSet& set_of(const References& refs) {
  if (refs.empty()) fail("reference set: empty (build or load one first)");
  return refs.handle()->set;
}

References wrap(ReferenceSet set) {
  auto h = std::make_shared<RefHandle>();
  h->set = std::move(set);
  return References(std::move(h));
}

// Identifies in-memory images the way file hashes identify files (reference checks).
std::string pixels_sha256(const Image& image) {
  Sha256 h;
  const std::string head = std::to_string(image.width) + "x" + std::to_string(image.height) + "x" + std::to_string(image.channels);
  h.update(head.data(), head.size());
  h.update(image.pixels.data(), image.pixels.size());
  return "pixels:" + h.hex();
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
std::vector<Threshold> References::threshold_history() const { return set_of(*this).threshold_history; }
std::vector<std::string> References::taps() const { return set_of(*this).taps; }
std::string References::integrity() const { return set_of(*this).integrity; }

std::vector<std::string> References::sources() const {
  std::vector<std::string> out;
  for (const auto& s : set_of(*this).sources) out.push_back(s.path);
  return out;
}

std::string setup_difference(const ScoringSetup& calibrated, const ScoringSetup& now) {
  std::string diff;
  for (const auto& [key, then] : calibrated) {
    if (key == "precision") continue;
    auto it = now.find(key);
    const std::string current = it == now.end() ? "" : it->second;
    if (current != then)
      diff += (diff.empty() ? "" : "; ") + key + ": " + (then.empty() ? "(none)" : then) + " then, " +
              (current.empty() ? "(none)" : current) + " now";
  }
  return diff;
}

std::string References::summary() const {
  const ReferenceSet& r = set_of(*this);
  std::ostringstream o;
  o << "class '" << r.class_name << "', K = " << r.k() << (r.text_prior.defined() ? ", text prior" : "") << ", scorer "
    << r.scorer;
  if (r.views > 1)  // AnomalyDINO: the reference and its 7 rotations; SubspaceAD: itself and two draws of copies
    o << " with " << r.views << (r.scorer == "anomalydino" ? " rotations" : " views (augmented copies)") << " per reference";
  return o.str();
}

size_t References::memory_bytes() const {
  const ReferenceSet& s = set_of(*this);
  size_t bytes = 0;
  for (const auto* list : {&s.banks, &s.banks_bf16})
    for (const auto& t : *list) bytes += t.nbytes();
  for (const auto& [name, t] : s.state) bytes += t.nbytes();
  for (const auto& t : {s.globals, s.text_prior})
    if (t.defined()) bytes += t.nbytes();
  return bytes;
}

void References::save(const std::string& path) const { set_of(*this).save(path); }

std::string References::to_bytes() const { return set_of(*this).to_bytes(); }

References References::with_threshold(const Threshold& t) const { return wrap(set_of(*this).with_threshold(t)); }

// ---- Detector ----

Detector::Detector(const ModelOptions& options) : impl_(std::make_unique<Impl>()) {
  if (options.max_pixels < 1) fail("max pixels: must be at least 1 (got ", options.max_pixels, ")");
  impl_->max_pixels = options.max_pixels;
  impl_->load(options);
  impl_->make_new_set_scorer(options);
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
bool Detector::needs_class_name() const { return impl_->new_set_scorer && impl_->new_set_scorer->uses_text_prior(); }

std::string Detector::scorer_summary() const {
  if (!impl_->new_set_scorer) return "musc (zero-shot) " + impl_->zero_shot_summary();
  const nlohmann::json o = impl_->new_set_scorer->options();
  return impl_->new_set_scorer->name() + (o.empty() ? "" : " " + o.dump());
}
int64_t Detector::max_pixels() const { return impl_->max_pixels; }

References Detector::build_references(const std::vector<std::string>& paths, const std::string& class_name) {
  std::vector<PixelTensor> views;  // one full-resolution image decoded at a time
  std::vector<ReferenceSource> sources;
  for (const auto& p : paths) {
    for (auto& v : impl_->reference_views(decode_image(p, impl_->max_pixels), sources.size())) views.push_back(std::move(v));
    const std::string sha = file_sha256(p);
    for (const auto& earlier : sources)
      if (earlier.sha256 == sha) fail(p, ": the same image as reference ", earlier.path, " (each reference must be distinct)");
    sources.push_back({p, sha});
  }
  return wrap(impl_->build_set_from_views(views, sources, class_name));
}

References Detector::build_references(const std::vector<ImageView>& images, const std::string& class_name) {
  std::vector<PixelTensor> views;
  std::vector<ReferenceSource> sources;
  for (size_t i = 0; i < images.size(); ++i) {
    const Image image = image_of(images[i], i, impl_->max_pixels);
    for (auto& v : impl_->reference_views(image, i)) views.push_back(std::move(v));
    sources.push_back({images[i].name.empty() ? "image " + std::to_string(i) : images[i].name, pixels_sha256(image)});
  }
  return wrap(impl_->build_set_from_views(views, sources, class_name));
}

References Detector::build_references_from_prompts(const std::string& prompt_file, const std::string& class_name) {
  const Backbone& bb = impl_->backbone();
  if (impl_->new_scorer().name() != "inctrl" || bb.kind() == "dinov2")
    fail("prompts: InCTRL prompt files are preprocessed for CLIP or lite models and the inctrl scorer");
  PromptFile prompts = read_prompt_file(prompt_file, bb.input_size());
  at::NoGradGuard no_grad;
  return wrap(ReferenceSet::build(bb, prompts.pixels, prompts.sources, class_name));
}

References Detector::load_references(const std::string& path) {
  if (std::filesystem::is_directory(path)) fail(path, ": is a directory, not a reference-set file (.gadref)");
  impl_->adopt_taps(path);
  References refs = wrap(ReferenceSet::load(path, impl_->backbone()));
  const std::string mine = impl_->new_set_scorer ? impl_->new_set_scorer->name() : "musc";
  if (impl_->explicit_scorer && refs.scorer() != mine)
    fail(path, ": this set was built for the ", refs.scorer(), " scorer, not ", mine,
         " (a set keeps its scorer; rebuild it with --scorer ", mine, ")");
  impl_->scorer_for(set_of(refs)).check(set_of(refs), path);  // options and state checked now, not at the first score
  return refs;
}

References Detector::references_from_bytes(const std::string& bytes, const std::string& name) const {
  References refs = wrap(ReferenceSet::from_bytes(bytes, name, impl_->backbone()));
  impl_->scorer_for(set_of(refs)).check(set_of(refs), name);
  return refs;
}

std::vector<ScoreRecord> Detector::score_zero_shot(const std::vector<std::string>& paths, const ScoreOptions& options) {
  return impl_->score_zero_shot(paths.size(), options, [&](size_t i) { return paths[i]; },
                                [&](size_t i) { return decode_image(paths[i], impl_->max_pixels); });
}

std::vector<ScoreRecord> Detector::score_zero_shot(const std::vector<ImageView>& images, const ScoreOptions& options) {
  return impl_->score_zero_shot(
      images.size(), options, [&](size_t i) { return images[i].name.empty() ? "image " + std::to_string(i) : images[i].name; },
      [&](size_t i) { return image_of(images[i], i, impl_->max_pixels); });
}

ScoringSetup Detector::scoring_setup(const References& refs) const { return impl_->setup(set_of(refs)); }

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
    scores.push_back(impl_->inctrl->score(h.rest, h.query).final_score[0].item<double>());
  }
  return scores;
}

namespace {

// Normal images that are references would calibrate on the references' own near-zero residuals
// and flag every other normal image.
void refuse_references(const ReferenceSet& set, const std::string& name, const std::string& sha) {
  for (const auto& s : set.sources)
    if (!s.sha256.empty() && s.sha256 == sha)
      fail(name, ": is reference ", s.path, " of this set (same content); calibrate on other normal images");
}

// Scores of normal images, none of which may have failed: a threshold from the images that
// happened to decode would not be the threshold asked for.
std::vector<double> normal_scores(const std::vector<ScoreRecord>& records, double& map_top) {
  std::vector<double> scores;
  for (const auto& r : records) {
    if (!r.ok()) fail("normal image ", r.path, ": ", r.error);
    scores.push_back(r.score);
    for (float v : r.residual_map) map_top = std::max(map_top, static_cast<double>(v));
  }
  return scores;
}

ScoreOptions without_verdict() {
  ScoreOptions o;
  o.use_threshold = false;  // a recalibration may be what moves a set to a new setup
  return o;
}

}  // namespace

References Detector::calibrate(const References& refs, const std::vector<std::string>& normal_paths,
                               const CalibrationOptions& options, std::string* warning) {
  if (normal_paths.empty())
    return calibrate_scores(refs, leave_one_out_scores(refs), "conformal-leave-one-out", options, warning);
  for (const auto& p : normal_paths) refuse_references(set_of(refs), p, file_sha256(p));
  double map_top = 0;
  const std::vector<double> scores = normal_scores(score(refs, normal_paths, without_verdict()), map_top);
  return calibrate_scores(refs, scores, "conformal-heldout", options, warning, map_top);
}

References Detector::calibrate(const References& refs, const std::vector<ImageView>& normals,
                               const CalibrationOptions& options, std::string* warning) {
  if (normals.empty()) return calibrate(refs, std::vector<std::string>{}, options, warning);
  for (size_t i = 0; i < normals.size(); ++i) {
    const std::string name = normals[i].name.empty() ? "image " + std::to_string(i) : normals[i].name;
    refuse_references(set_of(refs), name, pixels_sha256(image_of(normals[i], i, impl_->max_pixels)));
  }
  double map_top = 0;
  const std::vector<double> scores = normal_scores(score(refs, normals, without_verdict()), map_top);
  return calibrate_scores(refs, scores, "conformal-heldout", options, warning, map_top);
}

References Detector::calibrate_scores(const References& refs, const std::vector<double>& scores, const std::string& method,
                                      const CalibrationOptions& options, std::string* warning, double map_top) {
  std::string few;
  Threshold t = conformal_threshold(scores, options.far, method, &few);
  if (!few.empty() && !options.allow_few)
    fail("calibration: ", scores.size(), " normal image(s) are too few for a false-alarm rate of ", options.far,
         ": it needs at least ", normals_needed(options.far), " (give more normals or a larger rate, or allow too few)");
  if (warning) *warning = few;
  t.time = utc_now();
  t.setup = impl_->setup(set_of(refs));
  t.map_top = map_top;
  return refs.with_threshold(t);
}

void Detector::score(const References& refs, const std::vector<std::string>& paths, const ScoreOptions& options,
                     const std::function<void(const ScoreRecord&)>& on_result) {
  impl_->score_in_batches(
      set_of(refs), paths.size(), options, [&](size_t i) { return paths[i]; },
      [&, request = impl_->scorer_for(set_of(refs)).features()](size_t i) { return impl_->load_pixels(paths[i], request); },
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
      [&](size_t i) { return images[i].name.empty() ? "image " + std::to_string(i) : images[i].name; },
      [&, request = impl_->scorer_for(set_of(refs)).features()](size_t i) {
        return impl_->backbone().preprocess(image_of(images[i], i, impl_->max_pixels), request);
      },
      [&](ScoreRecord&& r) { out.push_back(std::move(r)); });
  return out;
}

// ---- Internal extensions (engine/engine.h) ----

PixelTensor preprocess(const Detector& detector, const References& refs, const Image& image) {
  return detector.impl().backbone().preprocess(image, detector.impl().scorer_for(set_of(refs)).features());
}

std::vector<PixelTensor> reference_views(const Detector& detector, const Image& image, size_t index) {
  return detector.impl().reference_views(image, index);
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
      set_of(refs), pixels.size(), options, [](size_t) { return std::string(); },
      [&](size_t i) { return pixels[i]; }, [&](ScoreRecord&& r) { out.push_back(std::move(r)); });
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
    // Taps on one grid stack into one tensor; finer taps (lite block_5_add) keep their own grid.
    bool one_grid = true;
    for (size_t l = 0; l < f.taps.size(); ++l) {
      add(p + "tap." + std::to_string(l), f.taps[l][0]);
      one_grid = one_grid && f.taps[l].sizes() == f.taps[0].sizes();
    }
    if (one_grid) {
      std::vector<at::Tensor> taps;
      for (const auto& t : f.taps) taps.push_back(t[0]);
      add(p + "tapped_tokens", at::stack(taps));
    }
    if (bb.kind() == "dinov2") add(p + "patch_tokens", f.taps[0][0]);  // [h·w, D], AnomalyDINO's features
    if (!set) continue;
    InctrlScores s = impl.inctrl->score(*set, f);
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

References peek_references(const std::string& path, std::string* model) {
  if (std::filesystem::is_directory(path)) fail(path, ": is a directory, not a reference-set file (.gadref)");
  ReferenceSet set = ReferenceSet::peek(path);
  if (model) *model = set.backbone_description + " (fingerprint " + set.backbone_fingerprint + ")";
  return wrap(std::move(set));
}

const ReferenceSet& reference_set(const References& refs) { return set_of(refs); }

std::vector<ScoreRecord> score_zero_shot(Detector& detector, size_t n, const std::function<std::string(size_t)>& name_of,
                                         const std::function<Image(size_t)>& load, const ScoreOptions& options) {
  return detector.impl().score_zero_shot(n, options, name_of, load);
}

int64_t image_encodes(const Detector& detector) { return detector.impl().backbone().image_encodes(); }
int64_t text_encodes(const Detector& detector) { return detector.impl().backbone().text_encodes(); }

}  // namespace gad
