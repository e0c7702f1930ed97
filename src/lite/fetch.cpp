#include "lite/fetch.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>

#include "io/safetensors.h"
#include "lite/tfjs_model.h"
#include "util/base64.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/npm_package.h"

namespace gad {
namespace {

namespace fs = std::filesystem;

constexpr const char* kPackage = "nsfwjs@4.3.0";
constexpr const char* kTarball = "nsfwjs-4.3.0.tgz";
constexpr const char* kTarballSha = "4496790efc9bdc6f3e85a826a8e482c1fa1e9db4b3d18c095e98cc0c73cfb12f";
constexpr const char* kModelJsonSha = "feffc6868d61e412a4e7a22657a3d07a8a48df6e11688a9e25b77c23cb7b45c9";
constexpr const char* kShardSha = "8e7dddbb16acacc1bf1601b1b8a761e730ff934b7f2d7771312b2f000e5f5f13";
constexpr const char* kLicenseSha = "2f7fe40b4f0d97020f0a0dc2214d637471f6204e565eb83e9fd414f0e5287d94";
constexpr const char* kModelMember = "package/dist/models/mobilenet_v2/model.min.js";
constexpr const char* kShardMember = "package/dist/models/mobilenet_v2/group1-shard1of1.min.js";
constexpr const char* kLicenseMember = "package/LICENSE";

// ---- JavaScript literal -> JSON text, as node's JSON.stringify prints it ----------------------

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | cp >> 6), out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | cp >> 12), out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | cp >> 18), out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F)), out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string json_quote(const std::string& utf8) {
  std::string out = "\"";
  for (unsigned char c : utf8) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

bool is_ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$'; }

// A canonical array index ("0", "17"): JS objects list such keys first, in numeric order.
bool is_index_key(const std::string& k) {
  if (k.empty() || k.size() > 10 || (k.size() > 1 && k[0] == '0')) return false;
  if (!std::all_of(k.begin(), k.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  return std::stoull(k) < 4294967295ull;
}

class JsLiteral {
 public:
  JsLiteral(const std::string& s, size_t pos, const std::string& source) : s_(s), p_(pos), src_(source) {}

  // JSON text of the value at the cursor; `*undefined` is set for `void 0`.
  std::string value(bool* undefined) {
    *undefined = false;
    ws();
    const char c = peek();
    if (c == '{') return object();
    if (c == '[') return array();
    if (c == '"' || c == '\'') return json_quote(string());
    if (c == '-' || c == '.' || std::isdigit(static_cast<unsigned char>(c))) return number();
    if (eat("!0")) return "true";
    if (eat("!1")) return "false";
    if (word("true")) return "true";
    if (word("false")) return "false";
    if (word("null")) return "null";
    if (eat("void 0")) return *undefined = true, "null";
    bad("unexpected character");
  }

  std::string string() {  // a JS string literal, decoded to UTF-8
    const char q = s_[p_++];
    std::string out;
    while (true) {
      if (p_ >= s_.size()) bad("unterminated string");
      const char c = s_[p_++];
      if (c == q) return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      escape(out);
    }
  }

 private:
  const std::string& s_;
  size_t p_;
  const std::string& src_;

  [[noreturn]] void bad(const std::string& what) const { fail(src_, ": cannot decode the module: ", what, " at byte ", p_); }
  char peek() const { return p_ < s_.size() ? s_[p_] : '\0'; }
  void ws() {
    while (p_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[p_]))) ++p_;
  }
  bool eat(const char* t) {
    const size_t n = std::strlen(t);
    if (s_.compare(p_, n, t) != 0) return false;
    p_ += n;
    return true;
  }
  bool word(const char* t) {
    const size_t n = std::strlen(t);
    if (s_.compare(p_, n, t) != 0 || (p_ + n < s_.size() && is_ident_char(s_[p_ + n]))) return false;
    p_ += n;
    return true;
  }
  void expect(char c) {
    ws();
    if (peek() != c) bad(std::string("expected '") + c + "'");
    ++p_;
  }

  uint32_t hex(size_t n) {
    if (p_ + n > s_.size()) bad("short escape");
    uint32_t v = 0;
    for (size_t i = 0; i < n; ++i) {
      const char c = s_[p_++];
      if (!std::isxdigit(static_cast<unsigned char>(c))) bad("bad hex escape");
      v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 32) - 'a' + 10);
    }
    return v;
  }

  uint32_t unicode_escape() {  // after "\u"
    if (peek() != '{') return hex(4);
    const size_t end = s_.find('}', ++p_);
    if (end == std::string::npos) bad("bad \\u{} escape");
    const uint32_t v = hex(end - p_);
    ++p_;
    return v;
  }

  void escape(std::string& out) {
    if (p_ >= s_.size()) bad("unterminated string");
    const char c = s_[p_++];
    switch (c) {
      case 'n': out += '\n'; return;
      case 't': out += '\t'; return;
      case 'r': out += '\r'; return;
      case 'b': out += '\b'; return;
      case 'f': out += '\f'; return;
      case 'v': out += '\v'; return;
      case '0': out += '\0'; return;
      case '\n': return;  // line continuation
      case 'x': append_utf8(out, hex(2)); return;
      case 'u': {
        uint32_t cp = unicode_escape();
        if (cp >= 0xD800 && cp < 0xDC00 && s_.compare(p_, 2, "\\u") == 0) {
          p_ += 2;
          const uint32_t lo = unicode_escape();
          if (lo < 0xDC00 || lo > 0xDFFF) bad("unpaired surrogate");
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xD800 && cp <= 0xDFFF) {
          bad("unpaired surrogate");
        }
        append_utf8(out, cp);
        return;
      }
      default: out += c; return;
    }
  }

  std::string number() {
    bool neg = false;
    if (peek() == '-') neg = true, ++p_, ws();
    const size_t start = p_;
    double v = 0;
    if (s_.compare(p_, 2, "0x") == 0 || s_.compare(p_, 2, "0X") == 0) {
      p_ += 2;
      const size_t digits = p_;
      while (std::isxdigit(static_cast<unsigned char>(peek()))) v = v * 16 + hex(1);
      if (p_ == digits) bad("bad hex number");
    } else {
      while (std::isdigit(static_cast<unsigned char>(peek())) || peek() == '.' || peek() == 'e' || peek() == 'E' ||
             ((peek() == '-' || peek() == '+') && p_ > start && (s_[p_ - 1] == 'e' || s_[p_ - 1] == 'E')))
        ++p_;
      std::string text = s_.substr(start, p_ - start);
      if (text[0] == '.') text = "0" + text;
      auto r = std::from_chars(text.data(), text.data() + text.size(), v);
      if (r.ec == std::errc::result_out_of_range) v = HUGE_VAL;  // 1e999: Infinity
      else if (r.ec != std::errc() || r.ptr != text.data() + text.size()) bad("bad number '" + text + "'");
    }
    if (!std::isfinite(v)) return "null";  // JSON.stringify(Infinity)
    return js_number_string(neg ? -v : v);
  }

  std::string key() {
    ws();
    const char c = peek();
    if (c == '"' || c == '\'') return string();
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '.') return number();
    const size_t start = p_;
    while (is_ident_char(peek())) ++p_;
    if (p_ == start) bad("expected a property name");
    return s_.substr(start, p_ - start);
  }

  std::string object() {
    ++p_;
    std::vector<std::pair<std::string, std::string>> entries;  // key -> JSON value ("" = undefined)
    while (true) {
      ws();
      if (peek() == '}') break;
      std::string k = key();
      expect(':');
      bool undef = false;
      std::string v = value(&undef);
      if (undef) v.clear();
      auto it = std::find_if(entries.begin(), entries.end(), [&](const auto& e) { return e.first == k; });
      if (it != entries.end()) it->second = v;
      else entries.emplace_back(k, v);
      ws();
      if (peek() == ',') ++p_;
      else if (peek() != '}') bad("expected ',' or '}'");
    }
    ++p_;
    auto mid = std::stable_partition(entries.begin(), entries.end(), [](const auto& e) { return is_index_key(e.first); });
    std::sort(entries.begin(), mid, [](const auto& a, const auto& b) { return std::stoull(a.first) < std::stoull(b.first); });
    std::string out = "{";
    for (const auto& [k, v] : entries)
      if (!v.empty()) out += (out.size() > 1 ? "," : "") + json_quote(k) + ":" + v;
    return out + "}";
  }

  std::string array() {
    ++p_;
    std::string out = "[";
    while (true) {
      ws();
      if (peek() == ']') break;
      bool undef = false;
      out += (out.size() > 1 ? "," : "") + value(&undef);
      ws();
      if (peek() == ',') ++p_;
      else if (peek() != ']') bad("expected ',' or ']'");
    }
    ++p_;
    return out + "]";
  }
};

