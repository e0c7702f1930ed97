#include "clip/clip_model.h"

#include <cmath>
#include <limits>

#include "util/error.h"

namespace gad {
namespace {

LayerNorm load_ln(Weights& w, const std::string& p, int64_t width) {
  return {w.take(p + ".weight", {width}), w.take(p + ".bias", {width})};
}

ResidualBlock load_block(Weights& w, const std::string& p, int64_t width, int64_t mlp, int heads, bool quick_gelu) {
  ResidualBlock b;
  b.ln_1 = load_ln(w, p + "ln_1", width);
  b.ln_2 = load_ln(w, p + "ln_2", width);
  b.in_proj = {w.take(p + "attn.in_proj_weight", {3 * width, width}), w.take(p + "attn.in_proj_bias", {3 * width})};
  b.out_proj = {w.take(p + "attn.out_proj.weight", {width, width}), w.take(p + "attn.out_proj.bias", {width})};
  b.c_fc = {w.take(p + "mlp.c_fc.weight", {mlp, width}), w.take(p + "mlp.c_fc.bias", {mlp})};
  b.c_proj = {w.take(p + "mlp.c_proj.weight", {width, mlp}), w.take(p + "mlp.c_proj.bias", {width})};
  b.heads = heads;
  b.quick_gelu = quick_gelu;
  return b;
}

}  // namespace

void Linear::use_bf16(bool on) {
  weight_bf16 = on ? weight.to(at::kBFloat16) : at::Tensor();
  bias_bf16 = on && bias.defined() ? bias.to(at::kBFloat16) : at::Tensor();
}

void ResidualBlock::set_precision(Precision p) {
  for (Linear* l : {&in_proj, &out_proj, &c_fc, &c_proj}) l->use_bf16(p == Precision::BF16);
}

void VisionTower::set_precision(Precision p) {
  for (auto& b : blocks_) b.set_precision(p);
  conv1_bf16_ = p == Precision::BF16 ? conv1_.to(at::kBFloat16) : at::Tensor();
}

at::Tensor LayerNorm::operator()(const at::Tensor& x) const {
  return at::layer_norm(x, {weight.size(0)}, weight, bias, 1e-5);
}

at::Tensor ResidualBlock::forward(const at::Tensor& x, const at::Tensor& attn_mask) const {
  if (in_proj.weight_bf16.defined()) return forward_bf16(x, attn_mask);
  const int64_t B = x.size(0), T = x.size(1), W = x.size(2), Dh = W / heads;
  // Attention, as nn.MultiheadAttention computes it: packed QKV, q scaled before q·kᵀ.
  at::Tensor qkv = in_proj(ln_1(x)).view({B, T, 3, heads, Dh}).permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0] * (1.0 / std::sqrt(static_cast<double>(Dh)));
  at::Tensor scores = at::matmul(q, qkv[1].transpose(-2, -1));
  if (attn_mask.defined()) scores = scores + attn_mask;
  at::Tensor attn = at::matmul(at::softmax(scores, -1), qkv[2]);
  at::Tensor h = x + out_proj(attn.permute({0, 2, 1, 3}).reshape({B, T, W}));
  at::Tensor m = c_fc(ln_2(h));
  m = quick_gelu ? m * at::sigmoid(1.702 * m) : at::gelu(m);
  return h + c_proj(m);
}

// The same block with every matrix product, the softmax and the GELU in bf16. The residual
// stream and both LayerNorms stay float32, so rounding errors do not accumulate across blocks;
// activations are converted twice per block instead of around every product.
at::Tensor ResidualBlock::forward_bf16(const at::Tensor& x, const at::Tensor& attn_mask) const {
  const int64_t B = x.size(0), T = x.size(1), W = x.size(2), Dh = W / heads;
  const auto bf16 = at::kBFloat16;
  at::Tensor qkv = at::linear(ln_1(x).to(bf16), in_proj.weight_bf16, in_proj.bias_bf16)
                       .view({B, T, 3, heads, Dh})
                       .permute({2, 0, 3, 1, 4});
  at::Tensor q = qkv[0] * (1.0 / std::sqrt(static_cast<double>(Dh)));
  at::Tensor scores = at::matmul(q, qkv[1].transpose(-2, -1));
  if (attn_mask.defined()) scores = scores + attn_mask.to(bf16);
  at::Tensor attn = at::matmul(at::softmax(scores, -1), qkv[2]).permute({0, 2, 1, 3}).reshape({B, T, W});
  at::Tensor h = x + at::linear(attn, out_proj.weight_bf16, out_proj.bias_bf16).to(at::kFloat);
  at::Tensor m = at::linear(ln_2(h).to(bf16), c_fc.weight_bf16, c_fc.bias_bf16);
  m = quick_gelu ? m * at::sigmoid(1.702 * m) : at::gelu(m);
  return h + at::linear(m, c_proj.weight_bf16, c_proj.bias_bf16).to(at::kFloat);
}

