// gad — generalist anomaly detection on CPUs: the C++ API.
//
// Show a Detector K normal images of something it has never seen (a References set), and it
// scores new images for how anomalous they are, with no training on that target:
//
//   gad::Detector detector;                                   // the lite model, its defaults
//   gad::References refs = detector.build_references({"good/1.png", "good/2.png"}, "tile");
//   for (const gad::ScoreRecord& r : detector.score(refs, {"query.png"}))
//     std::printf("%s %.6f\n", r.name.c_str(), r.score);
//
// This header and <gad/gad.h> (the C API) are the whole public surface: no torch, OpenCV or
// other third-party header is needed to compile against them.
//
// Thread safety: a Detector is safe to use from one thread at a time (give each thread its own,
// or serialise calls); its methods are const where they do not change the Detector, but the
// backbone's scratch memory is shared, so concurrent calls on one Detector are not allowed.
// References are immutable and may be shared by any number of threads and Detectors of the same
// model. The library never sets thread counts or signal handlers by itself: programs call
// gad::set_threads() once (the CLI's --threads does).
//
// Errors: every failure is a gad::Error whose what() is one line naming the file or option and
// the problem, and whose kind() says what sort of failure it is (a server maps it to a status).
//
// Fail-safe results: scoring never says "normal" about an image it did not score. Every image
// yields a ScoreRecord that is either ok() — a finite score, and a verdict (anomalous()) when the
// set's threshold applies — or carries an `error` for that image (unreadable, too large, a
// non-finite value anywhere in its scoring), in which case it has no score and no verdict. One
// bad image never ends a run; a bad set (a checksum mismatch, non-finite banks) is refused when
// it is loaded. Thresholds remember the scoring setup they were calibrated under and are refused
// under another one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "gad/version.h"

namespace gad {

// "0.1.0": the version of the library actually loaded (may differ from the header's macros).
const char* version();

// ---- Errors ----

enum class ErrorKind {
  InvalidArgument,  // a bad option, size or combination (HTTP 400)
  NotFound,         // a file, model or reference set that does not exist (404)
  CorruptFile,      // a file that exists but cannot be parsed: truncated, wrong shapes (400/422)
  Unsupported,      // valid input gad does not handle: a sample type, an architecture (415/400)
  Io,               // reading or writing failed: disk full, permissions (500)
  ResourceLimit,    // over a stated cap: pixels, bytes, images per call (413)
};
const char* error_kind_name(ErrorKind kind);  // "invalid argument", "not found", ...

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ErrorKind kind = ErrorKind::InvalidArgument)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// ---- Process-wide settings (for programs, not libraries) ----

// Sets the compute threads of torch and OpenBLAS for the whole process (0 = every core) and
// returns the count in use. Detectors created before or after share it.
int set_threads(int threads);

// ---- Models ----

enum class Precision { Auto, FP32, BF16 };  // Auto: bf16 when the CPU has AVX512-BF16/AMX
// How images are scored (docs/scorers.md). Auto: AnomalyDINO on DINOv2 models, else InCTRL.
// SubspaceAD: few-shot, a PCA subspace of the references' patch features. MuSc: zero-shot, no
// references — a collection of images scores itself (Detector::score_zero_shot). PatchKNN and
// ImageKNN: the training-free nearest-neighbour baselines (patch residual; 1 − max cosine of the
// global embeddings). WinCLIP (CLIP models): few-shot WinCLIP+, and zero-shot from the text prompts
// alone through score_zero_shot with ScoreOptions::class_name.
enum class Scorer { Auto, InCTRL, AnomalyDINO, SubspaceAD, MuSc, PatchKNN, ImageKNN, WinCLIP };

struct ModelOptions {
  // A weight file (OpenCLIP/InCTRL .safetensors/.pt/.bin/.pyth, DINOv2 .pth, a lite tfjs
  // model.json or .safetensors), a fetched model's name (e.g. "vit-b-16-plus-240"), or empty /
  // "lite" for the installed lite model.
  std::string model;
  std::string config;  // CLIP architecture name or JSON file; empty = the model's default
  // InCTRL adapter + heads: empty = those in the model file (if any), "none", "lite" (the heads
  // shipped for the lite model) or a file.
  std::string heads;
  Precision precision = Precision::Auto;
  Scorer scorer = Scorer::Auto;  // how new reference sets score; a loaded set keeps its own
  bool rotate = false;           // AnomalyDINO: add each reference rotated by 45, ..., 315 degrees
  // The scorer's options as a JSON object (keys per scorer in docs/scorers.md, e.g. SubspaceAD
  // {"image_res": 448, "pca_ev": 0.99}); "" = the papers' defaults. Unknown keys and values out
  // of range are refused naming the key; a saved set keeps the options it was built with.
  std::string scorer_options;
  // Lite model patch taps; empty = its default, or the taps of the first saved set loaded.
  std::vector<std::string> lite_taps;
  int resolution = 0;                  // DINOv2: smaller image edge in px; 0 = 448
  int64_t max_pixels = 40'000'000;     // largest image accepted (width x height), checked before decoding
};

