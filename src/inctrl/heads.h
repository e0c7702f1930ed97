// The learned part of InCTRL: the adapter and the two scoring heads (spec §2.4, §2.7).
//
// Adapter A(v) = ReLU(W2·ReLU(W1·v)), no biases. Head h(v) = L3(BN3(ReLU(L2(BN2(ReLU(L1 v)))))).
// At inference BatchNorm uses its running statistics; in training (`gad train`) it uses batch
// statistics and updates the running ones exactly like torch.nn.BatchNorm1d (momentum 0.1). The
// stored bn1 is never used by the reference; it is loaded for completeness and saved untouched.
// Heads return logits; callers apply the sigmoid. Sizes are parameters: the holistic head's input
// is the patch count of the backbone's grid, the image head's the embedding.
//
// The same structs serve inference and training: `init` draws PyTorch's default initialisation,
// `parameters` lists the trainable tensors and `state` names every tensor with the reference's
// state-dict keys, so a trained file loads anywhere a released checkpoint does.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clip/clip_model.h"
#include "inctrl/stats_head.h"
#include "model/weights.h"

namespace gad {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct BatchNorm {
  at::Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  // Eval: running statistics. Train: batch statistics, running statistics updated in place.
  at::Tensor forward(const at::Tensor& x, bool train = false) const;
};

struct HeadTrace {  // every intermediate, for dumps and golden tests
  at::Tensor proj1_prerelu, bn2_out, proj2_prerelu, bn3_out, logit;
};

struct ScoreHead {
  Linear projection1, projection2, projection3;
  BatchNorm bn1, bn2, bn3;  // bn1: unused by the forward (as in the reference)
  // x: [B, in] -> logits [B]; fills `trace` when given.
  at::Tensor forward(const at::Tensor& x, HeadTrace* trace = nullptr, bool train = false) const;
  static ScoreHead load(Weights& w, const std::string& prefix, int64_t in_dim);
  static ScoreHead init(int64_t in_dim, at::Generator& gen);
  // Calls fn(key, tensor) for every tensor, keys in the reference's state-dict order.
  void visit(const std::string& prefix, const std::function<void(const std::string&, at::Tensor&)>& fn);
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
  // gad's lite variant (stats_head.h): when set it alone scores and the members above are empty.
  // A heads file holding stats_head.* keys loads as this.
  std::optional<StatsHead> stats;
  static bool present_in(const Weights& w) { return w.has("adapter.fc.0.weight"); }
  static InctrlHeads load(Weights& w, int64_t embed_dim, int64_t num_patches);
  // PyTorch's default initialisation (Linear: U(±1/√fan_in) for weights and biases; BatchNorm:
  // weight 1, bias 0, mean 0, var 1), drawn from `seed` in a fixed order.
  static InctrlHeads init(int64_t embed_dim, int64_t num_patches, uint64_t seed);
  void visit(const std::function<void(const std::string&, at::Tensor&)>& fn);
  std::vector<at::Tensor> parameters();  // trainable tensors (shared, not copies), in `state` order
  NamedTensors state();                  // every tensor under its reference key (shared)
  // Deep copy without autograd history; floating tensors converted to `dtype` (tests use double).
  InctrlHeads clone(at::ScalarType dtype = at::kFloat) const;
};

}  // namespace gad