// Position of the literal assigned by the bundle's `<module>.exports=`.
size_t exported_value_pos(const std::string& js, const std::string& source) {
  for (size_t p = js.find(".exports="); p != std::string::npos; p = js.find(".exports=", p + 1)) {
    const char c = p + 9 < js.size() ? js[p + 9] : '\0';
    if (c == '{' || c == '[' || c == '"' || c == '\'') return p + 9;
  }
  fail(source, ": no `module.exports = <literal>` found (not a tfjs model module?)");
}

void log_to(const FetchOptions& o, const std::string& s) {
  if (o.log) o.log(s);
}

std::string license_path(const std::string& models_dir) { return models_dir + "/lite-mobilenet_v2.LICENSE"; }

// True when the installed file records exactly the pinned source hashes (and its licence is there).
bool already_installed(const std::string& models_dir) {
  const std::string path = lite_model_path(models_dir);
  if (!fs::exists(path) || !fs::exists(license_path(models_dir))) return false;
  try {
    auto meta = read_safetensors(path).metadata;
    return meta["source_tarball_sha256"] == kTarballSha && meta["model_json_sha256"] == kModelJsonSha &&
           meta["shard_sha256"] == kShardSha && meta.count("topology");
  } catch (const Error&) {
    return false;
  }
}

