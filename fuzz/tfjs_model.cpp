// TF.js layers models: model.json (modelTopology, the Keras layer graph and its inbound_nodes;
// weightsManifest with dtypes, shapes and uint8/uint16 quantisation) and the shard bytes, as gad
// reads them from an npm package. Input: model.json, kPartSeparator, shard bytes.
#include "fuzz_support.h"
#include "lite/tfjs_model.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto parts = gad::fuzz::split_parts(data, size, 2);
  const std::vector<uint8_t> shard =
      parts.size() > 1 ? std::vector<uint8_t>(parts[1].begin(), parts[1].end()) : std::vector<uint8_t>();
  try {
    gad::TfjsModel m = gad::TfjsModel::from_tfjs_memory(parts[0], shard, "fuzz/model.json");
    (void)m.input_shape();
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  return 0;
}
