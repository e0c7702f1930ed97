#include "dino/dino_backbone.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

struct Dense {
  at::Tensor weight, bias, weight_bf16, bias_bf16;
  // x in the layer's precision (bf16 when the bf16 copies exist), result in the same.
  at::Tensor apply(const at::Tensor& x) const {
    return weight_bf16.defined() ? at::linear(x, weight_bf16, bias_bf16) : at::linear(x, weight, bias);
  }
  void use_bf16(bool on) {
    weight_bf16 = on ? weight.to(at::kBFloat16) : at::Tensor();
    bias_bf16 = on ? bias.to(at::kBFloat16) : at::Tensor();
  }
};

struct Norm {
  at::Tensor weight, bias;
  at::Tensor operator()(const at::Tensor& x) const { return at::layer_norm(x, {weight.size(0)}, weight, bias, 1e-6); }
};

struct Block {
  Norm norm1, norm2;
  Dense qkv, proj, fc1, fc2;
  at::Tensor ls1, ls2;
};

Norm load_norm(Weights& w, const std::string& p, int64_t d) { return {w.take(p + ".weight", {d}), w.take(p + ".bias", {d})}; }

Dense load_dense(Weights& w, const std::string& p, int64_t out, int64_t in) {
  return {w.take(p + ".weight", {out, in}), w.take(p + ".bias", {out}), {}, {}};
}

int64_t block_count(const Weights& w) {
  int64_t n = 0;
  while (w.has("blocks." + std::to_string(n) + ".norm1.weight")) ++n;
  return n;
}

}  // namespace

struct DinoBackbone::Weights_ {
  at::Tensor patch_w, patch_b, patch_w_bf16, cls, pos, registers;
  std::vector<Block> blocks;
  Norm norm;
};

bool is_dino_weights(const Weights& w) {
  return w.has("cls_token") && w.has("pos_embed") && w.has("patch_embed.proj.weight") && !w.has("visual.conv1.weight");
}

DinoConfig dino_config(const Weights& w, const std::string& config_json) {
  const auto& t = w.all();
  auto shape = [&](const std::string& key) {
    auto it = t.find(key);
    if (it == t.end()) fail(w.source(), ": missing key '", key, "' (not a DINOv2 checkpoint?)");
    return it->second.sizes().vec();
  };
  if (w.has("blocks.0.mlp.w12.weight") || w.has("blocks.0.mlp.w3.weight"))
    fail(w.source(), ": a SwiGLU DINOv2 model (ViT-g/14) is not supported; use dinov2_vit{s,b,l}14[_reg]");
  DinoConfig c;
  const auto cls = shape("cls_token");
  if (cls.size() != 3 || cls[0] != 1 || cls[1] != 1) fail(w.source(), ": key 'cls_token' has shape ", shape_string(cls), ", expected [1,1,D]");
  c.embed_dim = cls[2];
  if (c.embed_dim % 64 != 0) fail(w.source(), ": embed dim ", c.embed_dim, " is not a multiple of 64 (heads = embed / 64); give --config");
  c.heads = c.embed_dim / 64;
  c.depth = block_count(w);
  if (c.depth == 0) fail(w.source(), ": no transformer blocks (blocks.0.*)");
  c.patch = shape("patch_embed.proj.weight").back();
  c.mlp_hidden = shape("blocks.0.mlp.fc1.weight")[0];
  const auto pos = shape("pos_embed");
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(pos.size() == 3 ? pos[1] - 1 : 0))));
  if (pos.size() != 3 || side * side + 1 != pos[1]) fail(w.source(), ": key 'pos_embed' has shape ", shape_string(pos), ", expected [1,1+M*M,D]");
  c.pos_side = side;
  if (w.has("register_tokens")) c.registers = shape("register_tokens")[1];
  // The hub's rule: plain models keep the historical +0.1 scale-factor offset, _reg models
  // interpolate to the exact size with antialias.
  c.antialias = c.registers > 0;
  c.interpolate_offset = c.registers > 0 ? 0.0 : 0.1;
  if (config_json.empty()) return c;
  try {
    const auto j = nlohmann::json::parse(read_file_text(config_json));
    // What the file's shapes fix, a config may only confirm.
    const std::pair<const char*, int64_t> fixed[] = {
        {"embed_dim", c.embed_dim}, {"depth", c.depth}, {"num_register_tokens", c.registers}, {"patch_size", c.patch}};
    for (const auto& [key, from_file] : fixed)
      if (j.contains(key) && j[key].get<int64_t>() != from_file)
        fail(config_json, ": ", key, " = ", j[key].get<int64_t>(), " but ", w.source(), " has ", from_file);
    if (j.contains("ffn_layer") && j["ffn_layer"] != "mlp") fail(config_json, ": ffn_layer ", j["ffn_layer"].dump(), " is not supported (mlp only)");
    c.heads = j.value("num_heads", c.heads);
    c.antialias = j.value("interpolate_antialias", c.antialias);
    c.interpolate_offset = j.value("interpolate_offset", c.interpolate_offset);
  } catch (const nlohmann::json::exception& e) {
    fail(config_json, ": not a DINOv2 config (", e.what(), ")");
  }
  if (c.heads <= 0 || c.embed_dim % c.heads != 0) fail(config_json, ": num_heads ", c.heads, " does not divide ", c.embed_dim);
  return c;
}

