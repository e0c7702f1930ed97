// .gadref reference sets: safetensors (banks, globals, text prior) whose __metadata__.gad holds
// JSON (format, backbone fingerprint, class, sources, scorer, views, calibrated threshold), loaded
// by ReferenceSet::load against a backbone. The backbone here only answers the questions load
// asks (fingerprint "fuzz-backbone", embedding width 4); seeds carry that fingerprint.
#include "backbone/backbone.h"
#include "fuzz_support.h"
#include "inctrl/reference_set.h"
#include "util/error.h"

namespace {

class FingerprintOnlyBackbone : public gad::Backbone {
 public:
  std::string kind() const override { return "lite"; }
  std::string description() const override { return "fuzz backbone"; }
  std::string fingerprint() const override { return "fuzz-backbone"; }
  int64_t embed_dim() const override { return 4; }
  int64_t grid() const override { return 2; }
  int64_t input_size() const override { return 8; }
  gad::PixelTensor preprocess(const gad::Image&) const override { return {}; }

 protected:
  gad::Features encode_impl(const at::Tensor&) const override { return {}; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const FingerprintOnlyBackbone backbone;
  const std::string path = gad::fuzz::write_input_file(data, size, "set.gadref");
  try {
    gad::ReferenceSet set = gad::ReferenceSet::load(path, backbone);
    (void)set.k();
    for (const auto& b : set.banks) (void)b.sum();
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  return 0;
}
