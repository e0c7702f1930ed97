#include "inctrl/heads.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace gad {
namespace {

constexpr int64_t kHidden1 = 128, kHidden2 = 64;
constexpr double kBnMomentum = 0.1, kBnEps = 1e-5;  // torch.nn.BatchNorm1d defaults

BatchNorm load_bn(Weights& w, const std::string& p, int64_t n) {
  return {w.take(p + ".weight", {n}), w.take(p + ".bias", {n}), w.take(p + ".running_mean", {n}),
          w.take(p + ".running_var", {n}), w.take(p + ".num_batches_tracked", {}, at::kLong)};
}

BatchNorm init_bn(int64_t n) {
  return {at::ones({n}), at::zeros({n}), at::zeros({n}), at::ones({n}), at::zeros({}, at::kLong)};
}

Linear init_linear(int64_t in, int64_t out, at::Generator& gen, bool bias = true) {
  // kaiming_uniform_(a=√5) reduces to U(−1/√in, 1/√in); the bias uses the same bound.
  const double bound = 1.0 / std::sqrt(static_cast<double>(in));
  Linear l;
  l.weight = at::empty({out, in}).uniform_(-bound, bound, gen);
  if (bias) l.bias = at::empty({out}).uniform_(-bound, bound, gen);
  return l;
}

}  // namespace

at::Tensor BatchNorm::forward(const at::Tensor& x, bool train) const {
  if (!train) return (x - running_mean) / at::sqrt(running_var + kBnEps) * weight + bias;
  num_batches_tracked.add_(1);
  return at::batch_norm(x, weight, bias, running_mean, running_var, /*training=*/true, kBnMomentum, kBnEps,
                        /*cudnn_enabled=*/false);
}

at::Tensor ScoreHead::forward(const at::Tensor& x, HeadTrace* trace, bool train) const {
  at::Tensor p1 = projection1(x);
  at::Tensor b2 = bn2.forward(at::relu(p1), train);
  at::Tensor p2 = projection2(b2);
  at::Tensor b3 = bn3.forward(at::relu(p2), train);
  at::Tensor logit = projection3(b3).squeeze(-1);
  if (trace) *trace = {p1, b2, p2, b3, logit};
  return logit;
}

ScoreHead ScoreHead::load(Weights& w, const std::string& prefix, int64_t in_dim) {
  ScoreHead h;
  h.projection1 = {w.take(prefix + ".projection1.weight", {kHidden1, in_dim}), w.take(prefix + ".projection1.bias", {kHidden1})};
  h.projection2 = {w.take(prefix + ".projection2.weight", {kHidden2, kHidden1}), w.take(prefix + ".projection2.bias", {kHidden2})};
  h.projection3 = {w.take(prefix + ".projection3.weight", {1, kHidden2}), w.take(prefix + ".projection3.bias", {1})};
  h.bn1 = load_bn(w, prefix + ".bn1", in_dim);  // required for a complete file, never used
  h.bn2 = load_bn(w, prefix + ".bn2", kHidden1);
  h.bn3 = load_bn(w, prefix + ".bn3", kHidden2);
  return h;
}

ScoreHead ScoreHead::init(int64_t in_dim, at::Generator& gen) {
  // Module construction order of the reference's TransformerBasicHead: bn1, projection1, bn2,
  // projection2, bn3, projection3 (BatchNorm draws nothing).
  ScoreHead h;
  h.bn1 = init_bn(in_dim);
  h.projection1 = init_linear(in_dim, kHidden1, gen);
  h.bn2 = init_bn(kHidden1);
  h.projection2 = init_linear(kHidden1, kHidden2, gen);
  h.bn3 = init_bn(kHidden2);
  h.projection3 = init_linear(kHidden2, 1, gen);
  return h;
}

void ScoreHead::visit(const std::string& prefix, const std::function<void(const std::string&, at::Tensor&)>& fn) {
  auto bn = [&](const std::string& p, BatchNorm& b) {
    fn(p + ".weight", b.weight);
    fn(p + ".bias", b.bias);
    fn(p + ".running_mean", b.running_mean);
    fn(p + ".running_var", b.running_var);
    fn(p + ".num_batches_tracked", b.num_batches_tracked);
  };
  auto linear = [&](const std::string& p, Linear& l) {
    fn(p + ".weight", l.weight);
    fn(p + ".bias", l.bias);
  };
  bn(prefix + ".bn1", bn1);
  linear(prefix + ".projection1", projection1);
  bn(prefix + ".bn2", bn2);
  linear(prefix + ".projection2", projection2);
  bn(prefix + ".bn3", bn3);
  linear(prefix + ".projection3", projection3);
}

Adapter Adapter::load(Weights& w, int64_t dim) {
  return {w.take("adapter.fc.0.weight", {dim / 4, dim}), w.take("adapter.fc.2.weight", {dim, dim / 4})};
}

InctrlHeads InctrlHeads::load(Weights& w, int64_t embed_dim, int64_t num_patches) {
  if (StatsHead::present_in(w)) {
    InctrlHeads h;
    h.stats = StatsHead::load(w);
    return h;
  }
  return {Adapter::load(w, embed_dim), ScoreHead::load(w, "diff_head", num_patches),
          ScoreHead::load(w, "diff_head_ref", embed_dim)};
}

InctrlHeads InctrlHeads::init(int64_t embed_dim, int64_t num_patches, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  InctrlHeads h;
  h.adapter.fc1 = init_linear(embed_dim, embed_dim / 4, gen, false).weight;
  h.adapter.fc2 = init_linear(embed_dim / 4, embed_dim, gen, false).weight;
  h.diff_head = ScoreHead::init(num_patches, gen);
  h.diff_head_ref = ScoreHead::init(embed_dim, gen);
  return h;
}

void InctrlHeads::visit(const std::function<void(const std::string&, at::Tensor&)>& fn) {
  if (stats) {
    fn("stats_head.mean", stats->mean);
    fn("stats_head.scale", stats->scale);
    fn("stats_head.weight", stats->weight);
    fn("stats_head.bias", stats->bias);
    fn("stats_head.window", stats->window);
    return;
  }
  fn("adapter.fc.0.weight", adapter.fc1);
  fn("adapter.fc.2.weight", adapter.fc2);
  diff_head.visit("diff_head", fn);
  diff_head_ref.visit("diff_head_ref", fn);
}

std::vector<at::Tensor> InctrlHeads::parameters() {
  // Running statistics are buffers, and bn1 never sees data in the forward, so it is not trained.
  auto is_buffer = [](const std::string& k) {
    return k.find(".running_") != std::string::npos || k.find(".num_batches_tracked") != std::string::npos ||
           k.find(".bn1.") != std::string::npos;
  };
  std::vector<at::Tensor> out;
  visit([&](const std::string& k, at::Tensor& t) {
    if (!is_buffer(k)) out.push_back(t);
  });
  return out;
}

NamedTensors InctrlHeads::state() {
  NamedTensors out;
  visit([&](const std::string& k, at::Tensor& t) { out.emplace_back(k, t); });
  return out;
}

InctrlHeads InctrlHeads::clone(at::ScalarType dtype) const {
  InctrlHeads copy = *this;
  copy.visit([&](const std::string&, at::Tensor& t) {
    t = t.detach().is_floating_point() ? t.detach().to(dtype).clone() : t.detach().clone();
  });
  return copy;
}

}  // namespace gad