// ---- Images in memory ----

// Pixels owned by the caller, row-major, interleaved: 1 (gray), 3 (RGB) or 4 (RGBA) channels of
// 8-bit or 16-bit samples (16-bit keep their high byte, as gad does for 16-bit files).
struct ImageView {
  const void* data = nullptr;
  int width = 0, height = 0, channels = 3;
  int bits = 8;            // 8 or 16
  size_t row_bytes = 0;    // bytes from one row to the next; 0 = width * channels * bits / 8
  std::string name;        // used in results and error messages; "" = "image <index>"
};

// ---- Reference sets ----

// What a score depends on besides the images: "model" and "heads" fingerprints, "scorer",
// "taps", "views", "resolution" (and "precision", which moves scores by ~0.01 only). Map
// settings are not in it: they shape the maps, never the score.
using ScoringSetup = std::map<std::string, std::string>;

struct Threshold {
  double value = 0;    // anomalous = score > value
  double far = 0;      // requested false-alarm rate on normal images
  std::string method;  // "conformal-heldout" | "conformal-leave-one-out"
  int64_t n = 0;       // normal scores it was computed from
  std::string time;    // when, UTC "YYYY-MM-DDTHH:MM:SSZ" ("" in files written before it was kept)
  ScoringSetup setup;  // the setup the normals were scored under ({} in files written before)
  // The largest patch-map value over the calibration normals: the top of the colour scale that
  // makes overlays comparable across images (0 when unknown).
  double map_top = 0;
};

// "" when scores made under `now` may use a threshold calibrated under `calibrated`; otherwise
// what differs, e.g. "heads: 3f2a… then, none now". Precision is not compared (it moves scores by
// ~0.01 only); keys a threshold did not record (older files) are not compared either.
std::string setup_difference(const ScoringSetup& calibrated, const ScoringSetup& now);

struct CalibrationOptions {
  double far = 0.05;
  // Fewer normals than `far` needs (⌈1/far⌉ − 1) is an error unless this is set; then the
  // threshold is the largest normal score plus a margin, and a warning says so.
  bool allow_few = false;
};

struct RefHandle;  // internal

// K normal images encoded once (patch banks, global embeddings, text prior), optionally with a
// calibrated threshold. Immutable; copies share the same tensors.
class References {
 public:
  References() = default;
  bool empty() const { return !handle_; }
  explicit operator bool() const { return handle_ != nullptr; }
  int64_t k() const;
  std::string class_name() const;
  std::string scorer() const;  // "inctrl" | "anomalydino"
  std::optional<Threshold> threshold() const;
  std::vector<Threshold> threshold_history() const;  // every calibration, oldest first
  std::vector<std::string> sources() const;          // the reference images, as given
  std::vector<std::string> taps() const;             // lite patch taps it was built with ({} otherwise)
  // "verified" (a saved set whose checksum matched), "built" (made in this process) or
  // "unverified" (written before sets carried a checksum).
  std::string integrity() const;
  std::string summary() const;  // "class 'tile', K = 4, text prior, scorer inctrl"
  size_t memory_bytes() const;  // tensor memory held
  void save(const std::string& path) const;  // a .gadref file (atomically replaced)
  std::string to_bytes() const;              // the same bytes, for a database
  References with_threshold(const Threshold& t) const;  // a calibrated copy

  // Internal: the engine's handle (not part of the stable API).
  explicit References(std::shared_ptr<const RefHandle> h) : handle_(std::move(h)) {}
  const std::shared_ptr<const RefHandle>& handle() const { return handle_; }

 private:
  std::shared_ptr<const RefHandle> handle_;
};

// ---- Results ----

