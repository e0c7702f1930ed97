// The CLIP BPE tokenizer on arbitrary bytes (class names come from users and requests): HTML
// unescaping, whitespace and case folding, CLIP's regex split and BPE over the shipped vocabulary.
#include <cstdlib>

#include "clip/tokenizer.h"
#include "fuzz_support.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const gad::Tokenizer tok = gad::Tokenizer::load_default();
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const std::vector<int64_t> ids = tok.tokenize(text);  // encode() plus SOT/EOT and padding
    if (ids.size() != 77 || ids[0] != gad::Tokenizer::kSot) std::abort();
    for (int64_t id : ids) {
      if (id < 0 || id > gad::Tokenizer::kEot) std::abort();
      (void)tok.decode_piece(static_cast<int32_t>(id));
    }
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  return 0;
}
