// `gad train` — trains InCTRL's adapter and heads on auxiliary data with a frozen backbone
// (spec §3). Torch-free interface; the loop lives in trainer.cpp, one episode in episode.h.
//
//   data      read_training_data (MVTec roots / JSON lists) → held-out validation split
//   features  every image encoded once through the feature cache (float16 on disk)
//   episodes  batch/2 normal + batch/2 anomalous queries from endlessly repeated permutations
//             (reshuffled from (seed, epoch) at each epoch start, so a resumed run continues
//             bit-identically); K prompts per query drawn from the same category's training
//             normals, never the query itself unless allow_self_prompt (the reference allows it)
//   step      forward_episode → FL(final) + FL(s_img) → backward → AdamW (wd 0.01, no schedule);
//             BatchNorm on batch statistics, running statistics saved for inference; by default
//             each residual map is randomly flipped/transposed/shifted first (map_augment)
//   epoch     checkpoint (heads + metadata, and optimiser state) and one CSV row with validation
//             AUROC/AUPRC (mean over categories, fixed prompts per validation query); the output
//             file is the epoch with the best validation AUROC, never chosen on test data.
//
// Deterministic: the same seed, data and options give bit-identical heads for any thread count:
// torch and BLAS run single-threaded inside a step (their multi-threaded reductions change bits),
// and the patch residuals are spread over the threads by query instead (see make_episode).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gad {

class Backbone;

struct TrainOptions {
  std::vector<std::string> data;  // MVTec roots and/or JSON lists
  int k = 2, epochs = 10, steps = 100, batch = 16;
  double lr = 1e-3, weight_decay = 0.01;
  uint64_t seed = 10;
  std::string loss = "focal";  // focal | official
  bool allow_self_prompt = false;
  bool map_augment = true;  // random flips/transposes/shifts of M in training (off = the reference)
  double val_fraction = 0.1;
  std::string out;             // best heads (safetensors)
  std::string checkpoint_dir;  // empty = <out without extension>.checkpoints
  std::string cache_dir;       // feature cache; empty = default
  bool resume = false;
  bool progress = true;
  std::string command;  // recorded in metadata
  std::function<void(const std::string&)> log;
};

struct EpochStats {
  int epoch = 0;
  double train_loss = 0, val_auroc = 0, val_auprc = 0, seconds = 0;
};

struct TrainReport {
  std::vector<EpochStats> epochs;
  int best_epoch = 0;
  double val_patch_auroc = 0;    // the untrained s_patch on the same validation episodes
  double initial_val_auroc = 0;  // the freshly initialised heads, before the first step
  std::string heads_path;
};

TrainReport train_heads(const Backbone& backbone, const TrainOptions& options);

}  // namespace gad