// How a map's grid was cut from the image (a Result's maps are on the network's patch grid).
struct CropGeometry {
  int src_w = 0, src_h = 0;
  int resized_w = 0, resized_h = 0;
  int crop_left = 0, crop_top = 0;
  int size = 0;
  int crop_w = 0, crop_h = 0;  // a non-square window (DINOv2); 0 = size x size
  // AnomalyDINO's dists2map: the grid is stretched over the whole original image (ignoring the
  // few pixels the crop dropped) and smoothed there with σ in original-image pixels.
  bool stretch_to_image = false;
  int window_w() const { return crop_w ? crop_w : size; }
  int window_h() const { return crop_h ? crop_h : size; }
};

// A float map in the image's own pixels, row-major (height rows of width values).
struct ImageMap {
  int width = 0, height = 0;
  std::vector<float> values;
};

// One scored image: ok() with a finite score, or an error for this image and no score.
struct ScoreRecord {
  std::string path;   // the file, or the ImageView's name
  std::string error;  // why this image has no score (one line); empty when it was scored
  ErrorKind error_kind = ErrorKind::InvalidArgument;  // what sort of failure `error` is
  bool ok() const { return error.empty(); }
  double score = 0, s_patch = 0, s_img = 0, s_text = 0, s_hol = 0;
  // Which sub-scores the model has: s_text (CLIP), s_hol (any heads), s_img (InCTRL's image head;
  // the lite statistics head has none).
  bool has_text = false, has_heads = false, has_img = false;
  double ms = 0;                             // wall time per image (batch time / batch size)
  std::vector<float> residual_map;  // row-major patch grid, `grid` columns: InCTRL's M, AnomalyDINO's distances
  std::vector<float> holistic_map;  // M + s_text + s_img (InCTRL's head input); empty without heads
  int grid = 0;                     // columns of the grid maps (rows = residual_map.size() / grid)
  std::optional<double> threshold;  // the set's threshold, when it is calibrated and applies
  // Where `threshold` came from when it is not the set's calibration: zero-shot scoring has no
  // normals, so its verdict is a stated rule over the collection ("robust-z>3.5").
  std::string verdict_rule;
  CropGeometry geometry;            // how the network input was cut from the image
  ImageMap map;                     // the map ScoreOptions asked for, in image pixels (else empty)
  // A verdict only for a scored image under a threshold: never "normal" without a score.
  std::optional<bool> anomalous() const {
    return ok() && threshold ? std::optional<bool>(score > *threshold) : std::nullopt;
  }
};

enum class MapKind { None, Patch, Holistic };  // Holistic needs heads

struct ScoreOptions {
  int batch = 8;                  // images per forward pass (results do not depend on it)
  MapKind map = MapKind::None;    // also return Result::map
  double map_sigma = 4.0;         // Gaussian smoothing of the map, px at a 240 px input (0..kMaxMapSigma)
  // false: scores without a verdict, even when the set's threshold was calibrated under another
  // scoring setup (which is otherwise an error).
  bool use_threshold = true;
  // Asked before each batch; when it returns true the images not yet scored get an error record
  // ("not scored: interrupted") and scoring returns. Programs wire it to their signal handling.
  std::function<bool()> interrupted;
  // Zero-shot verdicts (with use_threshold): an image is anomalous when its robust z-score over
  // the collection, (score − median) / (1.4826 · MAD), exceeds this.
  double zero_shot_z = 3.5;
  // Zero-shot WinCLIP: the object's name in its text prompts (e.g. "bottle"); unused otherwise.
  std::string class_name;
};
constexpr double kMaxMapSigma = 64.0;

// A grid map (`grid_w` columns) in the image's own pixels: the crop undone, bilinear, then a
// Gaussian of σ = sigma_at_240 px at a 240 px input. With geometry.stretch_to_image (DINOv2),
// AnomalyDINO's dists2map: the grid resized to the whole image, σ in image pixels (scipy's
// gaussian_filter: reflected border, radius 4σ).
ImageMap map_to_image(const std::vector<float>& grid_map, int grid_w, const CropGeometry& geometry,
                      double sigma_at_240 = 4.0);

// The JSON object `gad score` prints for a record, without "path": score, s_patch when the scorer
// gives a map, s_img / s_text / s_hol when the model has them, "anomalous" when a verdict applies, ms.
std::string to_json(const ScoreRecord& record);

// ---- Image lists ----