DinoBackbone::DinoBackbone(const DinoConfig& cfg, Weights& w, int resolution)
    : cfg_(cfg), resolution_(resolution), w_(std::make_unique<Weights_>()) {
  const int64_t D = cfg.embed_dim, H = cfg.mlp_hidden;
  w_->patch_w = w.take("patch_embed.proj.weight", {D, 3, cfg.patch, cfg.patch});
  w_->patch_b = w.take("patch_embed.proj.bias", {D});
  w_->cls = w.take("cls_token", {1, 1, D});
  w_->pos = w.take("pos_embed", {1, 1 + cfg.pos_side * cfg.pos_side, D});
  if (cfg.registers) w_->registers = w.take("register_tokens", {1, cfg.registers, D});
  w.ignore("mask_token");  // used only for masked training
  for (int64_t i = 0; i < cfg.depth; ++i) {
    const std::string p = "blocks." + std::to_string(i) + ".";
    Block b;
    b.norm1 = load_norm(w, p + "norm1", D);
    b.norm2 = load_norm(w, p + "norm2", D);
    b.qkv = load_dense(w, p + "attn.qkv", 3 * D, D);
    b.proj = load_dense(w, p + "attn.proj", D, D);
    b.fc1 = load_dense(w, p + "mlp.fc1", H, D);
    b.fc2 = load_dense(w, p + "mlp.fc2", D, H);
    b.ls1 = w.take(p + "ls1.gamma", {D});
    b.ls2 = w.take(p + "ls2.gamma", {D});
    w_->blocks.push_back(std::move(b));
  }
  w_->norm = load_norm(w, "norm", D);
  std::map<std::string, at::Tensor> mine;
  for (const auto& [k, t] : w.all())
    if (k != "mask_token") mine[k] = t;
  fingerprint_ = gad::fingerprint(mine);
}

DinoBackbone::~DinoBackbone() = default;

std::string DinoBackbone::description() const {
  std::ostringstream o;
  o << "DINOv2 ViT (embed " << cfg_.embed_dim << ", depth " << cfg_.depth << ", heads " << cfg_.heads << ", "
    << cfg_.registers << " registers, patch " << cfg_.patch << "; smaller edge " << resolution_ << " px)";
  return o.str();
}

PixelTensor DinoBackbone::preprocess(const Image& image) const {
  return dino_preprocess(image, resolution_, static_cast<int>(cfg_.patch));
}

void DinoBackbone::set_precision(Precision p) {
  precision_ = p;
  const bool bf16 = p == Precision::BF16;
  for (auto& b : w_->blocks)
    for (Dense* d : {&b.qkv, &b.proj, &b.fc1, &b.fc2}) d->use_bf16(bf16);
  w_->patch_w_bf16 = bf16 ? w_->patch_w.to(at::kBFloat16) : at::Tensor();
}

// interpolate_pos_encoding (dinov2 vision_transformer.py), with (gh, gw) = (w0, h0) there; with
// `hf_rule`, Hugging Face Dinov2Embeddings: bicubic to gh x gw (antialiased for register models).
at::Tensor DinoBackbone::positions(int64_t gh, int64_t gw, bool hf_rule) const {
  const int64_t D = cfg_.embed_dim, M = cfg_.pos_side;
  at::Tensor pos = w_->pos;
  if (gh * gw == M * M && gh == gw) return pos;
  at::Tensor grid = pos.slice(1, 1).reshape({1, M, M, D}).permute({0, 3, 1, 2});
  const bool antialias = hf_rule ? cfg_.registers > 0 : cfg_.antialias;
  if (cfg_.interpolate_offset != 0 && !hf_rule) {
    const double sy = (gh + cfg_.interpolate_offset) / M, sx = (gw + cfg_.interpolate_offset) / M;
    const auto oh = static_cast<int64_t>(std::floor(M * sy)), ow = static_cast<int64_t>(std::floor(M * sx));
    grid = antialias ? at::_upsample_bicubic2d_aa(grid, {oh, ow}, false, sy, sx)
                     : at::upsample_bicubic2d(grid, {oh, ow}, false, sy, sx);
  } else {
    grid = antialias ? at::_upsample_bicubic2d_aa(grid, {gh, gw}, false) : at::upsample_bicubic2d(grid, {gh, gw}, false);
  }
  TORCH_CHECK(grid.size(2) == gh && grid.size(3) == gw, "DINOv2 position embedding: interpolated to ", grid.sizes());
  return at::cat({pos.slice(1, 0, 1), grid.permute({0, 2, 3, 1}).reshape({1, gh * gw, D})}, 1);
}

