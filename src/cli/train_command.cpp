#include "cli/train_command.h"
#include "cli/command_line.h"

#include <cstdio>

#include "model/load_model.h"
#include "model/precision.h"
#include "model/runtime.h"
#include "util/error.h"

void add_train_options(CLI::App* cmd, gad::TrainOptions& o) {
  cmd->add_option("--data", o.data,
                  "auxiliary data: MVTec-layout roots (normals = train/good + test/good, anomalies = test/<defect>) "
                  "and/or the reference's JSON lists (image_path, target, type)")
      ->required();
  cmd->add_option("-o,--out", o.out, "trained heads (safetensors; the epoch with the best validation AUROC)")->required();
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

int run_train(const gad::EngineOptions& model, gad::TrainOptions o, int argc, char** argv) {
  o.log = [](const std::string& s) { std::fprintf(stderr, "gad: %s\n", s.c_str()); };
  o.command = recorded_command(argc, argv);
  const int threads = gad::configure_threads(model.threads);
  gad::LoadedModel m = gad::load_model(model.files);
  m.backbone->set_precision(gad::parse_precision(model.precision));
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
