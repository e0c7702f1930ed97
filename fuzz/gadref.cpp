// .gadref reference sets: safetensors (banks, globals, text prior) whose __metadata__.gad holds
// JSON (format, backbone fingerprint, class, sources, scorer, views, calibrated threshold), loaded
// by ReferenceSet::load against a backbone. The backbone here only answers the questions load
// asks (fingerprint "fuzz-backbone", embedding width 4); seeds carry that fingerprint.
#include "backbone/backbone.h"
#include "fingerprint_backbone.h"
#include "fuzz_support.h"
#include "scorers/reference_set.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const gad::fuzz::FingerprintOnlyBackbone backbone;
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
