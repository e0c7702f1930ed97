// ClipBackbone — OpenCLIP ViT as a gad Backbone: CLS embedding as the global feature, the
// InCTRL-tapped block outputs as patch tokens, and the text tower for InCTRL's text prior.
// Requests: chosen block outputs (no final norm: CLIP's ln_post is for the CLS token) and window
// embeddings (WinCLIP), on the native input.
#pragma once

#include <memory>
#include <optional>

#include "backbone/backbone.h"
#include "clip/clip_model.h"
#include "clip/config.h"
#include "clip/tokenizer.h"
#include "clip/prompts.h"

namespace gad {

// The patches (0-based, row-major) of every size x size window of a grid x grid patch grid,
// stride 1, windows in row-major order: [n_windows, size²]. FeatureRequest::windows' order.
at::Tensor window_patches(int grid, int size);

class ClipBackbone : public Backbone {
 public:
  // Takes the visual.* and text keys from `w` (checked against `cfg`).
  ClipBackbone(const ClipConfig& cfg, Weights& w);

  std::string kind() const override { return "clip"; }
  std::string description() const override;
  std::string fingerprint() const override { return fingerprint_; }
  int64_t embed_dim() const override { return cfg_.embed_dim; }
  int64_t grid() const override { return cfg_.vision.grid(); }
  int64_t input_size() const override { return cfg_.vision.image_size; }
  PixelTensor preprocess(const Image& image) const override;
  void set_precision(Precision p) override {
    vision_.set_precision(p);
    precision_ = p;
  }
  Precision precision() const override { return precision_; }
  bool has_text() const override { return true; }
  at::Tensor text_prior(const std::string& class_name) const override;

  const ClipConfig& config() const { return cfg_; }
  const VisionTower& vision() const { return vision_; }
  const TextTower& text() const { return text_; }
  // Raw per-sentence text embeddings [N, D] (not normalised).
  at::Tensor encode_sentences(const std::vector<std::string>& sentences) const;
  // [2, D] normal/anomaly features of a sentence ensemble: normalise each sentence, average the
  // group, normalise again (spec §2.5).
  at::Tensor text_features(const PromptSentences& sentences) const;

 protected:
  Features encode_impl(const at::Tensor& pixels) const override;
  PixelTensor preprocess_requested(const Image& image, const FeatureRequest& request) const override;
  Features encode_requested(const at::Tensor& pixels, const FeatureRequest& request) const override;

 private:
  ClipConfig cfg_;
  VisionTower vision_;
  TextTower text_;
  Tokenizer tokenizer_;
  std::string fingerprint_;
  Precision precision_ = Precision::FP32;
};

}  // namespace gad
