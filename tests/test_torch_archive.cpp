// Tests for read_torch_archive: the InCTRL tiny-model fixtures (flat and wrapped torch.save
// archives, checked against the safetensors copy), plus small synthetic archives built here to
// cover strides, shared storages and every error path.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/raw_tensor.h"
#include "io/torch_archive.h"
#include "util/error.h"

namespace {

const std::string kModelDir = GAD_SHARED_DIR "/fixtures/inctrl/tiny_model";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A temp file that removes itself.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& contents) {
    char name[] = "/tmp/gad_torch_archive_XXXXXX";
    const int fd = mkstemp(name);
    EXPECT_GE(fd, 0);
    close(fd);
    path = name;
    std::ofstream(path, std::ios::binary) << contents;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

std::string bytes_of(const gad::RawTensor& t) {
  return std::string(reinterpret_cast<const char*>(t.data), t.nbytes);
}

std::string error_of(const std::string& path) {
  try {
    gad::read_torch_archive(path);
  } catch (const gad::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// ---- the fixtures

TEST(TorchArchive, FlatAndWrappedCheckpointsAgree) {
  const gad::RawTensorList flat = gad::read_torch_archive(kModelDir + "/model_state.pt");
  const gad::RawTensorList wrapped = gad::read_torch_archive(kModelDir + "/checkpoint.pyth");
  ASSERT_EQ(flat.size(), 237u);
  ASSERT_EQ(wrapped.size(), 237u);
  EXPECT_EQ(flat.front().first, "positional_embedding");
  for (size_t i = 0; i < flat.size(); ++i) {
    const auto& [name, a] = flat[i];
    const auto& b = wrapped[i].second;
    ASSERT_EQ(name, wrapped[i].first) << i;
    EXPECT_EQ(a.dtype, b.dtype) << name;
    EXPECT_EQ(a.shape, b.shape) << name;
    EXPECT_EQ(a.nbytes, static_cast<size_t>(a.numel()) * gad::dtype_size(a.dtype)) << name;
    EXPECT_TRUE(bytes_of(a) == bytes_of(b)) << name;
  }
}

TEST(TorchArchive, NumBatchesTrackedIsScalarInt64) {
  int seen = 0;
  for (const auto& [name, t] : gad::read_torch_archive(kModelDir + "/checkpoint.pyth")) {
    if (name.find("num_batches_tracked") == std::string::npos) {
      EXPECT_EQ(t.dtype, gad::DType::F32) << name;
      continue;
    }
    ++seen;
    EXPECT_EQ(t.dtype, gad::DType::I64) << name;
    EXPECT_TRUE(t.shape.empty()) << name;
    EXPECT_EQ(gad::shape_string(t.shape), "[]");
    EXPECT_EQ(t.numel(), 1);
    EXPECT_EQ(t.nbytes, 8u);
  }
  EXPECT_GT(seen, 0);
}

// Independent check against the safetensors copy, parsed here so this test does not depend on
// the project's own safetensors reader.
TEST(TorchArchive, MatchesSafetensors) {
  const std::string file = read_file(kModelDir + "/model.safetensors");
  ASSERT_GT(file.size(), 8u);
  uint64_t header_len = 0;
  std::memcpy(&header_len, file.data(), 8);  // little-endian host
  const auto header = nlohmann::ordered_json::parse(file.substr(8, header_len));
  const size_t data_start = 8 + header_len;

  const gad::RawTensorList tensors = gad::read_torch_archive(kModelDir + "/model_state.pt");
  std::map<std::string, const gad::RawTensor*> by_name;
  for (const auto& [name, t] : tensors) by_name[name] = &t;

  size_t compared = 0;
  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") continue;
    ASSERT_TRUE(by_name.count(name)) << name;
    const gad::RawTensor& t = *by_name[name];
    EXPECT_EQ(gad::dtype_name(t.dtype), info["dtype"].get<std::string>()) << name;
    EXPECT_EQ(t.shape, info["shape"].get<std::vector<int64_t>>()) << name;
    const auto begin = info["data_offsets"][0].get<size_t>();
    const auto end = info["data_offsets"][1].get<size_t>();
    EXPECT_TRUE(bytes_of(t) == file.substr(data_start + begin, end - begin)) << name;
    ++compared;
  }
  EXPECT_EQ(compared, tensors.size());
}

// ---- errors on the fixtures

TEST(TorchArchive, TruncatedArchiveFails) {
  const std::string full = read_file(kModelDir + "/model_state.pt");
  TempFile half(full.substr(0, full.size() / 2));
  const std::string message = error_of(half.path);
  EXPECT_NE(message.find(half.path), std::string::npos) << message;
  EXPECT_NE(message.find("truncated or corrupt archive"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
}

TEST(TorchArchive, NonZipFails) {
  TempFile text("this is not a zip archive\n");
  const std::string message = error_of(text.path);
  EXPECT_NE(message.find(text.path), std::string::npos) << message;
  EXPECT_NE(message.find("not a zip archive"), std::string::npos) << message;
}

TEST(TorchArchive, MissingFileFails) {
  const std::string path = "/tmp/gad_no_such_dir/model_state.pt";
  const std::string message = error_of(path);
  EXPECT_NE(message.find(path), std::string::npos) << message;
}

// ---- synthetic archives

uint32_t crc32(const std::string& data) {
  uint32_t crc = 0xFFFFFFFFu;
  for (unsigned char byte : data) {
    crc ^= byte;
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_le(std::string& out, uint64_t value, int bytes) {
  for (int k = 0; k < bytes; ++k) out += static_cast<char>((value >> (8 * k)) & 0xFF);
}

// A minimal zip writer (stored entries only), enough for libzip to read.
std::string make_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, directory;
  for (const auto& [name, data] : entries) {
    const uint32_t crc = crc32(data);
    const size_t offset = out.size();
    put_le(out, 0x04034b50, 4);
    for (uint64_t v : {20, 0, 0, 0, 0}) put_le(out, v, 2);  // version, flags, method, time, date
    put_le(out, crc, 4);
    put_le(out, data.size(), 4);
    put_le(out, data.size(), 4);
    put_le(out, name.size(), 2);
    put_le(out, 0, 2);
    out += name + data;
    put_le(directory, 0x02014b50, 4);
    for (uint64_t v : {20, 20, 0, 0, 0, 0}) put_le(directory, v, 2);
    put_le(directory, crc, 4);
    put_le(directory, data.size(), 4);
    put_le(directory, data.size(), 4);
    put_le(directory, name.size(), 2);
    for (uint64_t v : {0, 0, 0, 0}) put_le(directory, v, 2);  // extra, comment, disk, attrs
    put_le(directory, 0, 4);
    put_le(directory, offset, 4);
    directory += name;
  }
  const size_t directory_offset = out.size();
  out += directory;
  put_le(out, 0x06054b50, 4);
  for (uint64_t v : {0, 0}) put_le(out, v, 2);
  put_le(out, entries.size(), 2);
  put_le(out, entries.size(), 2);
  put_le(out, directory.size(), 4);
  put_le(out, directory_offset, 4);
  put_le(out, 0, 2);
  return out;
}

// Emits pickle opcodes the way torch.save would (without memo ops, which are optional).
struct Pickle {
  std::string out = "\x80\x02";
  Pickle& op(char code) { return out += code, *this; }
  Pickle& str(const std::string& s) {
    out += 'X';
    put_le(out, s.size(), 4);
    out += s;
    return *this;
  }
  Pickle& integer(int64_t v) {
    out += 'J';
    put_le(out, static_cast<uint32_t>(v), 4);
    return *this;
  }
  Pickle& global(const std::string& module, const std::string& name) {
    out += 'c' + module + '\n' + name + '\n';
    return *this;
  }
  Pickle& ints(const std::vector<int64_t>& values) {
    op('(');
    for (int64_t v : values) integer(v);
    return op('t');
  }
  Pickle& ordered_dict() { return global("collections", "OrderedDict").op(')').op('R'); }
  // _rebuild_tensor_v2(('storage', FloatStorage, key, 'cuda:0', numel), offset, size, stride,
  // False, OrderedDict())
  Pickle& tensor(const std::string& key, int64_t numel, int64_t offset,
                 const std::vector<int64_t>& size, const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(')
        .str("storage")
        .global("torch", "FloatStorage")
        .str(key)
        .str("cuda:0")
        .integer(numel)
        .op('t')
        .op('Q');
    integer(offset).ints(size).ints(stride).op('\x89').ordered_dict();
    return op('t').op('R');
  }
  std::string done() { return out + '.'; }
};

std::string floats(int count) {
  std::string data;
  for (int k = 0; k < count; ++k) {
    const float v = static_cast<float>(k);
    data.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  return data;
}

std::vector<float> values(const gad::RawTensor& t) {
  std::vector<float> out(t.nbytes / sizeof(float));
  std::memcpy(out.data(), t.data, t.nbytes);
  return out;
}

std::string archive(const std::string& pickle, const std::string& storage = floats(6)) {
  return make_zip(
      {{"archive/data.pkl", pickle}, {"archive/data/0", storage}, {"archive/version", "3\n"}});
}

TEST(TorchArchive, StridedViewsAreMadeContiguous) {
  // storage 0..5 viewed as a = [[0,1,2],[3,4,5]] and several views of it.
  Pickle p;
  p.ordered_dict().op('(');
  p.str("a").tensor("0", 6, 0, {2, 3}, {3, 1});
  p.str("transposed").tensor("0", 6, 0, {3, 2}, {1, 3});
  p.str("column").tensor("0", 6, 2, {2}, {3});
  p.str("block").tensor("0", 6, 1, {2, 2}, {3, 1});
  p.str("tail").tensor("0", 6, 4, {2, 1}, {1, 7});  // size-1 dim: its stride is irrelevant
  p.str("empty").tensor("0", 6, 6, {0, 3}, {3, 1});
  p.op('u');
  TempFile file(archive(p.done()));
  const gad::RawTensorList t = gad::read_torch_archive(file.path);
  ASSERT_EQ(t.size(), 6u);
  EXPECT_EQ(values(t[0].second), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(values(t[1].second), (std::vector<float>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(values(t[2].second), (std::vector<float>{2, 5}));
  EXPECT_EQ(values(t[3].second), (std::vector<float>{1, 2, 4, 5}));
  EXPECT_EQ(values(t[4].second), (std::vector<float>{4, 5}));
  EXPECT_EQ(t[5].second.nbytes, 0u);
  EXPECT_EQ(gad::shape_string(t[5].second.shape), "[0,3]");
  // Contiguous views share the storage buffer; copies own a new one.
  EXPECT_EQ(t[0].second.owner, t[4].second.owner);
  EXPECT_EQ(t[4].second.data, t[0].second.data + 4 * sizeof(float));
  EXPECT_NE(t[0].second.owner, t[1].second.owner);
}

TEST(TorchArchive, WrappedDictIgnoresUnknownExtras) {
  Pickle p;
  p.op('}').op('(');
  p.str("epoch").integer(3);
  p.str("best").global("numpy.core.multiarray", "scalar").op('(').str("x").op('t').op('R');
  p.str("state_dict").ordered_dict().op('(').str("w").tensor("0", 6, 0, {6}, {1}).op('u');
  p.op('u');
  TempFile file(archive(p.done()));
  const gad::RawTensorList t = gad::read_torch_archive(file.path);
  ASSERT_EQ(t.size(), 1u);
  EXPECT_EQ(t[0].first, "w");
}

TEST(TorchArchive, SyntheticErrorsNameTheProblem) {
  struct Case {
    std::string what, zip, expect;
  };
  std::vector<Case> cases;
  {
    Pickle p;
    p.ordered_dict().str("w").tensor("0", 6, 5, {2}, {1}).op('s');
    cases.push_back(
        {"out of range", archive(p.done()), "reaches past the end of storage archive/data/0"});
  }
  {
    Pickle p;
    p.ordered_dict().str("w").tensor("1", 6, 0, {6}, {1}).op('s');
    cases.push_back({"missing storage", archive(p.done()), "storage archive/data/1 is missing"});
  }
  {
    Pickle p;
    p.ordered_dict().str("w").tensor("0", 6, 0, {6}, {1}).op('s');
    cases.push_back({"short storage", archive(p.done(), floats(5)), "has 20 bytes, expected 24"});
  }
  {
    Pickle p;
    p.ordered_dict().str("w").op('I');
    cases.push_back({"text opcode", archive(p.done()), "unsupported pickle opcode INT"});
  }
  {
    Pickle p;
    p.ordered_dict()
        .str("w")
        .tensor("0", 6, 0, {6}, {1})
        .op('s')
        .str("v")
        .global("torch._utils", "_rebuild_qtensor");
    p.op(')').op('R').op('s');
    cases.push_back({"unknown global", archive(p.done()), "_rebuild_qtensor"});
  }
  {
    Pickle p;
    p.global("__main__", "Net").op(')').op('\x81');
    cases.push_back({"whole module", archive(p.done()), "no state dict found"});
  }
  {
    Pickle p;
    p.op('}').str("epoch").integer(1).op('s');
    cases.push_back({"no tensors", archive(p.done()), "no state dict found"});
  }
  {
    Pickle p;
    p.ordered_dict().str("w");
    cases.push_back({"truncated pickle", archive(p.out), "bad pickle in archive/data.pkl"});
  }
  cases.push_back({"no data.pkl", make_zip({{"archive/version", "3\n"}}), "missing data.pkl"});
  for (const Case& c : cases) {
    TempFile file(c.zip);
    const std::string message = error_of(file.path);
    EXPECT_EQ(message.rfind(file.path + ": ", 0), 0u) << c.what << ": " << message;
    EXPECT_NE(message.find(c.expect), std::string::npos) << c.what << ": " << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << c.what << ": " << message;
  }
}

TEST(RawTensor, DTypeNamesRoundTrip) {
  for (const char* name : {"F32", "F64", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"}) {
    EXPECT_STREQ(gad::dtype_name(gad::dtype_from_name(name)), name);
  }
  EXPECT_EQ(gad::dtype_size(gad::DType::BF16), 2u);
  EXPECT_EQ(gad::dtype_size(gad::DType::I64), 8u);
  EXPECT_EQ(gad::dtype_size(gad::DType::Bool), 1u);
  EXPECT_THROW(gad::dtype_from_name("F8_E4M3"), gad::Error);
  gad::RawTensor t;
  t.shape = {3, 240, 240};
  EXPECT_EQ(t.numel(), 3 * 240 * 240);
  EXPECT_EQ(gad::shape_string(t.shape), "[3,240,240]");
}

}  // namespace
