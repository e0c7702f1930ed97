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

struct LoadedModel {
  std::unique_ptr<Backbone> backbone;
  std::optional<InctrlHeads> heads;
  std::string heads_source;  // file the heads came from, empty without heads
};

// Every key of every file must be consumed: missing, unexpected or mis-shaped keys are errors
// naming the file, the key and the shapes.
// Reads the file fields of `files` (model, config, heads, lite_taps, resolution).
LoadedModel load_model(const ModelOptions& files);

// The lite heads shipped with gad (see docs/models.md, "Heads for the lite model", for how they
// were made).
std::string shipped_lite_heads_path();

}  // namespace gad
