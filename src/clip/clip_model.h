// The OpenCLIP ViT towers InCTRL is built on, as plain tensors and functional ATen ops.
//
// Vision: patch conv (no bias) -> [CLS] + patches (row-major) + positional embedding -> ln_pre ->
// pre-LN residual blocks (MHA, exact GELU MLP) -> ln_post on CLS only -> proj. The raw residual
// stream after chosen blocks (1-based, CLS dropped, no ln_post/proj) is returned too: InCTRL
// compares those tokens. Text: token + positional embedding -> causal blocks -> ln_final -> the
// EOT position (argmax of the ids) -> text_projection. Neither tower normalises its output.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "clip/config.h"
#include "backbone/precision.h"
#include "model/weights.h"

namespace gad {

// Linear layer. `use_bf16` keeps a bf16 copy of the weights for the blocks' bf16 path (made once,
// at load); operator() always computes in float32.
struct Linear {
  at::Tensor weight, bias;  // [out,in], [out] (bias may be undefined)
  at::Tensor weight_bf16, bias_bf16;
  at::Tensor operator()(const at::Tensor& x) const { return at::linear(x, weight, bias); }
  void use_bf16(bool on);
};


struct LayerNorm {
  at::Tensor weight, bias;
  at::Tensor operator()(const at::Tensor& x) const;
};

// One pre-LN transformer block: x + MHA(ln_1(x)), then x + MLP(ln_2(x)).
struct ResidualBlock {
  LayerNorm ln_1, ln_2;
  Linear in_proj, out_proj, c_fc, c_proj;
  int heads = 1;
  bool quick_gelu = false;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& attn_mask) const;  // x: [B,T,W]
  void set_precision(Precision p);

 private:
  at::Tensor forward_bf16(const at::Tensor& x, const at::Tensor& attn_mask) const;
};

struct VisionOutput {
  at::Tensor cls_embedding;       // [B, embed_dim], ln_post(CLS)·proj, not normalised
  std::vector<at::Tensor> taps;   // per requested layer: [B, patches, width], CLS dropped
};

class VisionTower {
 public:
  VisionTower(const ClipConfig& cfg, Weights& w, const std::string& prefix = "visual.");
  // pixels: [B,3,S,S] float32, preprocessed. `tapped_layers` are 1-based block indices.
  VisionOutput forward(const at::Tensor& pixels, const std::vector<int>& tapped_layers) const;
  // The pieces of forward, for methods that run other token sequences (WinCLIP's windows):
  // patch conv + [CLS] + positional embedding, before ln_pre: [B, 1+P, W].
  at::Tensor embed(const at::Tensor& pixels) const;
  // ln_pre and every block over token sequences [N, T, W] (token 0 = CLS); returns the last
  // block's output, and fills `taps` with the requested block outputs (CLS dropped).
  at::Tensor run_blocks(const at::Tensor& tokens, const std::vector<int>& tapped_layers,
                        std::vector<at::Tensor>* taps) const;
  // ln_post on the CLS token, then proj: [N, embed_dim].
  at::Tensor pool(const at::Tensor& block_output) const;
  const VisionConfig& config() const { return cfg_; }
  int embed_dim() const { return embed_dim_; }
  // Converts the block weights once (bf16 copies are made here, never per call).
  void set_precision(Precision p);

 private:
  VisionConfig cfg_;
  int embed_dim_;
  at::Tensor conv1_, conv1_bf16_, class_embedding_, positional_embedding_, proj_;
  LayerNorm ln_pre_, ln_post_;
  std::vector<ResidualBlock> blocks_;
};

class TextTower {
 public:
  TextTower(const ClipConfig& cfg, Weights& w);
  // ids: [N, context] int64 (tokenizer output). Returns [N, embed_dim], not normalised.
  at::Tensor forward(const at::Tensor& ids) const;

 private:
  TextConfig cfg_;
  at::Tensor token_embedding_, positional_embedding_, text_projection_, causal_mask_;
  LayerNorm ln_final_;
  std::vector<ResidualBlock> blocks_;
};

}  // namespace gad