VisionTower::VisionTower(const ClipConfig& cfg, Weights& w, const std::string& prefix)
    : cfg_(cfg.vision), embed_dim_(cfg.embed_dim) {
  const int64_t W = cfg_.width, P = cfg_.patch_size, T = cfg_.num_patches() + 1;
  conv1_ = w.take(prefix + "conv1.weight", {W, 3, P, P});
  class_embedding_ = w.take(prefix + "class_embedding", {W});
  positional_embedding_ = w.take(prefix + "positional_embedding", {T, W});
  ln_pre_ = load_ln(w, prefix + "ln_pre", W);
  ln_post_ = load_ln(w, prefix + "ln_post", W);
  proj_ = w.take(prefix + "proj", {W, cfg.embed_dim});
  for (int i = 0; i < cfg_.layers; ++i)
    blocks_.push_back(load_block(w, prefix + "transformer.resblocks." + std::to_string(i) + ".", W, cfg_.mlp_width,
                                 cfg_.heads, cfg.quick_gelu));
}

at::Tensor VisionTower::embed(const at::Tensor& pixels) const {
  const int64_t B = pixels.size(0), W = cfg_.width;
  TORCH_CHECK(pixels.dim() == 4 && pixels.size(1) == 3 && pixels.size(2) == cfg_.image_size &&
              pixels.size(3) == cfg_.image_size, "vision tower: bad input shape ", pixels.sizes());
  at::Tensor x = conv1_bf16_.defined()
                     ? at::conv2d(pixels.to(at::kBFloat16), conv1_bf16_, {}, cfg_.patch_size).to(at::kFloat)
                     : at::conv2d(pixels, conv1_, {}, cfg_.patch_size);  // [B,W,g,g]
  x = x.flatten(2).transpose(1, 2);                                       // row-major patches
  return at::cat({class_embedding_.view({1, 1, W}).expand({B, 1, W}), x}, 1) + positional_embedding_;
}

at::Tensor VisionTower::run_blocks(const at::Tensor& tokens, const std::vector<int>& tapped_layers,
                                   std::vector<at::Tensor>* taps) const {
  at::Tensor x = ln_pre_(tokens);
  for (int i = 0; i < cfg_.layers; ++i) {
    x = blocks_[i].forward(x, {});
    for (int layer : tapped_layers)
      if (layer == i + 1 && taps) taps->push_back(x.slice(1, 1).contiguous());
  }
  return x;
}

at::Tensor VisionTower::pool(const at::Tensor& block_output) const {
  return at::matmul(ln_post_(block_output.select(1, 0)), proj_);
}

VisionOutput VisionTower::forward(const at::Tensor& pixels, const std::vector<int>& tapped_layers) const {
  VisionOutput out;
  at::Tensor x = run_blocks(embed(pixels), tapped_layers, &out.taps);
  TORCH_CHECK(out.taps.size() == tapped_layers.size(), "vision tower: tapped layer out of range");
  out.cls_embedding = pool(x);
  return out;
}

TextTower::TextTower(const ClipConfig& cfg, Weights& w) : cfg_(cfg.text) {
  const int64_t W = cfg_.width, L = cfg_.context_length;
  token_embedding_ = w.take("token_embedding.weight", {cfg_.vocab_size, W});
  positional_embedding_ = w.take("positional_embedding", {L, W});
  ln_final_ = load_ln(w, "ln_final", W);
  text_projection_ = w.take("text_projection", {W, cfg.embed_dim});
  for (int i = 0; i < cfg_.layers; ++i)
    blocks_.push_back(load_block(w, "transformer.resblocks." + std::to_string(i) + ".", W, cfg_.mlp_width, cfg_.heads,
                                 cfg.quick_gelu));
  // Additive causal mask: -inf strictly above the diagonal.
  causal_mask_ = at::full({L, L}, -std::numeric_limits<float>::infinity()).triu(1);
}

at::Tensor TextTower::forward(const at::Tensor& ids) const {
  TORCH_CHECK(ids.dim() == 2 && ids.size(1) == cfg_.context_length, "text tower: bad ids shape ", ids.sizes());
  // With a causal mask, the pooled EOT position never sees the positions after it, so the
  // sequence can be cut right after the last EOT of the batch: the same result for ~5x less work
  // (InCTRL prompts are ~10 of 77 tokens).
  at::Tensor eot = ids.argmax(-1);
  const int64_t used = eot.max().item<int64_t>() + 1;
  at::Tensor cut = ids.slice(1, 0, used);
  at::Tensor x = at::embedding(token_embedding_, cut) + positional_embedding_.slice(0, 0, used);
  at::Tensor mask = causal_mask_.slice(0, 0, used).slice(1, 0, used);
  for (const auto& block : blocks_) x = block.forward(x, mask);
  x = ln_final_(x);
  at::Tensor pooled = x.gather(1, eot.view({-1, 1, 1}).expand({-1, 1, x.size(2)})).squeeze(1);
  return at::matmul(pooled, text_projection_);
}

}  // namespace gad
