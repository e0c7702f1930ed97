#include "io/torch_archive.h"

#include <zip.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#include "util/error.h"

namespace gad {
namespace {

using Bytes = std::vector<uint8_t>;
using SharedBytes = std::shared_ptr<const Bytes>;

// For error messages: names read from the file, escaped so a message stays one printable line.
std::string printable(const std::string& s) {
  constexpr size_t kMax = 120;
  constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t k = 0; k < s.size() && k < kMax; ++k) {
    const unsigned char c = static_cast<unsigned char>(s[k]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += std::string("\\x") + kHex[c >> 4] + kHex[c & 15];
    }
  }
  return s.size() > kMax ? out + "..." : out;
}

// ---------------------------------------------------------------------------------------------
// Zip access (libzip). The archive is only ever read: it is closed with zip_discard so libzip
// never tries to write anything back.

std::string zip_error_text(int code) {
  zip_error_t error;
  zip_error_init_with_code(&error, code);
  std::string text = zip_error_strerror(&error);
  zip_error_fini(&error);
  return text;
}

// First bytes of the file, to tell a truncated zip from a file that is not a zip at all
// (libzip reports both as "Not a zip archive" because the central directory sits at the end).
std::string file_magic(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, sizeof magic);
  return std::string(magic, static_cast<size_t>(in.gcount()));
}

[[noreturn]] void fail_open(const std::string& path, int code) {
  if (code == ZIP_ER_NOZIP || code == ZIP_ER_INCONS) {
    const std::string magic = file_magic(path);
    if (magic.rfind("PK", 0) == 0)
      fail(path, ": truncated or corrupt archive (", zip_error_text(code), ")");
    if (!magic.empty() && static_cast<uint8_t>(magic[0]) == 0x80) {
      fail(path,
           ": not a zip archive (a legacy torch.save file from torch < 1.6; re-save it with "
           "a recent torch)");
    }
    fail(path, ": not a zip archive (not a torch.save file)");
  }
  fail(path, ": cannot open archive: ", zip_error_text(code));
}

class ZipArchive {
 public:
  explicit ZipArchive(const std::string& path) : path_(path) {
    int code = 0;
    zip_ = zip_open(path.c_str(), ZIP_RDONLY, &code);
    if (!zip_) fail_open(path, code);
    std::error_code ec;
    file_size_ = std::filesystem::file_size(path, ec);
    if (ec) fail(path, ": cannot stat (", ec.message(), ")");
  }
  ~ZipArchive() { zip_discard(zip_); }
  ZipArchive(const ZipArchive&) = delete;
  ZipArchive& operator=(const ZipArchive&) = delete;

  bool contains(const std::string& name) const {
    return zip_name_locate(zip_, name.c_str(), 0) >= 0;
  }

  // torch.save puts everything under one top-level folder whose name varies with the file name
  // and torch version; locate it through its data.pkl.
  std::string top_folder() const {
    const zip_int64_t count = zip_get_num_entries(zip_, 0);
    for (zip_int64_t i = 0; i < count; ++i) {
      const char* raw = zip_get_name(zip_, static_cast<zip_uint64_t>(i), 0);
      if (!raw) continue;
      const std::string name = raw;
      const size_t slash = name.find('/');
      if (slash != std::string::npos && name.compare(slash, std::string::npos, "/data.pkl") == 0) {
        return name.substr(0, slash + 1);
      }
    }
    fail(path_,
         ": missing data.pkl (no <folder>/data.pkl entry in the archive; not a torch.save file?)");
  }

  SharedBytes read(const std::string& name) const {
    const zip_int64_t index = zip_name_locate(zip_, name.c_str(), 0);
    if (index < 0) fail(path_, ": entry ", printable(name), " is missing from the archive");
    zip_stat_t stat;
    if (zip_stat_index(zip_, static_cast<zip_uint64_t>(index), 0, &stat) != 0 ||
        !(stat.valid & ZIP_STAT_SIZE)) {
      fail(path_, ": truncated or corrupt archive (cannot stat entry ", printable(name), ")");
    }
    check_stated_size(name, stat);
    auto bytes = std::make_shared<Bytes>(stat.size);
    read_entry(name, static_cast<zip_uint64_t>(index), *bytes);
    return bytes;
  }

 private:
  // The entry's buffer is allocated from the size the archive states, so that size must be one
  // its compressed bytes can produce: a few hundred bytes must not claim gigabytes. Stored
  // entries (torch.save writes storages that way) hold exactly their size; deflate expands at most
  // 1032:1.
  void check_stated_size(const std::string& name, const zip_stat_t& stat) const {
    constexpr uint64_t kMaxDeflateRatio = 1032;
    const bool known = (stat.valid & ZIP_STAT_COMP_SIZE) && (stat.valid & ZIP_STAT_COMP_METHOD);
    const uint64_t ratio = known && stat.comp_method == ZIP_CM_STORE ? 1 : kMaxDeflateRatio;
    if (!known || stat.comp_size > file_size_ || stat.size > stat.comp_size * ratio)
      fail(path_, ": truncated or corrupt archive (entry ", printable(name), " claims ", stat.size, " bytes from ",
           known ? stat.comp_size : 0, " stored bytes in a ", file_size_, "-byte file)");
  }

