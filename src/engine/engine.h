// Engine — the whole pipeline behind one small, torch-free interface:
//   image -> preprocess -> backbone -> features -> InCTRL scorer -> ScoreRecord.
// The CLI (and any embedding program) talks only to this header.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "eval/calibration.h"
#include "image/image.h"
#include "image/preprocess.h"
#include "model/load_model.h"

namespace gad {

struct EngineOptions {
  ModelFiles files;
  int threads = 0;                // 0 = every core
  std::string precision = "auto";  // fp32 | bf16 | auto (bf16 when the CPU has AVX512-BF16/AMX)
  // How new reference sets score queries: inctrl | anomalydino | auto (anomalydino on DINOv2,
  // else inctrl). A loaded set keeps the scorer it was built with.
  std::string scorer = "auto";
  bool rotate = false;  // anomalydino: add each reference rotated by 45, 90, ..., 315 degrees
  int64_t max_pixels = kDefaultMaxPixels;  // largest image decoded (width x height)
};

struct ScoreRecord {
  std::string path;
  double score = 0, s_patch = 0, s_img = 0, s_text = 0, s_hol = 0;
  bool has_text = false, has_heads = false;
  double ms = 0;                    // wall time per image (batch time / batch size)
  std::vector<float> residual_map;  // row-major grid, `grid` columns: InCTRL's M, AnomalyDINO's distances
  std::vector<float> holistic_map;  // M + s_text + s_img (InCTRL's head input); empty without heads
  int grid = 0;  // columns of the maps' grid (rows = residual_map.size() / grid)
  std::optional<double> threshold;  // the reference set's calibrated threshold; anomalous = score > it
  CropGeometry geometry;  // how the network input was cut from the image (for maps)
};

// An immutable, built reference set that does not belong to any Engine's current references.
// Shareable between threads (read-only); usable with any Engine of the same model.
struct RefHandle;

struct ImageSource {
  std::string name, sha256;  // recorded in the set's metadata only; never opened
};

struct InspectRecord {
  std::string path;
  int width = 0, height = 0;
  double global_norm = 0, ms = 0;
};

class Engine {
 public:
  explicit Engine(const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  std::string describe() const;  // backbone, heads source, threads
  bool has_heads() const;
  bool needs_class_name() const;  // new sets need a class name (the inctrl scorer's text prior)

  // Reference sets: build from images + class name, or load one; save the current one.
  void build_references(const std::vector<std::string>& image_paths, const std::string& class_name);
  // From an InCTRL prompt file (a torch.save of K preprocessed images; see read_prompt_file).
  void build_references_from_prompts(const std::string& prompt_file, const std::string& class_name);
  void load_references(const std::string& path);
  void save_references(const std::string& path) const;
  std::string references_summary() const;
  // Calibration of the current set: the threshold it carries (saved with it), and the final score
  // of each reference against a set of the other K − 1 (needs K >= 2; from the stored features,
  // no image is re-read).
  std::optional<Threshold> threshold() const;
  void set_threshold(const Threshold& t);
  std::vector<double> leave_one_out_scores();

  // Scores images in batches; `on_record` is called once per image, in input order.
  void score(const std::vector<std::string>& paths, int batch, const std::function<void(const ScoreRecord&)>& on_record);

  // Encodes each image alone; with `dump_path` writes the tensors documented in `gad inspect
  // --help` to one safetensors file (and, when references are set, the score chain).
  std::vector<InspectRecord> inspect(const std::vector<std::string>& paths, const std::string& dump_path);

  // Handle-based API (used by `gad serve`): none of these touch the current references above.
  // Each call is safe from one thread at a time per Engine.
  std::string fingerprint() const;  // of the backbone weights; reference sets record it
  // The backbone's input transform of one image; callers that hold many images keep only this
  // (a few hundred KB) instead of the full-resolution pixels.
  PixelTensor preprocess(const Image& image) const;
  // The preprocessed views of one reference image (1, or 8 with `rotate`); build_reference_handle
  // takes the views of every reference, in order.
  std::vector<PixelTensor> reference_views(const Image& image) const;
  std::shared_ptr<const RefHandle> build_reference_handle(const std::vector<PixelTensor>& pixels,
                                                          const std::vector<ImageSource>& sources,
                                                          const std::string& class_name);
  // The .gadref (safetensors) bytes of a handle, and back (checks the model fingerprint).
  std::string serialize_references(const RefHandle& refs) const;
  std::shared_ptr<const RefHandle> references_from_bytes(const std::string& bytes) const;
  // A copy of `refs` carrying the threshold `t` (the tensors are shared, not copied).
  static std::shared_ptr<const RefHandle> with_threshold(const RefHandle& refs, const Threshold& t);
  // Bytes of tensor memory the set holds (fp32 and bf16 banks, globals, text prior).
  static size_t memory_bytes(const RefHandle& refs);
  // Scores preprocessed images against `refs` in batches of `batch`; records in input order.
  std::vector<ScoreRecord> score_pixels(const RefHandle& refs, const std::vector<PixelTensor>& pixels, int batch);

  int64_t image_encodes() const;  // backbone image encodes so far (tests use it)
  int64_t text_encodes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gad