// The image files `files_or_dirs` name: files as given, directories listed recursively and sorted
// by path (gad's image extensions; hidden files and folders — dot-names, AppleDouble "._*" — are
// skipped). Throws when a path is missing or nothing is found.
std::vector<std::string> list_images(const std::vector<std::string>& files_or_dirs);
// K of `paths` drawn by a partial Fisher-Yates shuffle driven by std::mt19937_64(seed) (the same
// on every machine; the CLI's --k/--seed).
std::vector<std::string> draw_references(const std::vector<std::string>& paths, int k, uint64_t seed);

// ---- The detector ----

class Detector {
 public:
  explicit Detector(const ModelOptions& options = {});
  ~Detector();
  Detector(Detector&&) noexcept;
  Detector& operator=(Detector&&) noexcept;
  Detector(const Detector&) = delete;
  Detector& operator=(const Detector&) = delete;

  std::string describe() const;     // backbone, heads, precision
  std::string fingerprint() const;  // of the backbone weights; reference sets record it
  bool has_heads() const;
  // New sets need a class name (InCTRL's text prior, CLIP and lite models).
  bool needs_class_name() const;
  // The scorer new sets get and its resolved options, e.g. `subspacead {"image_res":672,...}`.
  std::string scorer_summary() const;
  int64_t max_pixels() const;

  // Reference sets from K >= 1 normal images (files, or pixels in memory), from an InCTRL
  // few-shot prompt file, or from a saved set (checked against this model's fingerprint).
  References build_references(const std::vector<std::string>& paths, const std::string& class_name = "");
  References build_references(const std::vector<ImageView>& images, const std::string& class_name = "");
  References build_references_from_prompts(const std::string& prompt_file, const std::string& class_name);
  // A saved set: its checksum is verified (a mismatch is a CorruptFile error naming the file; sets
  // written before checksums load as "unverified"), its banks checked finite, its model checked
  // against this one. A lite set built with other taps switches this detector to those taps
  // unless ModelOptions::lite_taps were given.
  References load_references(const std::string& path);
  References references_from_bytes(const std::string& bytes, const std::string& name = "reference set") const;

  // What scores of `refs` depend on under this detector (see ScoringSetup).
  ScoringSetup scoring_setup(const References& refs) const;

  // A calibrated copy of `refs`: the threshold that flags at most `far` of normal images, from
  // held-out normal images (files or pixels; references themselves are refused), or with no
  // normals from leave-one-out over the references (needs K >= 2; InCTRL sets on CLIP or lite
  // models). The threshold records this detector's scoring setup and joins the set's history.
  // `warning` receives a line when allow_few let too few normals through.
  References calibrate(const References& refs, const std::vector<std::string>& normal_paths,
                       const CalibrationOptions& options = {}, std::string* warning = nullptr);
  References calibrate(const References& refs, const std::vector<ImageView>& normals,
                       const CalibrationOptions& options = {}, std::string* warning = nullptr);
  // The same from normal scores computed elsewhere (a server scores uploads in its own queue).
  References calibrate_scores(const References& refs, const std::vector<double>& normal_scores,
                              const std::string& method, const CalibrationOptions& options = {},
                              std::string* warning = nullptr, double map_top = 0);
  // The final score of each reference against a set of the other K − 1 (leave-one-out).
  std::vector<double> leave_one_out_scores(const References& refs);

  // Scores images; results in input order, one per input, each ok() or with its error. Throws
  // only for what concerns the whole call: bad options, an empty set, a threshold calibrated
  // under another setup (unless options.use_threshold is false). The streaming form calls
  // `on_result` per image as its batch finishes, so a long list never holds more than one batch.
  std::vector<ScoreRecord> score(const References& refs, const std::vector<std::string>& paths,
                            const ScoreOptions& options = {});
  void score(const References& refs, const std::vector<std::string>& paths, const ScoreOptions& options,
             const std::function<void(const ScoreRecord&)>& on_result);
  std::vector<ScoreRecord> score(const References& refs, const std::vector<ImageView>& images,
                            const ScoreOptions& options = {});

  // Zero-shot (MuSc): the images score each other, no references. Every image yields a record
  // in input order; one that cannot be read gets its error and the others are scored without
  // it. Throws when fewer images remain than the method needs (5 with the defaults), for bad
  // options, or when interrupted (nothing is scored then: each score depends on every image).
  // With options.use_threshold each record carries the robust-z verdict (verdict_rule).
  std::vector<ScoreRecord> score_zero_shot(const std::vector<std::string>& paths, const ScoreOptions& options = {});
  std::vector<ScoreRecord> score_zero_shot(const std::vector<ImageView>& images, const ScoreOptions& options = {});

  struct Impl;  // internal
  Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace gad