void write_text(const std::string& path, const std::string& text) {
  write_file_atomically(path, [&](std::FILE* f) {
    if (std::fwrite(text.data(), 1, text.size(), f) != text.size()) fail(path, ": write error");
  });
}

}  // namespace

// ---- public API --------------------------------------------------------------------------------

std::string js_number_string(double v) {
  if (v == 0) return "0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, std::fabs(v), std::chars_format::scientific);
  const std::string sci(buf, r.ptr);  // "d.ddde-07"
  const size_t e = sci.find('e');
  std::string digits = sci.substr(0, e);
  digits.erase(std::remove(digits.begin(), digits.end(), '.'), digits.end());
  const int k = static_cast<int>(digits.size()), n = std::stoi(sci.substr(e + 1)) + 1;
  std::string out = v < 0 ? "-" : "";
  if (k <= n && n <= 21) return out + digits + std::string(static_cast<size_t>(n - k), '0');
  if (0 < n && n <= 21) return out + digits.substr(0, n) + "." + digits.substr(n);
  if (-6 < n && n <= 0) return out + "0." + std::string(static_cast<size_t>(-n), '0') + digits;
  const std::string exp = std::string(n - 1 < 0 ? "-" : "+") + std::to_string(std::abs(n - 1));
  return out + digits.substr(0, 1) + (k > 1 ? "." + digits.substr(1) : "") + "e" + exp;
}

std::string umd_exported_json(const std::string& js, const std::string& source) {
  const size_t p = exported_value_pos(js, source);
  if (js[p] != '{' && js[p] != '[') fail(source, ": the module exports a string, not an object");
  bool undefined = false;
  return JsLiteral(js, p, source).value(&undefined);
}

std::string umd_exported_string(const std::string& js, const std::string& source) {
  const size_t p = exported_value_pos(js, source);
  if (js[p] != '"' && js[p] != '\'') fail(source, ": the module exports an object, not a string");
  return JsLiteral(js, p, source).string();
}

