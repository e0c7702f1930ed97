// DinoBackbone — Meta's DINOv2 vision transformer (the official `dinov2_vit{s,b,l}14[_reg]`
// checkpoints) as a gad Backbone, for AnomalyDINO's training-free patch matching.
//
// The architecture is read from the file: embed dim from `cls_token`, depth from the block
// count, heads = embed / 64 (true of every released DINOv2), registers from `register_tokens`,
// patch size from `patch_embed.proj.weight`. Position embeddings are interpolated to each input's
// grid as the hub models do: plain models bicubic with scale_factor (n + 0.1) / M and no antialias;
// `_reg` models bicubic to the target size with antialias (the same ATen kernels). A JSON config
// (`--config`, the constructor arguments: num_heads, interpolate_antialias, interpolate_offset)
// overrides those rules. SwiGLU models (ViT-g/14) are refused.
//
// Inputs are not square: `dino_preprocess` resizes the smaller edge to the resolution and crops
// to multiples of 14, so grid() is 0 ("per image") and every Features carries its own h x w.
// Scorers may ask for other inputs and taps (FeatureRequest): a square input, chosen hidden states
// with or without the final LayerNorm, and Hugging Face's position rule (SubspaceAD runs HF code).
// Patch tokens = last block after the final LayerNorm (AnomalyDINO's `get_intermediate_layers`),
// CLS and registers dropped; the global feature is the normalised CLS token.
#pragma once

#include <memory>
#include <string>

#include "backbone/backbone.h"
#include "model/weights.h"

namespace gad {

struct DinoConfig {
  int64_t embed_dim = 0, depth = 0, heads = 0, registers = 0, patch = 14, mlp_hidden = 0, pos_side = 0;
  bool antialias = false;
  double interpolate_offset = 0.1;
};

// Whether `w` holds a DINOv2 state dict (cls_token + blocks.0.attn.qkv.weight, no CLIP keys).
bool is_dino_weights(const Weights& w);

// Reads the architecture from `w`'s shapes, then applies `config_json` (a file) when given.
DinoConfig dino_config(const Weights& w, const std::string& config_json);

class DinoBackbone : public Backbone {
 public:
  DinoBackbone(const DinoConfig& cfg, Weights& w, int resolution);
  ~DinoBackbone() override;

  std::string kind() const override { return "dinov2"; }
  std::string description() const override;
  std::string fingerprint() const override { return fingerprint_; }
  int64_t embed_dim() const override { return cfg_.embed_dim; }
  int64_t grid() const override { return 0; }  // per image
  int64_t input_size() const override { return resolution_; }
  PixelTensor preprocess(const Image& image) const override;
  int64_t depth() const override { return cfg_.depth; }
  int64_t patch_size() const override { return cfg_.patch; }
  void set_precision(Precision p) override;
  Precision precision() const override { return precision_; }

 protected:
  Features encode_impl(const at::Tensor& pixels) const override;
  PixelTensor preprocess_requested(const Image& image, const FeatureRequest& request) const override;
  Features encode_requested(const at::Tensor& pixels, const FeatureRequest& request) const override;

 private:
  struct Weights_;
  DinoConfig cfg_;
  int resolution_;
  std::unique_ptr<Weights_> w_;
  std::string fingerprint_;
  at::Tensor positions(int64_t gh, int64_t gw, bool hf_rule) const;
  // The token sequence after the embedding (entry 0) and after each block; `keep` says which
  // entries to return (the last block's output is always returned as the final entry).
  std::vector<at::Tensor> hidden_states(const at::Tensor& pixels, bool hf_positions, const std::vector<int>& keep) const;
  Precision precision_ = Precision::FP32;
};

}  // namespace gad
