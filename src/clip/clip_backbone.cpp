#include "clip/clip_backbone.h"

#include <cstring>
#include <sstream>

#include "clip/prompts.h"

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
