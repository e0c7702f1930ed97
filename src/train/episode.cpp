#include "train/episode.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include <ATen/Parallel.h>

#include "util/error.h"

namespace gad {
namespace {

at::Tensor rows(const at::Tensor& t, const std::vector<int64_t>& idx) {
  return t.index_select(0, at::tensor(idx, at::kLong)).to(at::kFloat);
}

at::Tensor l2_normalise(const at::Tensor& x) { return x / x.norm(2, -1, true); }

// α = 1, γ = 2 (the reference's BinaryFocalLoss defaults).
at::Tensor focal(const at::Tensor& bce) { return (at::pow(1 - at::exp(-bce), 2) * bce).mean(); }

}  // namespace

EpisodeBatch make_episode(const std::vector<at::Tensor>& taps, const at::Tensor& globals, const at::Tensor& text_priors,
                          const std::vector<int64_t>& query_index, const std::vector<int64_t>& prompt_index,
                          const std::vector<int64_t>& category, const std::vector<float>& labels, int64_t grid,
                          int workers) {
  const auto B = static_cast<int64_t>(query_index.size());
  const int64_t K = static_cast<int64_t>(prompt_index.size()) / B;
  EpisodeBatch e;
  at::NoGradGuard no_grad;
  // The residuals dominate a step. Each worker takes a contiguous share of the queries and runs
  // single-threaded ATen/BLAS on it, so every query's numbers are the same for any `workers`.
  const int64_t n_workers = std::max<int64_t>(1, std::min<int64_t>(workers, B));
  std::vector<at::Tensor> parts(n_workers);
  auto residual_of = [&](int64_t w) {
    const int64_t lo = B * w / n_workers, hi = B * (w + 1) / n_workers;
    std::vector<int64_t> q_idx(query_index.begin() + lo, query_index.begin() + hi);
    std::vector<int64_t> p_idx(prompt_index.begin() + lo * K, prompt_index.begin() + hi * K);
    at::NoGradGuard guard;               // grad mode is per thread
    if (w > 0) at::set_num_threads(1);  // so is OpenMP's thread count
    at::Tensor sum;
    for (const auto& t : taps) {
      at::Tensor q = l2_normalise(rows(t, q_idx));                                                    // [b, P, C]
      at::Tensor bank = l2_normalise(rows(t, p_idx)).reshape({hi - lo, K * t.size(1), t.size(2)});  // [b, K·P, C]
      at::Tensor r = layer_residual(q, bank, grid);
      sum = sum.defined() ? sum + r : r;
    }
    parts[w] = sum;
  };
  std::vector<std::thread> threads;
  for (int64_t w = 1; w < n_workers; ++w) threads.emplace_back(residual_of, w);
  residual_of(0);
  for (auto& t : threads) t.join();
  at::Tensor m = at::cat(parts);
  m = m / static_cast<double>(taps.size());
  e.s_patch = std::get<0>(m.max(-1));
  e.holistic_base = m;
  e.query_global = rows(globals, query_index);
  if (text_priors.defined()) {
    at::Tensor prior = text_priors.index_select(0, at::tensor(category, at::kLong));  // [B, 2, D]
    at::Tensor logits = 100.0 * at::bmm(prior, l2_normalise(e.query_global).unsqueeze(2)).squeeze(2);
    e.holistic_base = m + at::softmax(logits, -1).select(1, 1).unsqueeze(1);
  }
  e.prompt_globals = rows(globals, prompt_index).reshape({B, K, globals.size(1)});
  e.labels = at::tensor(labels, at::kFloat);
  return e;
}

HeadOutputs forward_episode(const InctrlHeads& heads, const EpisodeBatch& b, bool train) {
  at::Tensor prompt_mean = heads.adapter.forward(b.prompt_globals).mean(1);
  return apply_heads(heads, b.query_global, prompt_mean, b.holistic_base, b.s_patch, train);
}

LossKind parse_loss(const std::string& name) {
  if (name == "focal") return LossKind::Focal;
  if (name == "official") return LossKind::Official;
  fail("--loss: unknown loss '", name, "' (focal or official)");
}

const char* loss_name(LossKind kind) { return kind == LossKind::Focal ? "focal" : "official"; }

at::Tensor inctrl_loss(const HeadOutputs& out, const at::Tensor& labels, LossKind kind) {
  const at::Tensor y = labels.to(out.final_score.scalar_type());
  if (kind == LossKind::Official)
    return focal(at::binary_cross_entropy_with_logits(out.final_score, y, {}, {}, at::Reduction::None)) +
           focal(at::binary_cross_entropy_with_logits(out.s_img, y, {}, {}, at::Reduction::None));
  // The final score is a mean of probabilities, not a sigmoid, so it has no logit of its own:
  // clamp it away from 0 and 1 for the log.
  const at::Tensor p = out.final_score.clamp(1e-6, 1 - 1e-6);
  const at::Tensor bce_final = -(y * at::log(p) + (1 - y) * at::log(1 - p));
  return focal(bce_final) + focal(at::binary_cross_entropy_with_logits(out.s_img_logit, y, {}, {}, at::Reduction::None));
}

void AdamW::update(const std::vector<at::Tensor>& params) {
  at::NoGradGuard no_grad;
  if (exp_avg.empty())
    for (const auto& p : params) {
      exp_avg.push_back(at::zeros_like(p));
      exp_avg_sq.push_back(at::zeros_like(p));
    }
  ++step;
  const double bc1 = 1 - std::pow(beta1, static_cast<double>(step));
  const double bc2 = 1 - std::pow(beta2, static_cast<double>(step));
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor p = params[i];
    at::Tensor g = p.grad();
    if (!g.defined()) continue;
    p.mul_(1 - lr * weight_decay);
    exp_avg[i].mul_(beta1).add_(g, 1 - beta1);
    exp_avg_sq[i].mul_(beta2).addcmul_(g, g, 1 - beta2);
    at::Tensor denom = (exp_avg_sq[i].sqrt() / std::sqrt(bc2)).add_(eps);
    p.addcdiv_(exp_avg[i], denom, -lr / bc1);
    g.zero_();
  }
}

}  // namespace gad
