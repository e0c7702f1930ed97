// The OpenAI CLIP byte-level BPE tokenizer, as open_clip's SimpleTokenizer + tokenize().
//
// The text tower was trained on these exact ids, so gad reproduces Python bit for bit: HTML
// unescaped twice, whitespace collapsed, lowercased, split by CLIP's regex, then BPE over the
// 49408-entry vocabulary read from bpe_simple_vocab_16e6.txt.gz. (ftfy.fix_text is taken as the
// identity, as in the reference run.) A loaded Tokenizer is immutable and safe to share.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace gad {

class Tokenizer {
 public:
  // Reads the gzip'd merges file; throws gad::Error naming the file if it is missing or corrupt.
  static Tokenizer load(const std::string& bpe_gz_path);
  // The copy shipped in assets/.
  static Tokenizer load_default();

  // BPE ids of the text, without SOT/EOT. Invalid UTF-8 bytes are read as U+FFFD.
  std::vector<int32_t> encode(const std::string& utf8_text) const;
  // [SOT] + ids + [EOT], zero padded to context_length; a longer sequence keeps its first
  // context_length ids and ends with EOT.
  std::vector<int64_t> tokenize(const std::string& text, int context_length = 77) const;
  // The vocabulary string of an id (byte-level characters, "</w>" ends a word); for debugging.
  std::string decode_piece(int32_t id) const;

  static constexpr int32_t kSot = 49406, kEot = 49407;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace gad
