// torch.save archives: the zip container, gad's unpickler (dicts, OrderedDicts, the model_state /
// state_dict / model wrappers, _rebuild_tensor_v2 over storages) and Weights::load on top of it
// (float conversion, the `module.` prefix), plus the tensor-list reader used for prompt files.
//
// Input: one selector byte. Even: the rest is the file, as it comes. Odd: the rest is parts cut at
// kPartSeparator (data.pkl, then storages 0, 1, ...), zipped here into a well-formed archive with
// valid CRCs, so mutations reach the unpickler instead of failing the zip's checksum.
#include <zip.h>

#include <stdexcept>

#include "fuzz_support.h"
#include "io/torch_archive.h"
#include "model/weights.h"
#include "util/error.h"

namespace {

std::string write_archive(const std::vector<std::string>& parts) {
  const std::string path = gad::fuzz::write_input_file(nullptr, 0, "checkpoint.pt");
  int code = 0;
  zip_t* zip = zip_open(path.c_str(), ZIP_CREATE | ZIP_TRUNCATE, &code);
  if (!zip) throw std::runtime_error("cannot create " + path);
  const std::string version = "3\n";
  auto add = [&](const std::string& name, const std::string& bytes) {
    zip_source_t* source = zip_source_buffer(zip, bytes.data(), bytes.size(), 0);
    const zip_int64_t index = zip_file_add(zip, name.c_str(), source, ZIP_FL_OVERWRITE);
    if (index < 0) throw std::runtime_error("cannot add " + name);
    zip_set_file_compression(zip, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0);
  };
  add("archive/data.pkl", parts[0]);
  for (size_t i = 1; i < parts.size(); ++i) add("archive/data/" + std::to_string(i - 1), parts[i]);
  add("archive/version", version);
  if (zip_close(zip) != 0) throw std::runtime_error("cannot write " + path);
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string path = data[0] % 2 == 0
                               ? gad::fuzz::write_input_file(data + 1, size - 1, "checkpoint.pt")
                               : write_archive(gad::fuzz::split_parts(data + 1, size - 1, 8));
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
