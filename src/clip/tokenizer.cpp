// CLIP BPE tokenizer: a line-by-line port of open_clip's SimpleTokenizer (tokenizer.py).
//
// Text cleaning follows Python exactly: html.unescape twice, str.strip, regex.sub(r'\s+', ' '),
// str.strip, str.lower, then regex.findall with CLIP's split pattern. Lowercasing uses ICU's
// root-locale full case mapping (the same SpecialCasing + Final_Sigma rules str.lower applies);
// the split uses PCRE2 in UTF + UCP mode. Both were checked against Python 3.11 + `regex` on every
// character of Unicode 14 (the version of PCRE2 10.42's tables); characters assigned later may
// split differently. Each piece is then mapped to byte-level characters and merged by rank.
#include "clip/tokenizer.h"

#include <unicode/locid.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>
#include <zlib.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <unordered_map>

#include "clip/html_entities.h"
#include "util/assets.h"
#include "util/error.h"


namespace gad {
namespace {

constexpr int kNumMerges = 49152 - 256 - 2;  // lines 1..48894 of the file; line 0 is a header
constexpr int kVocabSize = 49408;
constexpr char32_t kReplacementChar = 0xFFFD;
constexpr std::string_view kSotText = "<start_of_text>";
constexpr std::string_view kEotText = "<end_of_text>";

// open_clip's split pattern, compiled with IGNORECASE like the original, with two changes that
// make PCRE2 answer as the Python `regex` module does:
// - \s is spelled \p{White_Space}: PCRE2's \s also takes U+180E, which `regex` does not;
// - U+0345 is kept out of the last class: under IGNORECASE `regex` rejects a character from a
//   negated class when a case variant (here its fold, Greek iota) is in it, so Python drops
//   U+0345 like a space.
constexpr std::string_view kSplitPattern =
    R"(<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\p{White_Space}\p{L}\p{N}\x{345}]+)";

// ---------------------------------------------------------------------------------------------
// UTF-8 <-> UTF-32. Cleaning works on code points because Python's rules count code points
// (the entity-name limit of 32, strip, whitespace), not bytes.

// Length of the UTF-8 sequence at s[i], or 0 if it is not a valid, shortest-form scalar value.
size_t utf8_sequence_length(std::string_view s, size_t i, char32_t& out) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char lead = byte(i);
  size_t len = lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xE ? 3 : (lead >> 3) == 0x1E ? 4 : 0;
  if (len == 0 || i + len > s.size()) return 0;
  char32_t c = len == 1 ? lead : lead & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    c = (c << 6) | (byte(i + k) & 0x3F);
  }
  static constexpr char32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
  if (c < kMinForLength[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  out = c;
  return len;
}

// Invalid bytes become U+FFFD one at a time; Python never sees such input, so any choice is ours.
std::u32string utf8_to_u32(std::string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    char32_t c = 0;
    const size_t len = utf8_sequence_length(s, i, c);
    out.push_back(len ? c : kReplacementChar);
    i += len ? len : 1;
  }
  return out;
}

void append_utf8(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c));
  } else if (c < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (c >> 6)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else if (c < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (c >> 12)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (c >> 18)));
    out.push_back(static_cast<char>(0x80 | ((c >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((c >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (c & 0x3F)));
  }
}

// ---------------------------------------------------------------------------------------------
// html.unescape. Python substitutes every match of
//   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
// in one left-to-right pass; the replacement text is not rescanned.

bool is_digit(char32_t c) { return c >= U'0' && c <= U'9'; }
bool is_hex_digit(char32_t c) {
  return is_digit(c) || (c >= U'a' && c <= U'f') || (c >= U'A' && c <= U'F');
}
bool is_entity_name_char(char32_t c) {
  return c != U'\t' && c != U'\n' && c != U'\f' && c != U' ' && c != U'<' && c != U'&' &&
         c != U'#' && c != U';';
}

// Length of the regex group after '&' at the start of `rest`, 0 when the pattern does not match.
size_t charref_length(std::u32string_view rest) {
  const auto optional_semicolon = [&](size_t j) { return j < rest.size() && rest[j] == U';' ? j + 1 : j; };
  if (!rest.empty() && rest[0] == U'#') {
    size_t j = 1;
    if (j < rest.size() && is_digit(rest[j])) {
      while (j < rest.size() && is_digit(rest[j])) ++j;
      return optional_semicolon(j);
    }
    if (j + 1 < rest.size() && (rest[j] == U'x' || rest[j] == U'X') && is_hex_digit(rest[j + 1])) {
      j += 1;
      while (j < rest.size() && is_hex_digit(rest[j])) ++j;
      return optional_semicolon(j);
    }
    return 0;  // '#' is outside the name class, so no other alternative can match
  }
  size_t j = 0;
  while (j < rest.size() && j < 32 && is_entity_name_char(rest[j])) ++j;
  return j == 0 ? 0 : optional_semicolon(j);
}

// int(digits, base), saturated just above the Unicode range: any larger value maps the same way.
char32_t parse_charref_number(std::u32string_view digits, int base) {
  char32_t num = 0;
  for (char32_t c : digits) {
    if (c == U';') break;
    const char32_t d = is_digit(c) ? c - U'0' : (c | 0x20) - U'a' + 10;
    num = std::min<char32_t>(num * base + d, 0x110000);
  }
  return num;
}

std::u32string replace_numeric_charref(std::u32string_view ref) {
  const bool hex = ref[1] == U'x' || ref[1] == U'X';
  const char32_t num = parse_charref_number(ref.substr(hex ? 2 : 1), hex ? 16 : 10);
  if (const auto fixed = html::invalid_charref_replacement(num)) return std::u32string(1, *fixed);
  if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return std::u32string(1, kReplacementChar);
  if (html::is_invalid_codepoint(num)) return {};
  return std::u32string(1, num);
}

// A named reference, or failing that its longest prefix (2+ chars) that is a legacy entity.
std::u32string replace_named_charref(std::u32string_view ref) {
  if (const auto value = html::find_entity(ref)) return std::u32string(*value);
  for (size_t x = ref.size() - 1; x >= 2; --x) {
    if (const auto value = html::find_entity(ref.substr(0, x))) {
      return std::u32string(*value).append(ref.substr(x));
    }
  }
  return std::u32string(U"&").append(ref);
}

std::u32string html_unescape(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t len = s[i] == U'&' ? charref_length(s.substr(i + 1)) : 0;
    if (len == 0) {
      out.push_back(s[i++]);
      continue;
    }
    const std::u32string_view ref = s.substr(i + 1, len);
    out += ref[0] == U'#' ? replace_numeric_charref(ref) : replace_named_charref(ref);
    i += 1 + len;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Whitespace and case.

// The `regex` module's \s is exactly the Unicode White_Space property.
bool is_regex_space(char32_t c) { return u_isUWhiteSpace(static_cast<UChar32>(c)); }

// str.isspace (what str.strip removes) adds the separators U+001C..U+001F to White_Space.
bool is_python_space(char32_t c) { return is_regex_space(c) || (c >= 0x1C && c <= 0x1F); }

std::u32string_view python_strip(std::u32string_view s) {
  size_t begin = 0, end = s.size();
  while (begin < end && is_python_space(s[begin])) ++begin;
  while (end > begin && is_python_space(s[end - 1])) --end;
  return s.substr(begin, end - begin);
}

// regex.sub(r'\s+', ' ', s)
std::u32string collapse_whitespace(std::u32string_view s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) {
    // Every ' ' in `out` comes from a whitespace run, so a trailing ' ' means we are inside one.
    if (!is_regex_space(c)) {
      out.push_back(c);
    } else if (out.empty() || out.back() != U' ') {
      out.push_back(U' ');
    }
  }
  return out;
}

// str.lower: full case mapping (U+0130 -> "i\u0307") with the Final_Sigma context, which is what
// ICU's root locale does. Returns UTF-8, ready for the split regex.
std::string lowercase_to_utf8(const std::u32string& s) {
  icu::UnicodeString text = icu::UnicodeString::fromUTF32(reinterpret_cast<const UChar32*>(s.data()),
                                                          static_cast<int32_t>(s.size()));
  text.toLower(icu::Locale::getRoot());
  std::string out;
  text.toUTF8String(out);
  return out;
}

// whitespace_clean(basic_clean(text)).lower() with ftfy.fix_text as the identity.
std::string clean_text(const std::string& utf8_text) {
  const std::u32string unescaped = html_unescape(html_unescape(utf8_to_u32(utf8_text)));
  const std::u32string collapsed = collapse_whitespace(python_strip(unescaped));
  return lowercase_to_utf8(std::u32string(python_strip(collapsed)));
}

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet: open_clip's bytes_to_unicode(). Printable Latin-1 bytes stand for
// themselves; the other 68 bytes map to U+0100.. in byte order. Vocabulary ids 0..255 follow
// the dict's insertion order: the printable bytes first, then the remapped ones.
struct ByteAlphabet {
  std::array<std::string, 256> char_of_byte;  // UTF-8 of the stand-in character
  std::array<int, 256> byte_of_id;            // vocabulary order
};

ByteAlphabet make_byte_alphabet() {
  ByteAlphabet alphabet{};
  const auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); };
  std::array<char32_t, 256> stand_in{};
  int next_id = 0;
  for (int b = 0; b < 256; ++b) {
    if (printable(b)) stand_in[b] = static_cast<char32_t>(b), alphabet.byte_of_id[next_id++] = b;
  }
  char32_t next_extra = 256;
  for (int b = 0; b < 256; ++b) {
    if (!printable(b)) stand_in[b] = next_extra++, alphabet.byte_of_id[next_id++] = b;
  }
  for (int b = 0; b < 256; ++b) append_utf8(alphabet.char_of_byte[b], stand_in[b]);
  return alphabet;
}

