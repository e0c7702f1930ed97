// One training episode's forward and loss (spec §3.2–3.3), kept apart from the loop so tests can
// check its gradients against finite differences.
//
// Everything that does not depend on the trained parameters — the patch residual map M, s_patch
// and the text prior — is computed once per episode without autograd; the adapter and both heads
// then run through `apply_heads`, the very code inference uses.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "inctrl/heads.h"
#include "inctrl/scorer.h"

namespace gad {

struct EpisodeBatch {
  at::Tensor holistic_base;   // [B, P]: M (+ s_text with a text prior)
  at::Tensor s_patch;         // [B]
  at::Tensor query_global;    // [B, D], raw
  at::Tensor prompt_globals;  // [B, K, D], raw
  at::Tensor labels;          // [B] float, 0 normal / 1 anomalous
};

// Builds a batch from cached features: `taps` per layer [N, P_l, C_l] (any float dtype), `globals`
// [N, D]; query i uses prompts prompt_index[i*K .. i*K+K). `text_priors` [categories, 2, D] or
// undefined; `category` per query selects the prior. Call with torch and BLAS on one thread
// (ScopedThreads(1)): the patch residuals then run on `workers` threads of their own, each on a
// share of the queries, and the result is bit-identical for any `workers`.
EpisodeBatch make_episode(const std::vector<at::Tensor>& taps, const at::Tensor& globals, const at::Tensor& text_priors,
                          const std::vector<int64_t>& query_index, const std::vector<int64_t>& prompt_index,
                          const std::vector<int64_t>& category, const std::vector<float>& labels, int64_t grid,
                          int workers = 1);

HeadOutputs forward_episode(const InctrlHeads& heads, const EpisodeBatch& batch, bool train);

// "focal": binary focal loss (α 1, γ 2) on the true probabilities (final score, s_img logit).
// "official": the reference's loss, which feeds the probabilities to BCE-with-logits as if they
// were logits (spec §3.3). Both: FL(final, y) + FL(s_img, y), mean over the batch.
enum class LossKind { Focal, Official };
LossKind parse_loss(const std::string& name);
const char* loss_name(LossKind kind);
at::Tensor inctrl_loss(const HeadOutputs& out, const at::Tensor& labels, LossKind kind);

// torch.optim.AdamW (decoupled weight decay, bias-corrected moments, no amsgrad), with its state
// in plain tensors so checkpoints can store it.
struct AdamW {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
  int64_t step = 0;
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  void update(const std::vector<at::Tensor>& params);  // uses and then zeroes p.grad()
};

}  // namespace gad
