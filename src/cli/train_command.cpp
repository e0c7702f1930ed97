// `gad train`: option parsing around gad::train_heads.
#include "cli/cli.h"
#include "train/trainer.h"

#include <cstdio>

#include "engine/load_model.h"
#include "backbone/precision.h"
#include "util/error.h"

namespace gad::cli {
namespace {

struct TrainArgs {
  ModelArgs model;
  gad::TrainOptions options;
};

void add_train_options(CLI::App* cmd, TrainArgs& a) {
  a.model.add_to(cmd);
  gad::TrainOptions& o = a.options;
  add_list_option(cmd, "--data", o.data,
                  "auxiliary data: MVTec-layout roots (normals = train/good + test/good, anomalies = test/<defect>) "
                  "and/or the reference's JSON lists (image_path, target, type)")
      ->required();
  cmd->add_option("-o,--output,--out", o.out, "trained heads (safetensors; the epoch with the best validation AUROC)")->required();
  cmd->add_option("--k", o.k, "prompts (normal references) per query, default 2");
  cmd->add_option("--epochs", o.epochs, "epochs, default 10");
  cmd->add_option("--steps", o.steps, "steps per epoch, default 100");
  cmd->add_option("--batch", o.batch, "queries per step, half normal and half anomalous, default 16");
  cmd->add_option("--lr", o.lr, "AdamW learning rate, default 1e-3 (weight decay 0.01, no schedule)");
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW weight decay, default 0.01");
  cmd->add_option("--seed", o.seed, "seed of initialisation, episodes and the validation split, default 10");
  cmd->add_option("--loss", o.loss,
                  "focal (default: focal loss on the true probabilities) | official (the reference's loss, which "
                  "treats probabilities as logits)");
  cmd->add_flag("--allow-self-prompt", o.allow_self_prompt,
                "let a normal query be one of its own prompts (the reference code allows it)");
  cmd->add_flag("!--no-map-augment", o.map_augment,
                "train on the residual maps as they are (the reference); default: random flips, transposes and "
                "circular shifts, so diff_head does not learn where auxiliary defects sit");
  cmd->add_option("--val-fraction", o.val_fraction, "share of each category held out for validation, default 0.1");
  cmd->add_option("--checkpoints", o.checkpoint_dir, "checkpoint directory, default <out>.checkpoints");
  cmd->add_option("--cache", o.cache_dir, "feature cache directory, default ~/.cache/gad/features");
  cmd->add_flag("--resume", o.resume, "continue from the last checkpoint (settings must match)");
  cmd->add_flag("!--no-progress", o.progress, "no progress bars");
}

int run_train(TrainArgs& a, const std::string& command) {
  gad::TrainOptions o = a.options;
  o.log = log_line;
  o.command = command;
  const ModelOptions model = a.model.resolve();
  const int threads = a.model.threads_in_use;
  gad::LoadedModel m = gad::load_model(model);
  m.backbone->set_precision(resolve_precision(model.precision));
  o.log(m.backbone->description() + ", " + gad::precision_name(m.backbone->precision()) + ", " +
        std::to_string(threads) + " threads" + (m.heads ? " (the model's own heads are ignored: training new ones)" : ""));
  gad::TrainReport r = gad::train_heads(*m.backbone, o);
  std::printf("epoch,train_loss,val_auroc,val_auprc,seconds\n");
  for (const auto& e : r.epochs)
    std::printf("%d,%.6f,%.4f,%.4f,%.1f%s\n", e.epoch, e.train_loss, e.val_auroc, e.val_auprc, e.seconds,
                e.epoch == r.best_epoch ? "  <- best" : "");
  std::printf("validation AUROC before training %.4f; of s_patch alone %.4f\n", r.initial_val_auroc, r.val_patch_auroc);
  return 0;
}

}  // namespace

void add_train_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<TrainArgs>();
  auto* cmd = app.add_subcommand("train", "train InCTRL's adapter and heads on auxiliary data (frozen backbone)");
  add_train_options(cmd, *a);
  cmd->callback([a, &ctx] { ctx.run = [a, &ctx] { return run_train(*a, ctx.command); }; });
}

}  // namespace gad::cli