// ---------------------------------------------------------------------------------------------
// Vocabulary file.

std::string read_gzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) fail(path, ": cannot open BPE vocabulary (", std::strerror(errno), ")");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> closer(file, gzclose);
  std::string data;
  std::array<char, 1 << 16> buffer;
  int n = 0;
  while ((n = gzread(file, buffer.data(), buffer.size())) > 0) data.append(buffer.data(), n);
  int code = Z_OK;
  const char* message = gzerror(file, &code);
  if (n < 0 || code != Z_OK) {
    std::string_view reason = message;  // zlib prefixes its messages with the path
    if (reason.substr(0, path.size() + 2) == path + ": ") reason.remove_prefix(path.size() + 2);
    fail(path, ": corrupt BPE vocabulary (", reason, ")");
  }
  if (gzdirect(file)) fail(path, ": BPE vocabulary is not a gzip file");
  return data;
}

// Python's tuple(line.split()) for a merge line; nullopt unless it has exactly two parts.
std::optional<std::pair<std::string, std::string>> split_merge_line(std::string_view line) {
  constexpr std::string_view kSpace = " \t\r\v\f";
  const size_t a = line.find_first_not_of(kSpace);
  const size_t a_end = line.find_first_of(kSpace, a);
  const size_t b = line.find_first_not_of(kSpace, a_end);
  const size_t b_end = line.find_first_of(kSpace, b);
  if (a == std::string_view::npos || b == std::string_view::npos) return std::nullopt;
  if (b_end != std::string_view::npos && line.find_first_not_of(kSpace, b_end) != std::string_view::npos) {
    return std::nullopt;
  }
  return std::make_pair(std::string(line.substr(a, a_end - a)), std::string(line.substr(b, b_end - b)));
}

