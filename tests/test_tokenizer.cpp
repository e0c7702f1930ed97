// Checks gad::Tokenizer against ids produced by the official open_clip tokenizer.
//
// The text tower pools at the EOT position and embeds every id, so anything short of exact
// equality would change the model's output: every comparison here is exact.
#include "clip/tokenizer.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "util/error.h"

namespace {

using json = nlohmann::json;

const gad::Tokenizer& tokenizer() {
  static const gad::Tokenizer instance = gad::Tokenizer::load_default();
  return instance;
}

const json& fixture() {
  static const json data = [] {
    const std::string path = std::string(GAD_SHARED_DIR) + "/fixtures/inctrl/tokenizer.json";
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot open " + path);
    return json::parse(in);
  }();
  return data;
}

std::vector<int64_t> ids_of(const json& entry) { return entry.at("ids").get<std::vector<int64_t>>(); }

std::string temp_file(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + "gad_tokenizer_" + name;
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// Loading `path` must fail with a gad::Error whose one-line message names the file.
void expect_load_error(const std::string& path) {
  try {
    gad::Tokenizer::load(path);
    ADD_FAILURE() << "loading " << path << " did not throw";
  } catch (const gad::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

TEST(Tokenizer, PromptSetsMatchOpenClip) {
  const json& sets = fixture().at("prompt_sets");
  int checked = 0;
  for (const auto& [name, set] : sets.items()) {
    for (const char* state : {"normal", "anomaly"}) {
      for (const json& prompt : set.at(state)) {
        const std::string text = prompt.at("text");
        EXPECT_EQ(tokenizer().tokenize(text), ids_of(prompt)) << name << "/" << state << ": " << text;
        ++checked;
      }
    }
  }
  EXPECT_EQ(checked, 5 * (154 + 88) + 2 * 2);  // elpv metal_nut pcb1 candle headct + cat animal
}

TEST(Tokenizer, TrickyStringsMatchOpenClip) {
  const json& strings = fixture().at("strings");
  EXPECT_EQ(strings.size(), 31u);
  for (const json& entry : strings) {
    const std::string text = entry.at("text");
    SCOPED_TRACE("text: \"" + text + "\"");
    const std::vector<int64_t> ids = tokenizer().tokenize(text);
    EXPECT_EQ(ids, ids_of(entry));
    EXPECT_EQ(static_cast<int>(tokenizer().encode(text).size()) + 2, entry.at("untruncated_length").get<int>());
    const auto length = entry.at("length").get<size_t>();
    const auto pieces = entry.at("pieces").get<std::vector<std::string>>();
    ASSERT_EQ(pieces.size(), length);
    for (size_t i = 0; i < length; ++i) EXPECT_EQ(tokenizer().decode_piece(static_cast<int32_t>(ids[i])), pieces[i]);
  }
}

// Behaviour the fixture does not reach; expected ids from open_clip's SimpleTokenizer run under
// Python 3.11 with the `regex` module (ftfy as identity).
TEST(Tokenizer, UnicodeAndHtmlEdgeCasesMatchPython) {
  struct Case {
    std::string text;
    std::vector<int64_t> ids;  // up to and including EOT
  };
  const std::vector<Case> cases = {
    {"&ampfoo &amp &notit; &notin &AMP; &#128;&#x80; &#0; &#x110000; &#55296; &#1;x &#99999999999999999999; &#X41;", // numeric and named references, legacy prefixes
     {49406, 261, 23435, 261, 126, 361, 585, 282, 126, 361, 530, 261, 34919, 6309, 39802, 39802, 39802, 343, 39802, 320, 49407}},
    {"&amp;#39;s &amp;notin; &#38;#x41;", // second unescape pass sees the first pass output
     {49406, 568, 17788, 487, 320, 49407}},
    {"\xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3\xce\x91\xce\xa3. \xc4\xb0stanbul \xc7\x85 \xe2\x84\xaa \xe1\xba\x9e", // full lowercase: final sigma, dotted I, titlecase, Kelvin sign
     {49406, 138, 123, 138, 112, 138, 123, 139, 480, 139, 225, 138, 109, 139, 480, 269, 328, 16384, 11231, 131, 484, 330, 127, 509, 49407}},
    {"\x1cx\x1cy\x1d \xc2\x85\xc2\xa0\xe2\x80\xa8z\xe3\x80\x80\x1e", // strip removes U+001C..1F at the ends; \s is White_Space
     {49406, 343, 472, 344, 473, 345, 49407}},
    {"<\xc5\xbftart_of_text> '\xc5\xbf 'S 'LL <Start_Of_Text>", // caseless split: long s matches s
     {49406, 27, 129, 123, 16707, 62, 684, 62, 18169, 285, 6, 129, 379, 568, 1342, 49406, 49407}},
    {"&lt;end_of_text&gt; &amp;lt;b&amp;gt;", // an unescaped special token is still special
     {49406, 49407, 283, 321, 285, 49407}},
    {"a\xcd\x85" "b \xe1\xa0\x8e\xe1\xa0\x8ex", // U+0345 is dropped (a regex IGNORECASE quirk); U+180E is not \s
     {49406, 320, 321, 157, 254, 236, 157, 254, 492, 343, 49407}},
    {"\xef\xac\x81ne \xc2\xbd\xe2\x91\xa0\xef\xbc\x91\xc2\xb2 \xf0\x9d\x90\x80", // ligature, other numbers are single digits, math letters
     {49406, 171, 105, 223, 1422, 33613, 158, 239, 510, 171, 120, 495, 41175, 15889, 478, 49407}},
  };
  for (const Case& c : cases) {
    std::vector<int64_t> expected = c.ids;
    expected.resize(77, 0);
    EXPECT_EQ(tokenizer().tokenize(c.text), expected) << c.text;
  }
}

TEST(Tokenizer, ContextLengthTruncatesToEot) {
  using gad::Tokenizer;
  EXPECT_EQ(tokenizer().tokenize("a photo of", 4), (std::vector<int64_t>{Tokenizer::kSot, 320, 1125, Tokenizer::kEot}));
  EXPECT_EQ(tokenizer().tokenize("a photo of", 6), (std::vector<int64_t>{Tokenizer::kSot, 320, 1125, 539, Tokenizer::kEot, 0}));
  EXPECT_EQ(tokenizer().tokenize("", 3), (std::vector<int64_t>{Tokenizer::kSot, Tokenizer::kEot, 0}));
  EXPECT_THROW(tokenizer().tokenize("a", 0), gad::Error);
}

TEST(Tokenizer, VocabularyLayout) {
  EXPECT_EQ(tokenizer().decode_piece(0), "!");           // bytes_to_unicode order, not byte order
  EXPECT_EQ(tokenizer().decode_piece(256), "!</w>");
  EXPECT_EQ(tokenizer().decode_piece(512), "in");        // first merge line: "i n"
  EXPECT_EQ(tokenizer().decode_piece(49405), "jekyll</w>");  // merge line 48894, the last used
  EXPECT_EQ(tokenizer().decode_piece(gad::Tokenizer::kSot), "<start_of_text>");
  EXPECT_EQ(tokenizer().decode_piece(gad::Tokenizer::kEot), "<end_of_text>");
  EXPECT_THROW(tokenizer().decode_piece(49408), gad::Error);
  EXPECT_THROW(tokenizer().decode_piece(-1), gad::Error);
}

TEST(Tokenizer, MissingVocabularyIsAnErrorNamingTheFile) {
  expect_load_error(::testing::TempDir() + "gad_tokenizer_no_such_vocab.txt.gz");
}

TEST(Tokenizer, CorruptVocabularyIsAnErrorNamingTheFile) {
  expect_load_error(temp_file("plain.txt.gz", "\"bpe_simple_vocab_16e6.txt#version: 0.2\ni n\n"));
  expect_load_error(temp_file("empty.txt.gz", ""));

  std::ifstream real(std::string(GAD_SOURCE_ASSETS) + "/bpe_simple_vocab_16e6.txt.gz", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(real)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 100000u);
  expect_load_error(temp_file("truncated.txt.gz", bytes.substr(0, bytes.size() / 2)));

  // A valid gzip stream holding the header and only two merges.
  const unsigned char short_gz[] = {
      0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x03, 0x53, 0x4a, 0x2a, 0x48, 0x8d, 0x2f, 0xce,
      0xcc, 0x2d, 0xc8, 0x49, 0x8d, 0x2f, 0xcb, 0x4f, 0x4e, 0x4c, 0x8a, 0x37, 0x34, 0x4b, 0x35, 0xd3, 0x2b,
      0xa9, 0x28, 0x51, 0x2e, 0x4b, 0x2d, 0x2a, 0xce, 0xcc, 0xcf, 0xb3, 0x52, 0x30, 0xd0, 0x33, 0xe2, 0xca,
      0x54, 0xc8, 0xe3, 0x2a, 0x51, 0xc8, 0xe0, 0x02, 0x00, 0x72, 0xae, 0xae, 0x42, 0x30, 0x00, 0x00, 0x00};
  expect_load_error(temp_file("short.txt.gz", std::string(std::begin(short_gz), std::end(short_gz))));
}

}  // namespace