std::string default_models_dir() {
  if (const char* d = std::getenv("GAD_MODELS_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  if (!home || !*home) fail("HOME is not set: give --dir or set GAD_MODELS_DIR");
  return std::string(home) + "/.cache/gad/models";
}

std::string lite_model_path(const std::string& models_dir) { return models_dir + "/lite-mobilenet_v2.safetensors"; }

std::string install_lite_from_tarball(const std::string& tgz_path, const std::string& models_dir,
                                      const FetchOptions& options) {
  check_sha256(tgz_path, file_sha256(tgz_path), kTarballSha);
  auto files = read_tgz_members(tgz_path, {kModelMember, kShardMember, kLicenseMember});
  const std::string json_text = umd_exported_json(files[kModelMember], kModelMember);
  check_sha256(std::string(kModelMember) + " (decoded model.json)", sha256_of(json_text), kModelJsonSha);
  const std::optional<std::string> decoded = base64_decode(umd_exported_string(files[kShardMember], kShardMember));
  if (!decoded) fail(kShardMember, ": the exported string is not valid base64");
  const std::vector<uint8_t> shard(decoded->begin(), decoded->end());
  check_sha256(std::string(kShardMember) + " (decoded shard)", sha256_hex(shard.data(), shard.size()), kShardSha);
  check_sha256(kLicenseMember, sha256_of(files[kLicenseMember]), kLicenseSha);
  log_to(options, "verified " + std::string(kPackage) + " (tarball, model.json, shard, LICENSE sha256)");

  TfjsModel model = TfjsModel::from_tfjs_memory(json_text, shard, std::string("npm:") + kPackage + "/dist/models/mobilenet_v2");
  const std::string path = lite_model_path(models_dir), lic = license_path(models_dir);
  fs::create_directories(models_dir);
  write_text(lic, files[kLicenseMember]);
  try {
    model.save_gad(path, {{"description", "MobileNetV2 (nsfwjs 4.3.0)"},
                          {"license", "MIT, Copyright (c) 2019 Infinite Red, Inc.; see lite-mobilenet_v2.LICENSE"},
                          {"source_files", std::string(kModelMember) + ", " + kShardMember},
                          {"source_tarball_sha256", kTarballSha},
                          {"model_json_sha256", kModelJsonSha},
                          {"shard_sha256", kShardSha}});
  } catch (...) {
    std::remove(lic.c_str());
    throw;
  }
  log_to(options, "installed " + path);
  return path;
}

std::string fetch_lite_model(const std::string& models_dir, const FetchOptions& options) {
  if (already_installed(models_dir)) {
    log_to(options, "already installed: " + lite_model_path(models_dir));
    return lite_model_path(models_dir);
  }
  std::error_code ec;
  fs::create_directories(models_dir, ec);
  if (ec) fail(models_dir, ": cannot create (", ec.message(), ")");
  ScratchDir tmp(models_dir);
  log_to(options, "running " + options.npm + " pack " + kPackage + " (npm registry)");
  return install_lite_from_tarball(npm_pack(options.npm, kPackage, kTarball, tmp.path), models_dir, options);
}

std::vector<InstalledModel> installed_models(const std::string& models_dir) {
  std::vector<InstalledModel> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(models_dir, ec)) {
    if (!e.is_regular_file() || e.path().extension() != ".safetensors") continue;
    InstalledModel m;
    m.path = e.path().string();
    m.bytes = e.file_size();
    m.has_license = fs::exists(fs::path(e.path()).replace_extension(".LICENSE"));
    try {
      auto meta = read_safetensors(m.path).metadata;
      m.lite = meta.count("topology") != 0;
      m.description = meta.count("description") ? meta["description"] : meta.count("source") ? meta["source"] : "";
    } catch (const Error& err) {
      m.description = std::string("unreadable: ") + err.what();
    }
    out.push_back(std::move(m));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  return out;
}

}  // namespace gad