// Lines 1..kNumMerges of the file (line 0 is a version header).
std::vector<std::pair<std::string, std::string>> parse_merges(std::string_view text, const std::string& path) {
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(kNumMerges);
  size_t pos = text.find('\n');
  while (pos != std::string_view::npos && static_cast<int>(merges.size()) < kNumMerges) {
    const size_t begin = pos + 1;
    pos = text.find('\n', begin);
    if (pos == std::string_view::npos && begin == text.size()) break;  // the file's final newline
    const auto merge = split_merge_line(text.substr(begin, pos == std::string_view::npos ? pos : pos - begin));
    if (!merge) fail(path, ": corrupt BPE vocabulary (line ", merges.size() + 1, " is not a merge pair)");
    merges.push_back(*merge);
  }
  if (static_cast<int>(merges.size()) < kNumMerges) {
    fail(path, ": corrupt BPE vocabulary (", merges.size(), " merges, expected ", kNumMerges, ")");
  }
  return merges;
}

struct PcreCodeFree {
  void operator()(pcre2_code* code) const { pcre2_code_free(code); }
};
struct PcreMatchDataFree {
  void operator()(pcre2_match_data* data) const { pcre2_match_data_free(data); }
};

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buffer{};
  pcre2_get_error_message(code, buffer.data(), buffer.size());
  return reinterpret_cast<const char*>(buffer.data());
}

std::unique_ptr<pcre2_code, PcreCodeFree> compile_split_regex() {
  int error = 0;
  PCRE2_SIZE offset = 0;
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kSplitPattern.data()), kSplitPattern.size(),
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_CASELESS, &error, &offset, nullptr);
  if (code == nullptr) fail("tokenizer: cannot compile the split regex (", pcre2_message(error), ")");
  return std::unique_ptr<pcre2_code, PcreCodeFree>(code);
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Tokenizer::Impl {
  ByteAlphabet alphabet;
  std::vector<std::string> decoder;                        // id -> vocabulary string
  std::unordered_map<std::string, int32_t> encoder;        // vocabulary string -> id
  std::unordered_map<std::string, int32_t> merge_rank;     // "first second" -> rank
  std::unique_ptr<pcre2_code, PcreCodeFree> split_regex;   // read-only after compile: shareable

  void build_vocabulary(const std::vector<std::pair<std::string, std::string>>& merges);
  std::vector<std::string> bpe(std::string_view piece) const;
  template <typename Visit>
  void for_each_piece(const std::string& text, Visit visit) const;
};

