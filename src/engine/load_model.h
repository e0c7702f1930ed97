// Loading a model from the files a user names: the backbone weights (with or without InCTRL's
// adapter and heads in the same file) and, optionally, a separate heads file.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gad/gad.hpp>

#include "backbone/backbone.h"
#include "inctrl/heads.h"

namespace gad {

struct ModelFiles {
  // weight file; empty or "lite" = the embedded default (the installed lite model); a tfjs
  // model.json or a gad lite .safetensors builds the lite backbone, anything else CLIP
  std::string model;
  std::string config;  // CLIP architecture name or JSON file; empty = kDefaultClipConfig
  // optional separate heads file (safetensors or torch archive); "none" = no heads even if the
  // model file has some; "lite" = the heads shipped for the lite model (assets/heads).
  std::string heads;
  std::vector<std::string> lite_taps;  // lite backbone patch taps; empty = block_12_add
  int resolution = 0;                  // DINOv2: smaller edge in px (0 = 448, AnomalyDINO's default)
};

// The files a ModelOptions names.
ModelFiles model_files(const ModelOptions& options);

struct LoadedModel {
  std::unique_ptr<Backbone> backbone;
  std::optional<InctrlHeads> heads;
  std::string heads_source;  // file the heads came from, empty without heads
};

// Every key of every file must be consumed: missing, unexpected or mis-shaped keys are errors
// naming the file, the key and the shapes.
LoadedModel load_model(const ModelFiles& files);

// The lite heads shipped with gad (see assets/heads/README.md for how they were made).
std::string shipped_lite_heads_path();

}  // namespace gad
