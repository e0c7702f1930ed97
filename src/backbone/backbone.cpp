#include "backbone/backbone.h"

#include <cstring>

#include "util/error.h"

namespace gad {

at::Tensor Backbone::text_prior(const std::string&) const {
  fail("the ", kind(), " backbone has no text tower");
}

PixelTensor Backbone::preprocess_requested(const Image&, const FeatureRequest&) const {
  fail("the ", kind(), " backbone serves its native input only (a square input and chosen blocks are DINOv2's)");
}

Features Backbone::encode_requested(const at::Tensor&, const FeatureRequest&) const {
  fail("the ", kind(), " backbone serves its native taps only (chosen blocks are DINOv2's)");
}

at::Tensor stack_pixels(const std::vector<PixelTensor>& images) {
  TORCH_CHECK(!images.empty(), "stack_pixels: no images");
  const auto& first = images.front();
  at::Tensor out = at::empty({static_cast<int64_t>(images.size()), first.channels, first.height, first.width});
  for (size_t i = 0; i < images.size(); ++i) {
    TORCH_CHECK(images[i].chw.size() == static_cast<size_t>(out[0].numel()), "stack_pixels: size mismatch");
    std::memcpy(out[i].data_ptr<float>(), images[i].chw.data(), images[i].chw.size() * sizeof(float));
  }
  return out;
}

}  // namespace gad