void Tokenizer::Impl::build_vocabulary(const std::vector<std::pair<std::string, std::string>>& merges) {
  decoder.reserve(kVocabSize);
  for (int b : alphabet.byte_of_id) decoder.push_back(alphabet.char_of_byte[b]);
  for (int b : alphabet.byte_of_id) decoder.push_back(alphabet.char_of_byte[b] + "</w>");
  for (const auto& [first, second] : merges) decoder.push_back(first + second);
  decoder.emplace_back(kSotText);
  decoder.emplace_back(kEotText);
  // dict(zip(...)) semantics: a repeated key keeps its last id / rank.
  for (size_t id = 0; id < decoder.size(); ++id) encoder[decoder[id]] = static_cast<int32_t>(id);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    merge_rank[merges[rank].first + ' ' + merges[rank].second] = static_cast<int32_t>(rank);
  }
}

// SimpleTokenizer.bpe: start from one symbol per byte ("</w>" on the last) and repeatedly merge
// every occurrence of the adjacent pair with the lowest rank, left to right.
std::vector<std::string> Tokenizer::Impl::bpe(std::string_view piece) const {
  std::vector<std::string> word;
  for (unsigned char b : piece) word.push_back(alphabet.char_of_byte[b]);
  word.back() += "</w>";
  while (word.size() > 1) {
    int32_t best = INT32_MAX;
    size_t best_at = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const auto it = merge_rank.find(word[i] + ' ' + word[i + 1]);
      if (it != merge_rank.end() && it->second < best) best = it->second, best_at = i;
    }
    if (best == INT32_MAX) break;
    const std::string first = word[best_at], second = word[best_at + 1];
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      const bool pair = i + 1 < word.size() && word[i] == first && word[i + 1] == second;
      merged.push_back(pair ? first + second : word[i]);
      i += pair ? 2 : 1;
    }
    word.swap(merged);
  }
  return word;
}

// regex.findall(pat, text): successive leftmost matches; unmatched characters (spaces) are skipped.
template <typename Visit>
void Tokenizer::Impl::for_each_piece(const std::string& text, Visit visit) const {
  std::unique_ptr<pcre2_match_data, PcreMatchDataFree> match(
      pcre2_match_data_create_from_pattern(split_regex.get(), nullptr));
  if (!match) fail("tokenizer: out of memory for regex match data");
  const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  for (PCRE2_SIZE offset = 0; offset < text.size();) {
    const int rc = pcre2_match(split_regex.get(), subject, text.size(), offset, 0, match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) fail("tokenizer: regex match failed (", pcre2_message(rc), ")");
    const PCRE2_SIZE* span = pcre2_get_ovector_pointer(match.get());
    if (span[1] <= span[0]) fail("tokenizer: split regex matched an empty piece");
    visit(std::string_view(text).substr(span[0], span[1] - span[0]));
    offset = span[1];
  }
}

Tokenizer Tokenizer::load(const std::string& bpe_gz_path) {
  const auto merges = parse_merges(read_gzip(bpe_gz_path), bpe_gz_path);
  auto impl = std::make_shared<Impl>();
  impl->alphabet = make_byte_alphabet();
  impl->build_vocabulary(merges);
  impl->split_regex = compile_split_regex();
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::load_default() { return load(asset_path("bpe_simple_vocab_16e6.txt.gz")); }

std::vector<int32_t> Tokenizer::encode(const std::string& utf8_text) const {
  std::vector<int32_t> ids;
  impl_->for_each_piece(clean_text(utf8_text), [&](std::string_view piece) {
    // open_clip pre-seeds its BPE cache with the two special tokens, so they map straight to ids.
    if (piece == kSotText || piece == kEotText) {
      ids.push_back(piece == kSotText ? kSot : kEot);
      return;
    }
    for (const std::string& symbol : impl_->bpe(piece)) ids.push_back(impl_->encoder.at(symbol));
  });
  return ids;
}

std::vector<int64_t> Tokenizer::tokenize(const std::string& text, int context_length) const {
  if (context_length < 1) fail("tokenizer: context_length must be positive, got ", context_length);
  const std::vector<int32_t> ids = encode(text);
  std::vector<int64_t> out;
  out.reserve(std::max<size_t>(ids.size() + 2, context_length));
  out.push_back(kSot);
  out.insert(out.end(), ids.begin(), ids.end());
  out.push_back(kEot);
  if (out.size() > static_cast<size_t>(context_length)) {
    out.resize(context_length);
    out.back() = kEot;
  }
  out.resize(context_length, 0);
  return out;
}

std::string Tokenizer::decode_piece(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(impl_->decoder.size())) {
    fail("tokenizer: id ", id, " is outside the vocabulary (0..", impl_->decoder.size() - 1, ")");
  }
  return impl_->decoder[id];
}

}  // namespace gad
