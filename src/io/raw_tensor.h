// RawTensor — a typed, shaped view of tensor bytes as they sit in a weight file.
//
// File readers (safetensors, torch.save archives) produce RawTensors without touching torch, so
// format parsing compiles fast and fails with file-level messages; weights.h turns them into
// torch tensors and checks names and shapes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace gad {

enum class DType { F32, F64, F16, BF16, I64, I32, I16, I8, U8, Bool };

// Safetensors spelling ("F32", "BF16", ...); throws gad::Error for unknown names.
DType dtype_from_name(const std::string& name);
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

struct RawTensor {
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // little-endian, C order
  size_t nbytes = 0;
  std::shared_ptr<const void> owner;  // keeps `data` alive (an mmap or a buffer)

  int64_t numel() const;
};

std::string shape_string(const std::vector<int64_t>& shape);  // "[3,240,240]"

// An ordered list of named tensors, in file order.
using RawTensorList = std::vector<std::pair<std::string, RawTensor>>;

}  // namespace gad
