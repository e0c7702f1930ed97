// Backbone — the frozen feature extractor every scorer builds on.
//
// A backbone turns preprocessed images into Features: one global embedding per image and patch
// tokens from a few tapped layers, all on one common row-major grid. CLIP (InCTRL's backbone) also
// has a text tower for the text prior; the lite CNN does not. Backbones count encode calls so
// tests can prove that cached reference sets are never re-encoded.
#pragma once

#include <ATen/ATen.h>

#include <atomic>
#include <string>
#include <vector>

#include "image/image.h"
#include "image/preprocess.h"
#include "backbone/precision.h"

namespace gad {

struct Features {
  at::Tensor global;             // [B, D], raw (not normalised)
  std::vector<at::Tensor> taps;  // per tapped layer: [B, grid_h*grid_w, C_l], row-major
  int64_t grid_h = 0, grid_w = 0;  // the common grid of this batch (square except for DINOv2)
  // Per FeatureRequest::windows size: [B, n_windows, D], each window's own embedding (not normalised).
  std::vector<at::Tensor> windows;
};

// What a scorer asks of the backbone beyond its native input and taps. DINOv2 serves square inputs
// and chosen blocks (MuSc, SubspaceAD); CLIP serves chosen blocks without a final norm and window
// embeddings (WinCLIP); the lite CNN refuses everything but its native request.
struct FeatureRequest {
  int square = 0;  // > 0: the image squashed to square x square (square_preprocess), else native
  Resample resample = Resample::Bicubic;
  // Hidden states to tap, Hugging Face numbering: 0 = the embedding output (registers inserted,
  // before any block), b + 1 = the output of block b. Empty: the native taps.
  std::vector<int> hidden_states;
  bool final_norm = true;     // the final LayerNorm applied to the tapped states
  bool hf_positions = false;  // Hugging Face's position rule (plain models: bicubic to g x g, no offset)
  // CLIP: window sizes in patches (WinCLIP: 2, 3). Every s x s window of the grid, stride 1, runs as
  // its own token sequence ([CLS] + the window's patches, positions added before selection)
  // through all blocks, ln_post and proj (token masking, not image cropping).
  std::vector<int> windows;
  bool native() const { return square == 0 && hidden_states.empty() && !hf_positions && windows.empty(); }
};

class Backbone {
 public:
  virtual ~Backbone() = default;
  virtual std::string kind() const = 0;        // "clip", "lite" or "dinov2"
  virtual std::string description() const = 0; // for logs and metadata
  virtual std::string fingerprint() const = 0;  // identifies the weights (reference sets check it)
  virtual int64_t embed_dim() const = 0;
  // Patches per side of the common grid; 0 when the grid follows each image's shape (DINOv2):
  // then images are encoded one at a time and Features say their own grid.
  virtual int64_t grid() const = 0;
  virtual int64_t input_size() const = 0;       // side of the square network input, in pixels
  // Named patch taps a user chose (the lite model's layers); {} when the taps are fixed.
  virtual std::vector<std::string> patch_taps() const { return {}; }
  int64_t num_patches() const { return grid() * grid(); }

  virtual PixelTensor preprocess(const Image& image) const = 0;
  // pixels: [B,3,H,W] float32 from `preprocess`.
  Features encode(const at::Tensor& pixels) const { return encode(pixels, FeatureRequest{}); }
  // The same for a scorer's request (pixels from preprocess(image, request)).
  PixelTensor preprocess(const Image& image, const FeatureRequest& request) const {
    return request.native() ? preprocess(image) : preprocess_requested(image, request);
  }
  Features encode(const at::Tensor& pixels, const FeatureRequest& request) const {
    image_encodes_ += pixels.size(0);
    Features f = request.native() ? encode_impl(pixels) : encode_requested(pixels, request);
    if (f.grid_w == 0) f.grid_h = f.grid_w = grid();
    return f;
  }
  virtual int64_t depth() const { return 0; }  // transformer blocks (DINOv2), 0 when not applicable
  virtual int64_t patch_size() const { return 0; }

  // Converts weights once for the requested precision (default FP32).
  virtual void set_precision(Precision p) {}
  virtual Precision precision() const { return Precision::FP32; }

  virtual bool has_text() const { return false; }
  // [2, D]: L2-normalised normal and anomaly text features for `class_name` (CLIP only).
  virtual at::Tensor text_prior(const std::string& class_name) const;

  int64_t image_encodes() const { return image_encodes_; }
  int64_t text_encodes() const { return text_encodes_; }

 protected:
  virtual Features encode_impl(const at::Tensor& pixels) const = 0;
  // Non-native requests; the default refuses them.
  virtual PixelTensor preprocess_requested(const Image& image, const FeatureRequest& request) const;
  virtual Features encode_requested(const at::Tensor& pixels, const FeatureRequest& request) const;
  mutable std::atomic<int64_t> image_encodes_{0}, text_encodes_{0};
};

// Stacks preprocessed images into a [B,3,H,W] tensor (copies).
at::Tensor stack_pixels(const std::vector<PixelTensor>& images);

}  // namespace gad
