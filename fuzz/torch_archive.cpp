// torch.save archives: the zip container, gad's unpickler (dicts, OrderedDicts, the model_state /
// state_dict / model wrappers, _rebuild_tensor_v2 over storages) and Weights::load on top of it
// (float conversion, the `module.` prefix), plus the tensor-list reader used for prompt files.
#include "fuzz_support.h"
#include "io/torch_archive.h"
#include "model/weights.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gad::fuzz::write_input_file(data, size, "checkpoint.pt");
  try {
    gad::Weights w = gad::Weights::load(path);
    for (const auto& [name, t] : w.all()) (void)t.sum();  // every tensor is readable
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  try {
    for (const auto& raw : gad::read_torch_tensors(path)) (void)gad::to_tensor(raw).sum();
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  return 0;
}
