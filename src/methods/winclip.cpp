// WinCLIP+ as re-implemented by mala-lab and used for InCTRL's WinCLIP numbers (spec §4),
// few-shot classification only.
//   windows:  every 2x2 and 3x3 window of the patch grid (stride 1) as its own token sequence —
//             [CLS] + the window's patch tokens, each with its positional embedding — through
//             ln_pre, all blocks, ln_post and proj (token masking, not image cropping);
//   patches:  the last block's patch tokens (no ln_post / proj);
//   units:    ½(1 − max cos) against the references' units of the same kind;
//   maps:     per scale, patch p gets n_p / Σ_{w∋p} 1/s_w (harmonic mean over covering windows);
//             V = (S₂ + S₃ + S_patch)/3, s_vis = max V;
//   score:    (s_vis + s_text)/2 with the 154 + 88 sentence text prior (no CIFAR special case).
// Differences from that code: gad feeds InCTRL's preprocessing (shorter side + centre crop)
// instead of a square resize with horizontal tiling, and runs fp32 (or bf16) instead of fp16.
#include <map>

#include "clip/clip_backbone.h"
#include "methods/method.h"
#include "util/error.h"

namespace gad {
namespace {

constexpr int kScales[] = {2, 3};

struct Units {
  std::vector<at::Tensor> windows;  // per scale: [B, n_windows, D], L2-normalised
  at::Tensor patches;               // [B, P, W], L2-normalised
};

at::Tensor normalise(const at::Tensor& x) { return x / x.norm(2, -1, true); }

class WinclipMethod : public Method {
 public:
  explicit WinclipMethod(const ClipBackbone& clip) : clip_(clip) {
    const int g = clip.config().vision.grid();
    for (int s : kScales) {
      std::vector<int64_t> idx;  // token indices (1 + row*g + col) of every window, row-major
      for (int r = 0; r + s <= g; ++r)
        for (int c = 0; c + s <= g; ++c)
          for (int dr = 0; dr < s; ++dr)
            for (int dc = 0; dc < s; ++dc) idx.push_back(1 + (r + dr) * g + (c + dc));
      window_tokens_.push_back(at::tensor(idx, at::kLong).view({-1, s * s}));
      // cover[w, p] = 1 when window w covers patch p: the harmonic aggregation as a product.
      at::Tensor cover = at::zeros({window_tokens_.back().size(0), g * g});
      cover.scatter_(1, window_tokens_.back() - 1, 1.0);
      cover_.push_back(cover);
    }
  }

  std::string name() const override { return "winclip"; }

  void prepare(const ReferenceSet& refs, const at::Tensor& ref_pixels) override {
    Units u = units(ref_pixels);
    Memory m;
    for (const auto& w : u.windows) m.windows.push_back(w.reshape({-1, w.size(-1)}));
    m.patches = u.patches.reshape({-1, u.patches.size(-1)});
    m.text = clip_.text_features(ensemble_prompt_sentences(refs.class_name));
    memory_[&refs] = std::move(m);
  }

  void forget(const ReferenceSet& refs) override { memory_.erase(&refs); }

  at::Tensor score(const ReferenceSet& refs, const Features& q, const at::Tensor& pixels) const override {
    auto it = memory_.find(&refs);
    TORCH_CHECK(it != memory_.end(), "winclip: prepare() was not called for this reference set");
    const Memory& m = it->second;
    Units u = units(pixels);
    auto residual = [](const at::Tensor& x, const at::Tensor& mem) {
      return 0.5 * (1.0 - std::get<0>(at::matmul(x, mem.t()).max(-1)));
    };
    at::Tensor visual = residual(u.patches, m.patches);  // [B, P]
    for (size_t s = 0; s < u.windows.size(); ++s) {
      // A window equal to a reference one has residual 0 (or -1e-7 from rounding): the reference's
      // 1/0 = inf makes the harmonic mean 0; clamping keeps that result without inf·0 = NaN in
      // the covering product.
      at::Tensor inv = at::reciprocal(residual(u.windows[s], m.windows[s]).clamp_min(1e-12));  // [B, n_windows]
      visual = visual + cover_[s].sum(0) / at::matmul(inv, cover_[s]);
    }
    at::Tensor s_vis = std::get<0>((visual / 3.0).max(-1));
    at::Tensor f = normalise(q.global);
    at::Tensor s_text = at::softmax(100.0 * at::matmul(f, m.text.t()), -1).select(1, 1);
    at::Tensor final_score = (s_vis + s_text) / 2;
    return at::where(at::isinf(final_score), at::zeros_like(final_score), final_score);
  }

 private:
  struct Memory {
    std::vector<at::Tensor> windows;
    at::Tensor patches, text;
  };

  Units units(const at::Tensor& pixels) const {
    const VisionTower& v = clip_.vision();
    at::Tensor tokens = v.embed(pixels);  // [B, 1+P, W], positional embedding added
    const int64_t B = tokens.size(0), W = tokens.size(2);
    Units u;
    u.patches = normalise(v.run_blocks(tokens, {}, nullptr).slice(1, 1));
    for (const auto& idx : window_tokens_) {
      const int64_t n = idx.size(0), s2 = idx.size(1);
      at::Tensor win = tokens.index_select(1, idx.reshape({-1})).view({B * n, s2, W});
      at::Tensor cls = tokens.select(1, 0).unsqueeze(1).expand({B, n, W}).reshape({B * n, 1, W});
      at::Tensor emb = v.pool(v.run_blocks(at::cat({cls, win}, 1), {}, nullptr));
      u.windows.push_back(normalise(emb.view({B, n, -1})));
    }
    return u;
  }

  const ClipBackbone& clip_;
  std::vector<at::Tensor> window_tokens_, cover_;
  std::map<const ReferenceSet*, Memory> memory_;
};

}  // namespace

std::unique_ptr<Method> make_winclip_method(const LoadedModel& m) {
  const auto* clip = dynamic_cast<const ClipBackbone*>(m.backbone.get());
  if (!clip)
    fail("--scorers winclip: WinCLIP+ compares CLIP window embeddings and needs a CLIP model; this model is ",
         m.backbone->description());
  return std::make_unique<WinclipMethod>(*clip);
}

}  // namespace gad
