#include "inctrl/heads.h"

namespace gad {
namespace {

constexpr int64_t kHidden1 = 128, kHidden2 = 64;

BatchNormEval load_bn(Weights& w, const std::string& p, int64_t n) {
  w.take(p + ".num_batches_tracked", {}, at::kLong);  // training bookkeeping; required for a complete file
  return {w.take(p + ".weight", {n}), w.take(p + ".bias", {n}), w.take(p + ".running_mean", {n}),
          w.take(p + ".running_var", {n})};
}

}  // namespace

at::Tensor ScoreHead::forward(const at::Tensor& x, HeadTrace* trace) const {
  at::Tensor p1 = projection1(x);
  at::Tensor b2 = bn2(at::relu(p1));
  at::Tensor p2 = projection2(b2);
  at::Tensor b3 = bn3(at::relu(p2));
  at::Tensor logit = projection3(b3).squeeze(-1);
  if (trace) *trace = {p1, b2, p2, b3, logit};
  return logit;
}

ScoreHead ScoreHead::load(Weights& w, const std::string& prefix, int64_t in_dim) {
  ScoreHead h;
  h.projection1 = {w.take(prefix + ".projection1.weight", {kHidden1, in_dim}), w.take(prefix + ".projection1.bias", {kHidden1})};
  h.projection2 = {w.take(prefix + ".projection2.weight", {kHidden2, kHidden1}), w.take(prefix + ".projection2.bias", {kHidden2})};
  h.projection3 = {w.take(prefix + ".projection3.weight", {1, kHidden2}), w.take(prefix + ".projection3.bias", {1})};
  h.bn2 = load_bn(w, prefix + ".bn2", kHidden1);
  h.bn3 = load_bn(w, prefix + ".bn3", kHidden2);
  load_bn(w, prefix + ".bn1", in_dim);  // stored by the reference but never used in its forward
  return h;
}

Adapter Adapter::load(Weights& w, int64_t dim) {
  return {w.take("adapter.fc.0.weight", {dim / 4, dim}), w.take("adapter.fc.2.weight", {dim, dim / 4})};
}

InctrlHeads InctrlHeads::load(Weights& w, int64_t embed_dim, int64_t num_patches) {
  return {Adapter::load(w, embed_dim), ScoreHead::load(w, "diff_head", num_patches),
          ScoreHead::load(w, "diff_head_ref", embed_dim)};
}

}  // namespace gad
