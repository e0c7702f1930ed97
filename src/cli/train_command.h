// `gad train`: option parsing around gad::train_heads.
#pragma once

#include <CLI/CLI.hpp>

#include "engine/engine.h"
#include "train/trainer.h"

void add_train_options(CLI::App* cmd, gad::TrainOptions& options);
int run_train(const gad::EngineOptions& model, gad::TrainOptions options, int argc, char** argv);
