// LiteBackbone — a tfjs CNN (by default nsfwjs MobileNetV2 at 224 px) as a gad Backbone.
//
// The "lite" alternative to CLIP: a small pretrained CNN that runs fast on CPUs. Patch tokens come
// from named tap layers (default `block_12_add`, 14x14x96; e.g. `block_5_add`, 28x28x32, can be
// added), flattened row-major from NHWC to [B, h*w, C]; the global embedding is a flat layer
// (default `flatten_1`, 1280). The common grid is that of the first tap; the InCTRL scorer brings
// finer taps onto it. No text tower. Layer choices come from the backbone study summarised in
// shared/fixtures/lite/mobilenet_v2/README.md.
#pragma once

#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "lite/tfjs_model.h"

namespace gad {

struct LiteTaps {
  std::vector<std::string> patch = {"block_12_add"};  // first = main tap (defines the grid)
  std::string global = "flatten_1";
};

class LiteBackbone : public Backbone {
 public:
  // Checks that the taps exist with image shapes [h,w,C] (h = w) and that `global` is flat.
  explicit LiteBackbone(TfjsModel model, LiteTaps taps = {});

  std::string kind() const override { return "lite"; }
  std::string description() const override;
  std::string fingerprint() const override { return fingerprint_; }
  int64_t embed_dim() const override { return embed_dim_; }
  int64_t grid() const override { return grid_; }
  int64_t input_size() const override { return input_size_; }
  std::vector<std::string> patch_taps() const override { return taps_.patch; }
  PixelTensor preprocess(const Image& image) const override;

  const TfjsModel& model() const { return model_; }
  const LiteTaps& taps() const { return taps_; }

 protected:
  Features encode_impl(const at::Tensor& pixels) const override;

 private:
  TfjsModel model_;
  LiteTaps taps_;
  int64_t embed_dim_ = 0, grid_ = 0, input_size_ = 0;
  std::string fingerprint_;
};

}  // namespace gad
