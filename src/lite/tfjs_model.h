// TfjsModel — a TensorFlow.js *layers* model (Keras functional topology) evaluated with ATen.
//
// gad's embedded default backbone is a pretrained MobileNetV2 that only ships as a tfjs layers
// model (npm nsfwjs). This module reads such a model (model.json + weight shards, uint8/uint16
// quantised or float32 weights) or gad's converted form of it, builds the layer graph from the
// `inbound_nodes`, checks every weight's shape at load time, and runs the Keras layers it uses
// with Keras/TF semantics (NHWC weights, TF 'same' padding with the extra row/column at the
// bottom/right, BatchNormalization in inference mode, ReLU max_value). Activations are computed
// in NCHW internally; requested layer outputs come back in Keras layout (NHWC, or [B, F]).
//
// gad's converted format is one safetensors file: float32 dequantised weights under their tfjs
// names, in manifest order, plus `__metadata__`: `topology` (the model.json `modelTopology` JSON),
// `format` and provenance strings (`source`, hashes...).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "model/weights.h"

namespace gad {

class TfjsModel {
 public:
  enum class Layout { NHWC, NCHW };

  // model.json with its shards next to it (paths from the weight manifest).
  static TfjsModel load_tfjs(const std::string& model_json_path);
  // model.json text plus the concatenated shard bytes of its (single) weight group, as decoded
  // from an npm package; `source` names them in messages and provenance.
  static TfjsModel from_tfjs_memory(const std::string& model_json_text, const std::vector<uint8_t>& shard_bytes,
                                    const std::string& source);
  // gad's converted single-file format (see above); keys of InCTRL heads are left alone.
  static TfjsModel load_gad(const std::string& path);
  // Builds from gad-format metadata, taking the layer weights from `w` (other keys stay untaken,
  // so the caller can load heads from the same table and then check_all_taken()).
  static TfjsModel from_weights(Weights& w, const std::map<std::string, std::string>& metadata);
  // True for a safetensors file whose metadata holds a `topology` (never throws).
  static bool is_gad_file(const std::string& path);

  // Writes gad's format atomically; `extra` metadata is added to the model's provenance.
  void save_gad(const std::string& path, const std::map<std::string, std::string>& extra = {}) const;

  // Runs the graph on a float32 batch ([B,H,W,C] or [B,C,H,W] as `layout` says) until every layer
  // in `outputs` is computed; returns those layer outputs in Keras layout ([B,H,W,C] or [B,F]).
  std::map<std::string, at::Tensor> run(const at::Tensor& batch, const std::vector<std::string>& outputs,
                                        Layout layout) const;

  bool has_layer(const std::string& name) const;
  // Static output shape of a layer without the batch: {H, W, C} or {F}; -1 where unknown.
  std::vector<int64_t> output_shape(const std::string& layer) const;
  std::vector<int64_t> input_shape() const;  // {H, W, C}
  const std::string& name() const;           // the Keras model name
  const std::string& source() const;         // file or package it came from
  const std::map<std::string, std::string>& metadata() const;  // provenance (without topology)
  // Weights in tfjs layout by tfjs name, float32.
  const std::map<std::string, at::Tensor>& weights() const;

  struct Graph;  // layers, prepared weights and provenance (tfjs_model.cpp)

 private:
  explicit TfjsModel(std::shared_ptr<const Graph> g) : g_(std::move(g)) {}
  std::shared_ptr<const Graph> g_;
};

}  // namespace gad
