// Safetensors: the u64 header length, the JSON header (dtype, shape, data_offsets, __metadata__)
// and every offset against the file size, read from a file as gad reads weights and .gadref sets.
#include <cstring>

#include "fuzz_support.h"
#include "io/safetensors.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gad::fuzz::write_input_file(data, size, "model.safetensors");
  try {
    gad::SafetensorsContents c = gad::read_safetensors(path);
    // Touch every byte of every tensor: the reader promised they lie inside the mapping.
    volatile uint8_t sum = 0;
    for (const auto& [name, t] : c.tensors)
      for (size_t i = 0; i < t.nbytes; ++i) sum = sum + t.data[i];
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  return 0;
}
