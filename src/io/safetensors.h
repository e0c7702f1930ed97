// Safetensors files: memory-mapped reading and all-or-nothing writing.
//
// Layout: u64 little-endian header size, a JSON header {name: {dtype, shape, data_offsets}} plus
// optional "__metadata__" (string -> string), then the raw data. The reader validates every
// offset against the file size so truncated or corrupt files fail with a message naming the file
// and the tensor, never with a crash.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "io/raw_tensor.h"

namespace gad {

struct SafetensorsContents {
  RawTensorList tensors;                        // in data-offset order
  std::map<std::string, std::string> metadata;  // "__metadata__"
};

// Maps `path` read-only; the returned tensors keep the mapping alive.
SafetensorsContents read_safetensors(const std::string& path);

// The same from bytes in memory (a database blob); `name` names them in errors. The tensors keep
// `bytes` alive.
SafetensorsContents read_safetensors_bytes(std::shared_ptr<const std::string> bytes, const std::string& name);

// The bytes of a safetensors file holding tensors (in the given order) and metadata.
std::string safetensors_bytes(const RawTensorList& tensors, const std::map<std::string, std::string>& metadata = {});

// Writes tensors (in the given order) and metadata to `path` atomically.
void write_safetensors(const std::string& path, const RawTensorList& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace gad
