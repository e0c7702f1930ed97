#include "clip/clip_backbone.h"

#include <cstring>
#include <sstream>

#include "clip/prompts.h"
#include "util/error.h"

namespace gad {
namespace {

std::string weights_fingerprint(const Weights& w) {
  std::map<std::string, at::Tensor> backbone;
  for (const auto& [k, t] : w.all())
    if (k.rfind("adapter.", 0) != 0 && k.rfind("diff_head", 0) != 0) backbone[k] = t;
  return fingerprint(backbone);
}

}  // namespace

ClipBackbone::ClipBackbone(const ClipConfig& cfg, Weights& w)
    : cfg_(cfg), vision_(cfg, w), text_(cfg, w), tokenizer_(Tokenizer::load_default()),
      fingerprint_(weights_fingerprint(w)) {
  w.ignore("logit_scale");  // OpenCLIP stores it; InCTRL uses a fixed scale of 100
}

std::string ClipBackbone::description() const {
  std::ostringstream o;
  o << "CLIP " << cfg_.name << " (" << cfg_.vision.image_size << " px, " << cfg_.vision.grid() << "x"
    << cfg_.vision.grid() << " patches, width " << cfg_.vision.width << ", embed " << cfg_.embed_dim << ")";
  return o.str();
}

PixelTensor ClipBackbone::preprocess(const Image& image) const {
  return clip_preprocess(image, cfg_.vision.image_size);
}

Features ClipBackbone::encode_impl(const at::Tensor& pixels) const {
  VisionOutput v = vision_.forward(pixels, cfg_.tapped_layers);
  return {v.cls_embedding, v.taps};
}

at::Tensor window_patches(int grid, int size) {
  std::vector<int64_t> idx;
  for (int r = 0; r + size <= grid; ++r)
    for (int c = 0; c + size <= grid; ++c)
      for (int dr = 0; dr < size; ++dr)
        for (int dc = 0; dc < size; ++dc) idx.push_back((r + dr) * grid + (c + dc));
  return at::tensor(idx, at::kLong).view({-1, size * size});
}

PixelTensor ClipBackbone::preprocess_requested(const Image& image, const FeatureRequest& request) const {
  if (request.square || request.hf_positions) encode_requested(at::Tensor(), request);  // the one refusal
  return preprocess(image);
}

// Hidden states use Hugging Face's numbering (b = the output of block b, 1-based); windows run as
// extra token sequences through the same tower (see FeatureRequest::windows).
Features ClipBackbone::encode_requested(const at::Tensor& pixels, const FeatureRequest& request) const {
  if (request.square || request.hf_positions)
    fail("the clip backbone serves its native input only (a square input and Hugging Face positions are DINOv2's)");
  if (request.final_norm && !request.hidden_states.empty())
    fail("the clip backbone has no final norm for patch tokens (ask for hidden states without it)");
  std::vector<int> blocks = request.hidden_states.empty() ? cfg_.tapped_layers : request.hidden_states;
  for (int b : blocks)
    if (b < 1 || b > cfg_.vision.layers) fail("CLIP hidden state ", b, ": this model has blocks 1..", cfg_.vision.layers);
  const at::Tensor tokens = vision_.embed(pixels);  // positions added before any selection
  Features f;
  f.global = vision_.pool(vision_.run_blocks(tokens, blocks, &f.taps));
  const int g = cfg_.vision.grid();
  const int64_t B = tokens.size(0), W = tokens.size(2);
  for (int s : request.windows) {
    if (s < 1 || s > g) fail("CLIP window size ", s, ": must be within 1..", g, " patches");
    const at::Tensor patches = window_patches(g, s);
    const int64_t n = patches.size(0);
    const at::Tensor win = tokens.index_select(1, patches.reshape({-1}) + 1).view({B * n, s * s, W});  // token 0 is CLS
    const at::Tensor cls = tokens.select(1, 0).unsqueeze(1).expand({B, n, W}).reshape({B * n, 1, W});
    f.windows.push_back(vision_.pool(vision_.run_blocks(at::cat({cls, win}, 1), {}, nullptr)).view({B, n, -1}));
  }
  return f;
}

at::Tensor ClipBackbone::encode_sentences(const std::vector<std::string>& sentences) const {
  const int64_t n = static_cast<int64_t>(sentences.size()), L = cfg_.text.context_length;
  at::Tensor ids = at::zeros({n, L}, at::kLong);
  for (int64_t i = 0; i < n; ++i) {
    auto row = tokenizer_.tokenize(sentences[i], static_cast<int>(L));
    std::memcpy(ids[i].data_ptr<int64_t>(), row.data(), L * sizeof(int64_t));
  }
  text_encodes_ += n;
  return text_.forward(ids);
}

at::Tensor ClipBackbone::text_features(const PromptSentences& s) const {
  auto group = [&](const std::vector<std::string>& sentences) {
    at::Tensor e = encode_sentences(sentences);
    e = e / e.norm(2, -1, true);
    at::Tensor m = e.mean(0);
    return m / m.norm();
  };
  return at::stack({group(s.normal), group(s.anomaly)});
}

at::Tensor ClipBackbone::text_prior(const std::string& class_name) const {
  return text_features(inctrl_prompt_sentences(class_name));
}

}  // namespace gad
