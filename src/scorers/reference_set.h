// ReferenceSet — what every scorer keeps of the K normal images, computed once: the normalised
// patch banks per tapped layer (InCTRL, AnomalyDINO), scorer state such as SubspaceAD's subspace,
// the raw global embeddings of the references and (CLIP) InCTRL's text prior. Scoring with a set
// never touches the text tower or the reference images.
//
// File format (".gadref"): safetensors with tensors `bank.<l>` [K·P_l, C_l], `globals` [K, D],
// optional `text_prior` [2, D], and `__metadata__.gad` holding JSON: format, backbone kind and
// fingerprint, class name, K, source paths with sha256, preprocessing, and (after `gad refs
// calibrate`) "threshold": {"value", "far", "method", "n", "time", "setup", "map_top"} and
// "thresholds", every calibration oldest first. Files without it load as uncalibrated.
// "scorer" and "views" (absent in older files: inctrl, 1) say how the set is used, with
// "scorer_options" (the resolved options; {} when absent) and tensors `state.<name>` for scorer
// state beyond the banks (SubspaceAD's PCA; such sets have no banks); "taps" the lite patch taps
// it was built with.
//
// Integrity: `__metadata__.gad_sha256` is a sha256 over the metadata JSON and every tensor's
// name, dtype, shape and bytes, so a flipped byte anywhere in the payload is a CorruptFile error
// on load, not a set that silently scores NaN. Files written before it load as "unverified".
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "io/safetensors.h"
#include "inctrl/calibration.h"

namespace gad {

struct ReferenceSource {
  std::string path, sha256;
};

// InCTRL's released few-shot prompt sets (`fs_samples/<dataset>/<K>/<category>.pt`): a torch.save
// of K images already preprocessed for the backbone, as a list or tuple of [3,H,W] float tensors
// or one [K,3,H,W] tensor. They go to the backbone as they are, so H = W must equal the
// backbone's input size. Sources are "FILE#i" with the sha256 of the whole file.
struct PromptFile {
  std::vector<PixelTensor> pixels;
  std::vector<ReferenceSource> sources;
};
PromptFile read_prompt_file(const std::string& path, int64_t input_size);

struct ReferenceSet {
  std::string class_name;
  std::string backbone_kind, backbone_fingerprint, backbone_description;
  std::vector<ReferenceSource> sources;
  std::vector<at::Tensor> banks;  // per tap: [K*P_l, C_l], rows L2-normalised, prompt-major
  std::vector<at::Tensor> banks_bf16;  // the same in bf16, made at build/load for bf16 backbones only
  at::Tensor globals;             // [K, D]
  at::Tensor text_prior;          // [2, D] (normal, anomaly), or undefined without a text tower
  std::optional<Threshold> threshold;  // decision threshold on the final score, when calibrated
  std::vector<Threshold> threshold_history;  // every calibration, oldest first (the last = threshold)
  std::vector<std::string> taps;  // lite patch taps the banks come from; {} for other backbones
  std::string integrity = "built";  // built | verified | unverified (see above)
  std::string scorer = "inctrl";  // how queries are scored against it: inctrl | anomalydino
  int64_t views = 1;              // encoded views per reference image (8 with AnomalyDINO's rotations)
  std::string scorer_options = "{}";  // the scorer's resolved options (JSON object)
  std::map<std::string, at::Tensor> state;  // scorer state beyond banks (SubspaceAD: pca_mean, ...)

  int64_t k() const { return globals.defined() ? globals.size(0) / views : 0; }

  // Encodes the references (one batch; one at a time when their sizes differ, as DINOv2 inputs
  // do, the banks holding every patch) and, when the backbone has one, the text prior.
  // `with_text` = false skips the text prior (scorers that do not use it need no class name).
  static ReferenceSet build(const Backbone& backbone, const std::vector<PixelTensor>& images,
                            const std::vector<ReferenceSource>& sources, const std::string& class_name,
                            bool with_text = true);
  // The same from already-encoded references (`features` batch = K) and an optional text prior.
  static ReferenceSet from_features(const Backbone& backbone, const Features& features, at::Tensor text_prior,
                                    const std::vector<ReferenceSource>& sources, const std::string& class_name);
  // An empty set that records `backbone`, the sources and the class (scorers fill in the rest).
  static ReferenceSet made_with(const Backbone& backbone, const std::vector<ReferenceSource>& sources,
                                const std::string& class_name);
  void save(const std::string& path) const;
  std::string to_bytes() const;  // the file's bytes, without a file
  // Loads, verifies the checksum and the banks, and checks that the set was made with
  // `backbone` (same fingerprint).
  static ReferenceSet load(const std::string& path, const Backbone& backbone);
  // The same from a file's bytes (a database blob); `name` names the set in errors.
  static ReferenceSet from_bytes(const std::string& bytes, const std::string& name, const Backbone& backbone);
  // The same without a model (`gad refs show`): checksum and banks verified, model not checked.
  static ReferenceSet peek(const std::string& path);
  // The `taps` a saved set records, read from its metadata alone ({} when it records none).
  static std::vector<std::string> saved_taps(const std::string& path);
  // A calibrated copy: `t` becomes the threshold and joins the history.
  ReferenceSet with_threshold(const Threshold& t) const;

 private:
  static ReferenceSet read(const std::string& path, const SafetensorsContents& contents, const Backbone* backbone);
  std::pair<RawTensorList, std::map<std::string, std::string>> contents() const;
};

// Reference `k` of a set as a query against the other K − 1 (leave-one-out calibration, the
// references' own residuals in `gad bench --dump-maps`): its bank rows become the query's taps
// (already normalised, which the patch residual does anyway) and its global the query's global.
// Needs K ≥ 2 and one view per reference; the banks split into K equal blocks, so fixed-grid
// backbones only.
struct HeldOutReference {
  Features query;
  ReferenceSet rest;
};
HeldOutReference hold_out_reference(const ReferenceSet& refs, int64_t k);

}  // namespace gad