std::vector<at::Tensor> DinoBackbone::hidden_states(const at::Tensor& pixels, bool hf_positions,
                                                    const std::vector<int>& keep) const {
  const int64_t B = pixels.size(0), D = cfg_.embed_dim, P = cfg_.patch;
  const int64_t gh = pixels.size(2) / P, gw = pixels.size(3) / P;
  at::Tensor x = w_->patch_w_bf16.defined()
                     ? at::conv2d(pixels.to(at::kBFloat16), w_->patch_w_bf16, w_->patch_b.to(at::kBFloat16), P).to(at::kFloat)
                     : at::conv2d(pixels, w_->patch_w, w_->patch_b, P);
  x = at::cat({w_->cls.expand({B, 1, D}), x.flatten(2).transpose(1, 2)}, 1);
  x = x + positions(gh, gw, hf_positions);
  if (cfg_.registers) x = at::cat({x.slice(1, 0, 1), w_->registers.expand({B, cfg_.registers, D}), x.slice(1, 1)}, 1);
  std::vector<at::Tensor> out;
  auto kept = [&](int entry) { return std::find(keep.begin(), keep.end(), entry) != keep.end(); };
  if (kept(0)) out.push_back(x);
  const int64_t T = x.size(1), Dh = D / cfg_.heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(Dh));
  // In bf16 mode every product, the softmax and the GELU run in bf16 (at 448 px the T x T
  // attention is a third of the work); the residual stream and the LayerNorms stay float32.
  const bool bf16 = precision_ == Precision::BF16;
  auto in = [&](const at::Tensor& t) { return bf16 ? t.to(at::kBFloat16) : t; };
  auto out_ = [&](const at::Tensor& t) { return bf16 ? t.to(at::kFloat) : t; };
  for (size_t i = 0; i < w_->blocks.size(); ++i) {
    const Block& b = w_->blocks[i];
    at::Tensor qkv = b.qkv.apply(in(b.norm1(x))).view({B, T, 3, cfg_.heads, Dh}).permute({2, 0, 3, 1, 4});
    at::Tensor attn = at::softmax(at::matmul(qkv[0] * scale, qkv[1].transpose(-2, -1)), -1);
    x = x + b.ls1 * out_(b.proj.apply(at::matmul(attn, qkv[2]).transpose(1, 2).reshape({B, T, D})));
    x = x + b.ls2 * out_(b.fc2.apply(at::gelu(b.fc1.apply(in(b.norm2(x))))));
    if (i + 1 < w_->blocks.size() && kept(static_cast<int>(i) + 1)) out.push_back(x);
  }
  out.push_back(x);
  return out;
}

Features DinoBackbone::encode_impl(const at::Tensor& pixels) const {
  const at::Tensor x = w_->norm(hidden_states(pixels, false, {}).back());
  Features f;
  f.global = x.select(1, 0).contiguous();
  f.taps = {x.slice(1, 1 + cfg_.registers).contiguous()};
  f.grid_h = pixels.size(2) / cfg_.patch;
  f.grid_w = pixels.size(3) / cfg_.patch;
  return f;
}

PixelTensor DinoBackbone::preprocess_requested(const Image& image, const FeatureRequest& request) const {
  return request.square > 0 ? square_preprocess(image, request.square, static_cast<int>(cfg_.patch), request.resample)
                            : preprocess(image);
}

// The requested hidden states in the order asked, patch tokens only; the global feature is the
// final-normed CLS token, as natively.
Features DinoBackbone::encode_requested(const at::Tensor& pixels, const FeatureRequest& request) const {
  if (!request.windows.empty()) fail("the dinov2 backbone has no window embeddings (WinCLIP's are CLIP's)");
  for (int e : request.hidden_states)
    if (e < 0 || e > cfg_.depth)
      fail("DINOv2 hidden state ", e, ": this model has ", cfg_.depth, " blocks (states 0..", cfg_.depth, ")");
  const std::vector<at::Tensor> states = hidden_states(pixels, request.hf_positions, request.hidden_states);
  std::vector<int> order(request.hidden_states);  // the order `states` came in: ascending, last = depth
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  if (order.empty() || order.back() != cfg_.depth) order.push_back(static_cast<int>(cfg_.depth));
  Features f;
  f.global = w_->norm(states.back().select(1, 0)).contiguous();
  for (int e : request.hidden_states.empty() ? std::vector<int>{static_cast<int>(cfg_.depth)} : request.hidden_states) {
    const at::Tensor& state = states[std::find(order.begin(), order.end(), e) - order.begin()];
    const at::Tensor patches = state.slice(1, 1 + cfg_.registers);
    f.taps.push_back((request.final_norm ? w_->norm(patches) : patches).contiguous());
  }
  f.grid_h = pixels.size(2) / cfg_.patch;
  f.grid_w = pixels.size(3) / cfg_.patch;
  return f;
}

}  // namespace gad