  void read_entry(const std::string& name, zip_uint64_t index, Bytes& out) const {
    zip_file_t* file = zip_fopen_index(zip_, index, 0);
    if (!file)
      fail(path_, ": truncated or corrupt archive (entry ", printable(name), ": ",
           zip_strerror(zip_), ")");
    // Read until libzip reports end of data: the CRC is only checked at that point.
    size_t done = 0;
    for (;;) {
      char spare;
      const size_t want = done < out.size() ? out.size() - done : 1;
      void* dest = done < out.size() ? static_cast<void*>(out.data() + done) : &spare;
      const zip_int64_t got = zip_fread(file, dest, want);
      if (got < 0 || (got > 0 && done >= out.size())) {
        const std::string why =
            got < 0 ? zip_file_strerror(file) : "more data than its stated size";
        zip_fclose(file);
        fail(path_, ": truncated or corrupt archive (entry ", printable(name), ": ", why, ")");
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    zip_fclose(file);
    if (done != out.size()) {
      fail(path_, ": truncated or corrupt archive (entry ", printable(name), " has ", done, " of ",
           out.size(), " bytes)");
    }
  }

  std::string path_;
  zip_t* zip_ = nullptr;
  uint64_t file_size_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Pickle values. Containers are shared because the memo aliases them: SETITEMS on a dict fetched
// with BINGET must change the dict every other reference sees.

struct Value;
using Items = std::vector<Value>;
struct DictData;

struct Storage {
  DType dtype = DType::F32;
  std::string key;
  int64_t numel = 0;  // in elements of dtype
  SharedBytes bytes;
};

struct Value {
  enum class Kind {
    None,
    Bool,
    Int,
    Float,
    Str,
    Bytes,
    Tuple,
    List,
    Dict,
    Global,
    Opaque,
    Storage,
    Tensor
  };
  Kind kind = Kind::None;
  int64_t i = 0;                            // Bool, Int
  double f = 0;                             // Float
  std::string s;                            // Str, Bytes; Global and Opaque: "module.name"
  std::shared_ptr<Items> items;             // Tuple, List
  std::shared_ptr<DictData> dict;           // Dict
  std::shared_ptr<const Storage> storage;   // Storage
  std::shared_ptr<const RawTensor> tensor;  // Tensor

  bool is(Kind k) const { return kind == k; }
};

// Insertion-ordered, like Python dicts; string keys are indexed so a repeated key replaces.
struct DictData {
  std::vector<std::pair<Value, Value>> entries;
  std::unordered_map<std::string, size_t> by_str;

  void set(Value key, Value value) {
    if (key.is(Value::Kind::Str)) {
      auto [it, fresh] = by_str.emplace(key.s, entries.size());
      if (!fresh) {
        entries[it->second].second = std::move(value);
        return;
      }
    }
    entries.emplace_back(std::move(key), std::move(value));
  }
  const Value* find(const std::string& key) const {
    auto it = by_str.find(key);
    return it == by_str.end() ? nullptr : &entries[it->second].second;
  }
};

Value make(Value::Kind kind) {
  Value v;
  v.kind = kind;
  if (kind == Value::Kind::Tuple || kind == Value::Kind::List) v.items = std::make_shared<Items>();
  if (kind == Value::Kind::Dict) v.dict = std::make_shared<DictData>();
  return v;
}
Value make_int(Value::Kind kind, int64_t i) {
  Value v = make(kind);
  v.i = i;
  return v;
}
Value make_str(Value::Kind kind, std::string s) {
  Value v = make(kind);
  v.s = std::move(s);
  return v;
}
Value make_seq(Value::Kind kind, Items items) {
  Value v = make(kind);
  *v.items = std::move(items);
  return v;
}

// For error messages: what the file held where a tensor or dict was expected.
std::string describe(const Value& v) {
  switch (v.kind) {
    case Value::Kind::None: return "None";
    case Value::Kind::Bool: return "a bool";
    case Value::Kind::Int: return "an int";
    case Value::Kind::Float: return "a float";
    case Value::Kind::Str: return "a string";
    case Value::Kind::Bytes: return "a bytes object";
    case Value::Kind::Tuple: return "a tuple";
    case Value::Kind::List: return "a list";
    case Value::Kind::Dict: return "a dict";
    case Value::Kind::Global: return "the global " + printable(v.s);
    case Value::Kind::Opaque: return "an object built by unsupported global " + printable(v.s);
    case Value::Kind::Storage: return "a bare storage";
    case Value::Kind::Tensor: return "a tensor";
  }
  return "an unknown value";
}

// ---------------------------------------------------------------------------------------------
// Unpickler. Only the binary opcodes (protocol 2, plus the few harmless later ones) are accepted;
// the text opcodes of protocol 0 never appear in torch.save output.

enum Op : uint8_t {
  MARK = '(',
  STOP = '.',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  NONE = 'N',
  BINPERSID = 'Q',
  REDUCE = 'R',
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  BINUNICODE = 'X',
  APPEND = 'a',
  BUILD = 'b',
  GLOBAL = 'c',
  DICT = 'd',
  EMPTY_DICT = '}',
  APPENDS = 'e',
  BINGET = 'h',
  LONG_BINGET = 'j',
  LIST = 'l',
  EMPTY_LIST = ']',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  SETITEM = 's',
  TUPLE = 't',
  EMPTY_TUPLE = ')',
  SETITEMS = 'u',
  BINFLOAT = 'G',
  BINBYTES = 'B',
  SHORT_BINBYTES = 'C',
  PROTO = 0x80,
  NEWOBJ = 0x81,
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  LONG1 = 0x8a,
  LONG4 = 0x8b,
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINBYTES8 = 0x8e,
  EMPTY_SET = 0x8f,
  ADDITEMS = 0x90,
  FROZENSET = 0x91,
  NEWOBJ_EX = 0x92,
  STACK_GLOBAL = 0x93,
  MEMOIZE = 0x94,
  FRAME = 0x95,
};

constexpr const char* kUnknownOpcode = "an unknown opcode";

// Names of every standard opcode, so an unsupported one is reported by name.
const char* opcode_name(uint8_t op) {
  static const std::pair<uint8_t, const char*> kNames[] = {
      {'(', "MARK"},
      {'.', "STOP"},
      {'0', "POP"},
      {'1', "POP_MARK"},
      {'2', "DUP"},
      {'F', "FLOAT"},
      {'I', "INT"},
      {'J', "BININT"},
      {'K', "BININT1"},
      {'L', "LONG"},
      {'M', "BININT2"},
      {'N', "NONE"},
      {'P', "PERSID"},
      {'Q', "BINPERSID"},
      {'R', "REDUCE"},
      {'S', "STRING"},
      {'T', "BINSTRING"},
      {'U', "SHORT_BINSTRING"},
      {'V', "UNICODE"},
      {'X', "BINUNICODE"},
      {'a', "APPEND"},
      {'b', "BUILD"},
      {'c', "GLOBAL"},
      {'d', "DICT"},
      {'}', "EMPTY_DICT"},
      {'e', "APPENDS"},
      {'g', "GET"},
      {'h', "BINGET"},
      {'i', "INST"},
      {'j', "LONG_BINGET"},
      {'l', "LIST"},
      {']', "EMPTY_LIST"},
      {'o', "OBJ"},
      {'p', "PUT"},
      {'q', "BINPUT"},
      {'r', "LONG_BINPUT"},
      {'s', "SETITEM"},
      {'t', "TUPLE"},
      {')', "EMPTY_TUPLE"},
      {'u', "SETITEMS"},
      {'G', "BINFLOAT"},
      {'B', "BINBYTES"},
      {'C', "SHORT_BINBYTES"},
      {0x80, "PROTO"},
      {0x81, "NEWOBJ"},
      {0x82, "EXT1"},
      {0x83, "EXT2"},
      {0x84, "EXT4"},
      {0x85, "TUPLE1"},
      {0x86, "TUPLE2"},
      {0x87, "TUPLE3"},
      {0x88, "NEWTRUE"},
      {0x89, "NEWFALSE"},
      {0x8a, "LONG1"},
      {0x8b, "LONG4"},
      {0x8c, "SHORT_BINUNICODE"},
      {0x8d, "BINUNICODE8"},
      {0x8e, "BINBYTES8"},
      {0x8f, "EMPTY_SET"},
      {0x90, "ADDITEMS"},
      {0x91, "FROZENSET"},
      {0x92, "NEWOBJ_EX"},
      {0x93, "STACK_GLOBAL"},
      {0x94, "MEMOIZE"},
      {0x95, "FRAME"},
      {0x96, "BYTEARRAY8"},
      {0x97, "NEXT_BUFFER"},
      {0x98, "READONLY_BUFFER"},
  };
  for (const auto& [code, name] : kNames) {
    if (code == op) return name;
  }
  return kUnknownOpcode;
}

// What the pickle asks of the outside world: calling a global and resolving a persistent id.
class Resolver {
 public:
  virtual ~Resolver() = default;
  virtual Value call(const std::string& global, const Items& args) = 0;
  virtual Value persistent_load(const Value& pid) = 0;
};

// Pickle values are shared_ptr graphs, and the memo lets a file put a container inside itself
// (a list appended to itself, a dict holding itself): such a cycle would never be freed. This
// walks everything reachable from the roots (iteratively: nesting depth is the file's to choose)
// and cuts every edge that closes a cycle, so the values are freed; it says whether it cut any.
bool break_cycles(const std::vector<Value*>& roots) {
  auto id = [](const Value& v) -> const void* {
    if (v.items) return v.items.get();
    if (v.dict) return v.dict.get();
    return nullptr;
  };
  auto children = [](Value& v) {
    std::vector<Value*> out;
    if (v.items)
      for (Value& c : *v.items) out.push_back(&c);
    if (v.dict)
      for (auto& [key, value] : v.dict->entries) out.push_back(&key), out.push_back(&value);
    return out;
  };
  enum : char { kOnPath = 1, kDone = 2 };
  std::unordered_map<const void*, char> state;
  struct Frame {
    Value* v;
    std::vector<Value*> kids;
    size_t next;
  };
  bool cut = false;
  for (Value* root : roots) {
    if (!id(*root) || state.count(id(*root))) continue;
    state[id(*root)] = kOnPath;
    std::vector<Frame> path{{root, children(*root), 0}};
    while (!path.empty()) {
      if (path.back().next == path.back().kids.size()) {
        state[id(*path.back().v)] = kDone;
        path.pop_back();
        continue;
      }
      Value* child = path.back().kids[path.back().next++];
      const void* cid = id(*child);
      if (!cid) continue;
      auto it = state.find(cid);
      if (it == state.end()) {
        state[cid] = kOnPath;
        path.push_back({child, children(*child), 0});
      } else if (it->second == kOnPath) {
        *child = Value();  // the container stays alive through `path`
        cut = true;
      }
    }
  }
  return cut;
}

class Unpickler {
 public:
  Unpickler(const Bytes& data, std::string where, Resolver& resolver)
      : data_(data), where_(std::move(where)), resolver_(resolver) {}

  Value load() {
    for (;;) {
      op_pos_ = pos_;
      const uint8_t op = u8();
      if (op == STOP) break;
      step(op);
    }
    if (stack_.size() != 1 || !marks_.empty())
      bad("STOP with ", stack_.size(), " values on the stack");
    if (break_cycles({&stack_.back()})) bad("a container holds itself (a cyclic pickle)");
    return std::move(stack_.back());
  }
  // Containers that are still alive here but unreachable (popped, or dropped with an error)
  // can only be alive because they are on a cycle; every one is among those pushed.
  ~Unpickler() {
    std::vector<Value> alive;
    for (const auto& weak : containers_)
      if (auto items = weak.lock()) alive.emplace_back().items = std::move(items);
    for (const auto& weak : dicts_)
      if (auto dict = weak.lock()) alive.emplace_back().dict = std::move(dict);
    std::vector<Value*> roots;
    for (Value& v : alive) roots.push_back(&v);
    break_cycles(roots);
  }
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;

 private:
  template <typename... Parts>
  [[noreturn]] void bad(Parts&&... parts) const {
    fail(where_, " at offset ", op_pos_, ": ", std::forward<Parts>(parts)...);
  }

  // --- reading raw bytes
  void need(uint64_t n) const {
    if (n > data_.size() - pos_) bad("data ends in the middle of an opcode (truncated pickle)");
  }
  uint8_t u8() {
    need(1);
    return data_[pos_++];
  }
  uint64_t uint_le(int n) {
    need(n);
    uint64_t v = 0;
    for (int k = n - 1; k >= 0; --k) v = (v << 8) | data_[pos_ + k];
    pos_ += n;
    return v;
  }
  std::string text(uint64_t n) {
    need(n);
    std::string s(reinterpret_cast<const char*>(data_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  std::string line() {
    size_t end = pos_;
    while (end < data_.size() && data_[end] != '\n') ++end;
    if (end == data_.size()) bad("unterminated GLOBAL name (truncated pickle)");
    std::string s = text(end - pos_);
    ++pos_;
    return s;
  }
  // Two's-complement little-endian integer of n bytes (LONG1/LONG4).
  int64_t long_bytes(uint64_t n) {
    if (n > 8) bad("integer of ", n, " bytes does not fit in 64 bits");
    if (n == 0) return 0;
    uint64_t v = uint_le(static_cast<int>(n));
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign-extend
    return static_cast<int64_t>(v);
  }
  double binfloat() {
    need(8);
    uint64_t bits = 0;
    for (int k = 0; k < 8; ++k) bits = (bits << 8) | data_[pos_ + k];  // big-endian
    pos_ += 8;
    double d;
    std::memcpy(&d, &bits, sizeof d);
    return d;
  }

  // --- the stack
  void push(Value v) {
    if (v.items) containers_.push_back(v.items);  // every container that reaches the stack
    if (v.dict) dicts_.push_back(v.dict);
    stack_.push_back(std::move(v));
  }
  Value pop() {
    if (stack_.size() <= floor()) bad(opcode_name(data_[op_pos_]), " on an empty stack");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  Value& top() {
    if (stack_.size() <= floor()) bad(opcode_name(data_[op_pos_]), " on an empty stack");
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  Items pop_mark() {
    if (marks_.empty()) bad(opcode_name(data_[op_pos_]), " without a MARK");
    Items items(std::make_move_iterator(stack_.begin() + marks_.back()),
                std::make_move_iterator(stack_.end()));
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }

  // --- memo
  void put(uint64_t index) { memo_[index] = top(); }
  void get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) bad("memo entry ", index, " used before it was stored");
    push(it->second);
  }

  // --- containers. Items added to an unsupported object are dropped: it stays opaque anyway.
  void set_items(Items kv) {
    if (kv.size() % 2) bad("SETITEMS with an odd number of values");
    Value& target = top();
    if (target.is(Value::Kind::Opaque)) return;
    if (!target.is(Value::Kind::Dict)) bad("SETITEM(S) on ", describe(target));
    for (size_t k = 0; k < kv.size(); k += 2)
      target.dict->set(std::move(kv[k]), std::move(kv[k + 1]));
  }
  void append_items(Items items) {
    Value& target = top();
    if (target.is(Value::Kind::Opaque)) return;
    if (!target.is(Value::Kind::List)) bad("APPEND(S)/ADDITEMS on ", describe(target));
    for (Value& v : items) target.items->push_back(std::move(v));
  }
  Value dict_from(Items kv) {
    Value d = make(Value::Kind::Dict);
    if (kv.size() % 2) bad("DICT with an odd number of values");
    for (size_t k = 0; k < kv.size(); k += 2) d.dict->set(std::move(kv[k]), std::move(kv[k + 1]));
    return d;
  }

  // --- objects. Pickled calls go to the resolver; calls on anything but a global stay opaque.
  Value call(const Value& callable, const Value& args) {
    if (!callable.is(Value::Kind::Global))
      return make_str(Value::Kind::Opaque, "(call on " + describe(callable) + ")");
    if (!args.is(Value::Kind::Tuple))
      bad("call of ", printable(callable.s), " with ", describe(args), " as arguments");
    return resolver_.call(callable.s, *args.items);
  }
  void reduce() {
    Value args = pop();
    Value callable = pop();
    push(call(callable, args));
  }
  void newobj_ex() {
    pop();  // kwargs: the supported globals take none
    reduce();
  }
  // BUILD sets state on the object below; nothing the loader keeps has state it needs
  // (an OrderedDict's _metadata, hooks), so the state is dropped.
  void build() {
    pop();
    top();
  }
  void stack_global() {
    Value name = pop();
    Value module = pop();
    if (!name.is(Value::Kind::Str) || !module.is(Value::Kind::Str))
      bad("STACK_GLOBAL with non-string names");
    push(make_str(Value::Kind::Global, module.s + "." + name.s));
  }
  void global() {
    std::string module = line();
    std::string name = line();
    push(make_str(Value::Kind::Global, module + "." + name));
  }

  void step(uint8_t op);

  const Bytes& data_;
  std::string where_;
  Resolver& resolver_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  Items stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Value> memo_;
  std::vector<std::weak_ptr<Items>> containers_;
  std::vector<std::weak_ptr<DictData>> dicts_;
};

void Unpickler::step(uint8_t op) {
  using K = Value::Kind;
  switch (op) {
    case PROTO:
      if (u8() > 5) bad("unsupported pickle protocol");
      break;
    case FRAME: uint_le(8); break;  // frames only matter to streaming readers
    case MARK: marks_.push_back(stack_.size()); break;
    case POP: pop(); break;
    case POP_MARK: pop_mark(); break;
    case DUP: push(top()); break;
    case NONE: push(make(K::None)); break;
    case NEWTRUE: push(make_int(K::Bool, 1)); break;
    case NEWFALSE: push(make_int(K::Bool, 0)); break;
    case BININT: push(make_int(K::Int, static_cast<int32_t>(uint_le(4)))); break;
    case BININT1: push(make_int(K::Int, u8())); break;
    case BININT2: push(make_int(K::Int, static_cast<int64_t>(uint_le(2)))); break;
    case LONG1: push(make_int(K::Int, long_bytes(u8()))); break;
    case LONG4: push(make_int(K::Int, long_bytes(uint_le(4)))); break;
    case BINFLOAT: {
      Value v = make(K::Float);
      v.f = binfloat();
      push(std::move(v));
      break;
    }
    case SHORT_BINUNICODE:
    case SHORT_BINSTRING: push(make_str(K::Str, text(u8()))); break;
    case BINUNICODE:
    case BINSTRING: push(make_str(K::Str, text(uint_le(4)))); break;
    case BINUNICODE8: push(make_str(K::Str, text(uint_le(8)))); break;
    case SHORT_BINBYTES: push(make_str(K::Bytes, text(u8()))); break;
    case BINBYTES: push(make_str(K::Bytes, text(uint_le(4)))); break;
    case BINBYTES8: push(make_str(K::Bytes, text(uint_le(8)))); break;
    case EMPTY_DICT: push(make(K::Dict)); break;
    case EMPTY_LIST:
    case EMPTY_SET: push(make(K::List)); break;
    case EMPTY_TUPLE: push(make(K::Tuple)); break;
    case DICT: push(dict_from(pop_mark())); break;
    case LIST: push(make_seq(K::List, pop_mark())); break;
    case TUPLE:
    case FROZENSET: push(make_seq(op == TUPLE ? K::Tuple : K::List, pop_mark())); break;
    case TUPLE1:
    case TUPLE2:
    case TUPLE3: {
      Items items(op - TUPLE1 + 1);
      for (auto it = items.rbegin(); it != items.rend(); ++it) *it = pop();
      push(make_seq(K::Tuple, std::move(items)));
      break;
    }
    case SETITEM: {
      Value v = pop();
      Value k = pop();
      set_items({std::move(k), std::move(v)});
      break;
    }
    case SETITEMS: set_items(pop_mark()); break;
    case APPEND: {
      Value v = pop();
      append_items({std::move(v)});
      break;
    }
    case APPENDS:
    case ADDITEMS: append_items(pop_mark()); break;
    case GLOBAL: global(); break;
    case STACK_GLOBAL: stack_global(); break;
    case REDUCE:
    case NEWOBJ: reduce(); break;
    case NEWOBJ_EX: newobj_ex(); break;
    case BUILD: build(); break;
    case BINPUT: put(u8()); break;
    case LONG_BINPUT: put(uint_le(4)); break;
    case MEMOIZE: put(memo_.size()); break;
    case BINGET: get(u8()); break;
    case LONG_BINGET: get(uint_le(4)); break;
    case BINPERSID: {
      Value pid = pop();
      push(resolver_.persistent_load(pid));
      break;
    }
    default: {
      std::ostringstream hex;
      hex << "0x" << std::hex << static_cast<int>(op);
      if (std::strcmp(opcode_name(op), kUnknownOpcode) == 0)
        bad("unknown pickle opcode ", hex.str());
      bad("unsupported pickle opcode ", opcode_name(op), " (", hex.str(), ")");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Tensors.

bool storage_dtype(const std::string& global, DType& dtype) {
  static const std::pair<const char*, DType> kTypes[] = {
      {"torch.FloatStorage", DType::F32}, {"torch.DoubleStorage", DType::F64},
      {"torch.HalfStorage", DType::F16},  {"torch.BFloat16Storage", DType::BF16},
      {"torch.LongStorage", DType::I64},  {"torch.IntStorage", DType::I32},
      {"torch.ShortStorage", DType::I16}, {"torch.CharStorage", DType::I8},
      {"torch.ByteStorage", DType::U8},   {"torch.BoolStorage", DType::Bool},
  };
  for (const auto& [name, type] : kTypes) {
    if (global == name) {
      dtype = type;
      return true;
    }
  }
  return false;
}

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t step = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = step;
    step *= shape[d];
  }
  return strides;
}

// Strides of size-1 dimensions never move the index, so torch leaves them arbitrary.
bool is_contiguous(const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  const std::vector<int64_t> expected = contiguous_strides(shape);
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] != 1 && strides[d] != expected[d]) return false;
  }
  return true;
}

// Copies a strided view (element offsets from `base`) into a new C-order buffer.
std::shared_ptr<Bytes> gather(const uint8_t* base, size_t elem, const std::vector<int64_t>& shape,
                              const std::vector<int64_t>& strides, int64_t numel) {
  auto out = std::make_shared<Bytes>(static_cast<size_t>(numel) * elem);
  std::vector<int64_t> index(shape.size(), 0);
  int64_t offset = 0;  // element offset of `index` in the source
  for (int64_t n = 0; n < numel; ++n) {
    std::memcpy(out->data() + n * elem, base + offset * elem, elem);
    // Odometer increment, last dimension fastest.
    for (size_t d = shape.size(); d-- > 0;) {
      offset += strides[d];
      if (++index[d] < shape[d]) break;
      offset -= strides[d] * shape[d];
      index[d] = 0;
    }
  }
  return out;
}

class TorchLoader : public Resolver {
 public:
  TorchLoader(const std::string& path, const ZipArchive& zip, std::string folder)
      : path_(path), zip_(zip), folder_(std::move(folder)) {}

  Value call(const std::string& global, const Items& args) override {
    if (global == "collections.OrderedDict" && args.empty()) return make(Value::Kind::Dict);
    if (global == "torch._utils._rebuild_tensor_v2" || global == "torch._utils._rebuild_tensor") {
      return rebuild_tensor(args);
    }
    if (global == "torch._utils._rebuild_parameter" ||
        global == "torch._utils._rebuild_parameter_with_state") {
      if (args.empty() || !args[0].is(Value::Kind::Tensor))
        fail(path_, ": ", printable(global), " without a tensor");
      return args[0];  // requires_grad and hooks do not matter for inference
    }
    // LibTorch's torch::pickle_save tags typed dicts and lists with their TorchScript type and
    // wraps tensor lists; Python's torch.load returns the value inside, and so does this.
    if (global == "torch.jit._pickle.restore_type_tag" || global == "torch.jit._pickle.build_tensorlist") {
      if (args.empty()) fail(path_, ": ", printable(global), " without a value");
      return args[0];
    }
    // Anything else (numpy scalars in a checkpoint's extras, whole pickled modules, ...) is
    // kept as a named placeholder: harmless unless the state dict itself needs it.
    return make_str(Value::Kind::Opaque, global);
  }

  // ('storage', storage_type, key, location, numel). The location ("cpu", "cuda:0") is ignored.
  Value persistent_load(const Value& pid) override {
    const Items* t = pid.is(Value::Kind::Tuple) ? pid.items.get() : nullptr;
    if (!t || t->size() < 5 || !(*t)[0].is(Value::Kind::Str) || (*t)[0].s != "storage") {
      fail(path_, ": unsupported persistent id (", describe(pid), "); expected ('storage', ...)");
    }
    const Value& type = (*t)[1];
    const Value& key = (*t)[2];
    const Value& numel = (*t)[4];
    if (!type.is(Value::Kind::Global) || !key.is(Value::Kind::Str) || !numel.is(Value::Kind::Int) ||
        numel.i < 0) {
      fail(path_, ": malformed storage persistent id");
    }
    auto storage = std::make_shared<Storage>();
    if (!storage_dtype(type.s, storage->dtype))
      fail(path_, ": unsupported storage type global ", printable(type.s));
    storage->key = key.s;
    storage->numel = numel.i;
    storage->bytes = storage_bytes(key.s);
    const uint64_t need = static_cast<uint64_t>(numel.i) * dtype_size(storage->dtype);
    if (storage->bytes->size() < need) {
      fail(path_, ": storage ", printable(folder_ + "data/" + key.s), " has ",
           storage->bytes->size(), " bytes, expected ", need);
    }
    Value v = make(Value::Kind::Storage);
    v.storage = std::move(storage);
    return v;
  }

 private:
  // One buffer per storage key, so tensors that view the same storage share it.
  SharedBytes storage_bytes(const std::string& key) {
    auto it = storages_.find(key);
    if (it != storages_.end()) return it->second;
    const std::string name = folder_ + "data/" + key;
    if (!zip_.contains(name))
      fail(path_, ": storage ", printable(name), " is missing from the archive");
    return storages_[key] = zip_.read(name);
  }

  std::vector<int64_t> int_tuple(const Value& v, const char* what) const {
    if (!v.is(Value::Kind::Tuple))
      fail(path_, ": tensor ", what, " is ", describe(v), ", not a tuple");
    std::vector<int64_t> out;
    for (const Value& item : *v.items) {
      if (!item.is(Value::Kind::Int) || item.i < 0)
        fail(path_, ": tensor ", what, " holds a non-integer or negative value");
      out.push_back(item.i);
    }
    return out;
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[,
  // metadata])
  Value rebuild_tensor(const Items& args) {
    if (args.size() < 4 || !args[0].is(Value::Kind::Storage) || !args[1].is(Value::Kind::Int)) {
      fail(path_, ": malformed _rebuild_tensor arguments");
    }
    const Storage& storage = *args[0].storage;
    const int64_t offset = args[1].i;
    const std::vector<int64_t> shape = int_tuple(args[2], "size");
    const std::vector<int64_t> strides = int_tuple(args[3], "stride");
    if (shape.size() != strides.size())
      fail(path_, ": tensor size and stride have different lengths");
    Value v = make(Value::Kind::Tensor);
    v.tensor = std::make_shared<RawTensor>(view(storage, offset, shape, strides));
    return v;
  }

  RawTensor view(const Storage& storage, int64_t offset, const std::vector<int64_t>& shape,
                 const std::vector<int64_t>& strides) const {
    RawTensor t;
    t.dtype = storage.dtype;
    t.shape = shape;
    t.owner = storage.bytes;
    const size_t elem = dtype_size(storage.dtype);
    const int64_t numel = checked_numel(storage, offset, shape, strides);
    if (numel == 0) {
      t.data = storage.bytes->data();
      return t;
    }
    t.nbytes = static_cast<size_t>(numel) * elem;
    const uint8_t* base = storage.bytes->data() + static_cast<size_t>(offset) * elem;
    if (is_contiguous(shape, strides)) {
      t.data = base;
    } else {
      auto copy = gather(base, elem, shape, strides, numel);
      t.data = copy->data();
      t.owner = std::move(copy);
    }
    return t;
  }

  // Element count, after checking that every element the view reaches lies inside the storage.
  int64_t checked_numel(const Storage& storage, int64_t offset, const std::vector<int64_t>& shape,
                        const std::vector<int64_t>& strides) const {
    int64_t numel = 1;
    int64_t last = offset;  // highest element index the view touches
    bool overflow = offset < 0;
    for (size_t d = 0; d < shape.size(); ++d) {
      int64_t reach = 0;
      overflow |= __builtin_mul_overflow(numel, shape[d], &numel);
      if (shape[d] > 0) {
        overflow |= __builtin_mul_overflow(shape[d] - 1, strides[d], &reach);
        overflow |= __builtin_add_overflow(last, reach, &last);
      }
    }
    if (numel == 0 && !overflow && offset <= storage.numel) return 0;
    if (overflow || last >= storage.numel) {
      fail(path_, ": tensor (offset ", offset, ", size ", shape_string(shape), ", stride ",
           shape_string(strides), ") reaches past the end of storage ",
           printable(folder_ + "data/" + storage.key), " (", storage.numel, " elements)");
    }
    return numel;
  }

  const std::string& path_;
  const ZipArchive& zip_;
  std::string folder_;
  std::map<std::string, SharedBytes> storages_;
};

// ---------------------------------------------------------------------------------------------
// Finding the state dict.

bool has_tensor(const DictData& dict) {
  for (const auto& entry : dict.entries) {
    if (entry.second.is(Value::Kind::Tensor)) return true;
  }
  return false;
}

RawTensorList to_tensor_list(const std::string& path, const DictData& dict,
                             const std::string& where) {
  RawTensorList out;
  out.reserve(dict.entries.size());
  for (const auto& [key, value] : dict.entries) {
    if (!key.is(Value::Kind::Str))
      fail(path, ": state dict", where, " has a key that is ", describe(key));
    if (!value.is(Value::Kind::Tensor)) {
      fail(path, ": state dict", where, " entry '", printable(key.s), "' is ", describe(value),
           ", not a tensor");
    }
    out.emplace_back(key.s, *value.tensor);
  }
  return out;
}

std::string key_list(const DictData& dict) {
  std::string keys;
  for (const auto& entry : dict.entries) {
    if (!keys.empty()) keys += ", ";
    keys += entry.first.is(Value::Kind::Str) ? printable(entry.first.s) : describe(entry.first);
  }
  return "[" + keys + "]";
}

RawTensorList find_state_dict(const std::string& path, const Value& root) {
  return with_error_kind(ErrorKind::CorruptFile, [&] {
    if (!root.is(Value::Kind::Dict)) {
      fail(path, ": no state dict found: the archive holds ", describe(root),
           " (save model.state_dict() instead)");
    }
    const DictData& top = *root.dict;
    if (has_tensor(top)) return to_tensor_list(path, top, "");
    for (const char* wrapper : {"model_state", "state_dict", "model"}) {
      const Value* inner = top.find(wrapper);
      if (inner && inner->is(Value::Kind::Dict)) {
        return to_tensor_list(path, *inner->dict, std::string(" '") + wrapper + "'");
      }
    }
    fail(path,
         ": no state dict found: the top-level dict has no tensors and no model_state, "
         "state_dict or model dict (keys ",
         key_list(top), ")");
  });
}

void check_byte_order(const std::string& path, const ZipArchive& zip, const std::string& folder) {
  const std::string name = folder + "byteorder";
  if (!zip.contains(name)) return;  // older torch wrote no marker: always little-endian
  const SharedBytes order = zip.read(name);
  if (std::string(order->begin(), order->end()) != "little") {
    fail(path, ": big-endian torch archives are not supported");
  }
}

// The object a torch.save archive holds (tensors reference storages kept alive by their owners).
Value load_archive_object(const std::string& path) {
  return with_error_kind(ErrorKind::CorruptFile, [&] {
    const ZipArchive zip(path);
    const std::string folder = zip.top_folder();
    check_byte_order(path, zip, folder);
    const SharedBytes pickle = zip.read(folder + "data.pkl");
    TorchLoader loader(path, zip, folder);
    Unpickler unpickler(*pickle, path + ": bad pickle in " + printable(folder + "data.pkl"), loader);
    return unpickler.load();
  });
}

}  // namespace

RawTensorList read_torch_archive(const std::string& path) { return find_state_dict(path, load_archive_object(path)); }

std::vector<RawTensor> read_torch_tensors(const std::string& path) {
  const Value root = load_archive_object(path);
  if (root.is(Value::Kind::Tensor)) return {*root.tensor};
  if (!root.is(Value::Kind::List) && !root.is(Value::Kind::Tuple))
    fail(path, ": holds ", describe(root), ", not a tensor or a list of tensors");
  std::vector<RawTensor> out;
  for (size_t i = 0; i < root.items->size(); ++i) {
    const Value& item = (*root.items)[i];
    if (!item.is(Value::Kind::Tensor)) fail(path, ": item ", i, " of the ", describe(root).substr(2), " is ", describe(item), ", not a tensor");
    out.push_back(*item.tensor);
  }
  return out;
}

}  // namespace gad
