#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <memory>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

// Owns a read-only mapping; shared by every tensor view into it.
struct Mapping {
  void* addr = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) ::munmap(addr, size);
  }
};

std::shared_ptr<Mapping> map_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail_as(errno == ENOENT ? ErrorKind::NotFound : ErrorKind::Io, path, ": cannot open (", std::strerror(errno), ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail(path, ": cannot stat (", std::strerror(errno), ")");
  }
  auto m = std::make_shared<Mapping>();
  m->size = static_cast<size_t>(st.st_size);
  if (m->size > 0) {
    m->addr = ::mmap(nullptr, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m->addr == MAP_FAILED) {
      ::close(fd);
      fail(path, ": cannot map (", std::strerror(errno), ")");
    }
  }
  ::close(fd);
  return m;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

RawTensor parse_entry(const std::string& path, const std::string& name, const nlohmann::json& e,
                      const uint8_t* data_start, size_t data_size) {
  if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets"))
    fail(path, ": tensor '", name, "' has an incomplete header entry");
  RawTensor t;
  if (!e.at("dtype").is_string()) fail(path, ": tensor '", name, "' has a dtype that is not a string");
  try {
    t.dtype = dtype_from_name(e.at("dtype").get<std::string>());
  } catch (const Error& err) {
    fail(path, ": tensor '", name, "': ", err.what());
  }
  const auto& shape = e.at("shape");
  if (!shape.is_array()) fail(path, ": tensor '", name, "' has a bad shape");
  for (const auto& d : shape) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) fail(path, ": tensor '", name, "' has a bad shape");
    t.shape.push_back(d.get<int64_t>());
  }
  // Bounded by the data before it is multiplied, so a hostile shape cannot overflow numel().
  const bool empty = std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end();
  uint64_t count = 1;
  for (int64_t d : t.shape)
    if (!empty && count > data_size / dtype_size(t.dtype) / static_cast<uint64_t>(d))
      fail(path, ": tensor '", name, "' has shape ", shape_string(t.shape), ", more than the file's ", data_size,
           " data bytes hold");
    else
      count *= static_cast<uint64_t>(d);
  const auto& off = e.at("data_offsets");
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
    fail(path, ": tensor '", name, "' has bad data_offsets");
  uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
  if (begin > end || end > data_size)
    fail(path, ": tensor '", name, "' lies outside the file (truncated or corrupt; needs bytes up to ", end,
         ", file has ", data_size, ")");
  t.nbytes = end - begin;
  if (t.nbytes != static_cast<size_t>(t.numel()) * dtype_size(t.dtype))
    fail(path, ": tensor '", name, "' has ", t.nbytes, " bytes, but ", dtype_name(t.dtype), shape_string(t.shape),
         " needs ", t.numel() * dtype_size(t.dtype));
  t.data = data_start + begin;
  return t;
}

// The contents of `size` bytes at `bytes`, which `owner` keeps alive; `path` names them in errors.
SafetensorsContents parse(const std::string& path, const uint8_t* bytes, size_t size, std::shared_ptr<const void> owner) {
  return with_error_kind(ErrorKind::CorruptFile, [&] {
    if (size < 8) fail(path, ": not a safetensors file (", size, " bytes)");
    uint64_t header_len = read_u64_le(bytes);
    if (header_len > size - 8) fail(path, ": truncated or not a safetensors file (header length ", header_len, ")");
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len);
    } catch (const std::exception& e) {
      fail(path, ": corrupt safetensors header (", e.what(), ")");
    }
    if (!header.is_object()) fail(path, ": corrupt safetensors header (not a JSON object)");

    SafetensorsContents out;
    const uint8_t* data_start = bytes + 8 + header_len;
    size_t data_size = size - 8 - header_len;
    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        if (!it->is_object()) fail(path, ": corrupt safetensors header (__metadata__ is not an object)");
        for (auto m = it->begin(); m != it->end(); ++m)
          if (m->is_string()) out.metadata[m.key()] = m->get<std::string>();
        continue;
      }
      RawTensor t = parse_entry(path, it.key(), *it, data_start, data_size);
      t.owner = owner;
      out.tensors.emplace_back(it.key(), std::move(t));
    }
    std::stable_sort(out.tensors.begin(), out.tensors.end(),
                     [](const auto& a, const auto& b) { return a.second.data < b.second.data; });
    return out;
  });
}

// Serialises to `sink` (called with consecutive pieces of the file).
void serialise(const std::string& path, const RawTensorList& tensors, const std::map<std::string, std::string>& metadata,
               const std::function<void(const void*, size_t)>& sink) {
  // nlohmann::ordered_json keeps insertion order so files list tensors as given.
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (t.nbytes != static_cast<size_t>(t.numel()) * dtype_size(t.dtype))
      fail(path, ": tensor '", name, "' has inconsistent size");
    header[name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string text = header.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  uint8_t len[8];
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  sink(len, 8);
  sink(text.data(), text.size());
  for (const auto& [name, t] : tensors)
    if (t.nbytes) sink(t.data, t.nbytes);
}

}  // namespace

SafetensorsContents read_safetensors(const std::string& path) {
  auto map = with_error_kind(ErrorKind::CorruptFile, [&] { return map_file(path); });
  return parse(path, static_cast<const uint8_t*>(map->addr), map->size, map);
}

SafetensorsContents read_safetensors_bytes(std::shared_ptr<const std::string> bytes, const std::string& name) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes->data());
  const size_t size = bytes->size();
  return parse(name, data, size, std::move(bytes));
}

void write_safetensors(const std::string& path, const RawTensorList& tensors,
                       const std::map<std::string, std::string>& metadata) {
  write_file_atomically(path, [&](std::FILE* f) {
    serialise(path, tensors, metadata, [&](const void* p, size_t n) { std::fwrite(p, 1, n, f); });
  });
}

std::string safetensors_bytes(const RawTensorList& tensors, const std::map<std::string, std::string>& metadata) {
  std::string out;
  serialise("safetensors", tensors, metadata, [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  return out;
}

}  // namespace gad
