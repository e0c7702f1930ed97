// The learned part of InCTRL: the adapter and the two scoring heads (spec §2.4, §2.7).
//
// Adapter A(v) = ReLU(W2·ReLU(W1·v)), no biases. Head h(v) = L3(BN3(ReLU(L2(BN2(ReLU(L1 v)))))),
// BatchNorm in eval mode (running statistics); the stored bn1 is never used by the reference and
// is ignored here. Heads return logits; callers apply the sigmoid. Sizes are parameters: the
// holistic head's input is the patch count of the backbone's grid, the image head's the embedding.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "clip/clip_model.h"
#include "model/weights.h"

namespace gad {

struct BatchNormEval {
  at::Tensor weight, bias, running_mean, running_var;
  at::Tensor operator()(const at::Tensor& x) const {
    return (x - running_mean) / at::sqrt(running_var + 1e-5) * weight + bias;
  }
};

struct HeadTrace {  // every intermediate, for dumps and golden tests
  at::Tensor proj1_prerelu, bn2_out, proj2_prerelu, bn3_out, logit;
};

struct ScoreHead {
  Linear projection1, projection2, projection3;
  BatchNormEval bn2, bn3;
  // x: [B, in] -> logits [B]; fills `trace` when given.
  at::Tensor forward(const at::Tensor& x, HeadTrace* trace = nullptr) const;
  static ScoreHead load(Weights& w, const std::string& prefix, int64_t in_dim);
};

struct Adapter {
  at::Tensor fc1, fc2;  // [hidden, dim], [dim, hidden]
  at::Tensor forward(const at::Tensor& v) const { return at::relu(at::linear(at::relu(at::linear(v, fc1)), fc2)); }
  static Adapter load(Weights& w, int64_t dim);
};

struct InctrlHeads {
  Adapter adapter;
  ScoreHead diff_head;      // on the holistic map (num_patches)
  ScoreHead diff_head_ref;  // on the image residual (embed_dim)
  static bool present_in(const Weights& w) { return w.has("adapter.fc.0.weight"); }
  static InctrlHeads load(Weights& w, int64_t embed_dim, int64_t num_patches);
};

}  // namespace gad
