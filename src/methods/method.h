// Method — one anomaly-detection method as `gad bench` compares them: scores encoded queries
// against a reference set built from K normal images. A new method is one .cpp file with a
// factory, plus one line in method.cpp's registry.
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "scorers/reference_set.h"
#include "engine/load_model.h"

namespace gad {

class Method {
 public:
  virtual ~Method() = default;
  virtual std::string name() const = 0;
  // Called once per reference draw with the references' preprocessed pixels [K,3,H,W]; methods
  // that need more than the shared features (WinCLIP's window embeddings) build it here.
  virtual void prepare(const ReferenceSet& refs, const at::Tensor& ref_pixels) {}
  // Drops what prepare() kept for `refs` (called when the draw is finished).
  virtual void forget(const ReferenceSet& refs) {}
  // Anomaly scores [B] for a batch of encoded queries (higher = more anomalous); `pixels` are the
  // queries' preprocessed pixels.
  virtual at::Tensor score(const ReferenceSet& refs, const Features& queries, const at::Tensor& pixels) const = 0;
  // Methods that score against the references plus their rotations (AnomalyDINO's augment_image)
  // get a set built from all of them.
  virtual bool wants_rotated_references() const { return false; }
};

// Names accepted by make_method, in display order.
std::vector<std::string> method_names();
// Throws gad::Error naming the method when it is unknown or cannot run on this model.
std::unique_ptr<Method> make_method(const std::string& name, const LoadedModel& model);

// Factories, one per method file.
std::unique_ptr<Method> make_inctrl_method(const LoadedModel& model);
std::unique_ptr<Method> make_patch_knn_method(const LoadedModel& model);
std::unique_ptr<Method> make_image_knn_method(const LoadedModel& model);
std::unique_ptr<Method> make_winclip_method(const LoadedModel& model);
std::unique_ptr<Method> make_anomalydino_method(const LoadedModel& model);      // anomalydino_method.cpp
std::unique_ptr<Method> make_anomalydino_rot_method(const LoadedModel& model);  // the same, rotated references
std::unique_ptr<Method> make_subspacead_method(const LoadedModel& model);
// "musc" is zero-shot: `gad bench` scores each category's test images against each other once
// (rows with K = 0), not through a Method.

}  // namespace gad
