// Weights — named tensors from one weight file, with loud, precise errors.
//
// Any supported file (safetensors, or a torch.save zip archive holding a flat or wrapped state
// dict) becomes a name -> at::Tensor table. Model builders `take` the keys they need with the
// shape they expect; a missing key or a shape mismatch is an error naming the file, the key and
// both shapes. After building, `check_all_taken` reports keys nobody used, so a checkpoint for a
// different architecture cannot half-load silently (the reference loader's failure mode).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "io/raw_tensor.h"

namespace gad {

class Weights {
 public:
  // Detects the format from the file's first bytes. Float tensors are converted to float32
  // (F32 safetensors stay memory-mapped); integer tensors keep their dtype. When every key starts
  // with `module.` (checkpoints saved from DistributedDataParallel, e.g. OpenCLIP's release
  // files) the prefix is removed.
  static Weights load(const std::string& path);
  // An empty table attributed to `source` (for tests and freshly initialised models).
  explicit Weights(std::string source = "<memory>") : source_(std::move(source)) {}
  // A table that invents every key it is asked for: N(0, 0.02) floats (ones for LayerNorm-style
  // `*.weight` vectors would not matter for speed), zeros for integers. Builds random-weight
  // models for benchmarks and records an architecture's exact key list for tests.
  static Weights synthetic(uint64_t seed);

  const std::string& source() const { return source_; }
  bool has(const std::string& key) const { return tensors_.count(key) != 0; }
  std::vector<std::string> keys() const;

  // Returns the tensor for `key` and marks it used; checks its shape and dtype.
  at::Tensor take(const std::string& key, at::IntArrayRef shape, at::ScalarType dtype = at::kFloat);
  // Marks keys the engine knowingly ignores (e.g. `logit_scale`, the unused `bn1`).
  void ignore(const std::string& key);
  void ignore_prefix(const std::string& prefix);
  // Throws if any key was neither taken nor ignored.
  void check_all_taken() const;

  void insert(const std::string& key, at::Tensor t) { tensors_[key] = std::move(t); }
  const std::map<std::string, at::Tensor>& all() const { return tensors_; }

 private:
  void strip_prefix_of_every_key(const std::string& prefix);

  std::string source_;
  std::map<std::string, at::Tensor> tensors_;
  std::set<std::string> used_;
  bool synthetic_ = false;
  at::Generator generator_;
};

// A tensor over a RawTensor's bytes (no copy for float32; other float types become float32;
// integers keep their dtype). The tensor keeps the RawTensor's owner alive.
at::Tensor to_tensor(const RawTensor& raw);

// A RawTensor viewing a contiguous CPU tensor's bytes (F32, F16, BF16, F64, I64); the view keeps
// the tensor alive. Used to write tensors with write_safetensors.
RawTensor raw_view(const at::Tensor& t);

// Content fingerprint of a set of tensors (sha256 over names, shapes and the first and last 32
// values of each tensor, first 16 hex digits). Reference sets store it so they refuse to load against another model.
std::string fingerprint(const std::map<std::string, at::Tensor>& tensors);

}  // namespace gad
