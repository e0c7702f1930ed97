#include "model/load_model.h"

#include "clip/clip_backbone.h"
#include "util/error.h"

namespace gad {

LoadedModel load_model(const ModelFiles& files) {
  if (files.model.empty()) fail("--model: no model given (the embedded default model is not installed)");
  Weights w = Weights::load(files.model);
  ClipConfig cfg = load_clip_config(files.config.empty() ? kDefaultClipConfig : files.config);
  LoadedModel m;
  m.backbone = std::make_unique<ClipBackbone>(cfg, w);
  const int64_t D = m.backbone->embed_dim(), P = m.backbone->num_patches();
  if (!files.heads.empty()) {
    Weights hw = Weights::load(files.heads);
    m.heads = InctrlHeads::load(hw, D, P);
    hw.check_all_taken();
    m.heads_source = files.heads;
    w.ignore_prefix("adapter.");  // a separate heads file replaces any heads in the model file
    w.ignore_prefix("diff_head");
  } else if (InctrlHeads::present_in(w)) {
    m.heads = InctrlHeads::load(w, D, P);
    m.heads_source = files.model;
  }
  w.check_all_taken();
  return m;
}

}  // namespace gad
