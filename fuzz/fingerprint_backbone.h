// A backbone that answers only what ReferenceSet::load asks of one (its fingerprint and sizes):
// the .gadref fuzz target and its regression tests load sets without any model.
#pragma once

#include "backbone/backbone.h"

namespace gad::fuzz {

class FingerprintOnlyBackbone : public Backbone {
 public:
  std::string kind() const override { return "lite"; }
  std::string description() const override { return "fuzz backbone"; }
  std::string fingerprint() const override { return "fuzz-backbone"; }
  int64_t embed_dim() const override { return 4; }
  int64_t grid() const override { return 2; }
  int64_t input_size() const override { return 8; }
  PixelTensor preprocess(const Image&) const override { return {}; }

 protected:
  Features encode_impl(const at::Tensor&) const override { return {}; }
};

}  // namespace gad::fuzz
