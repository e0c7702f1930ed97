#include "io/raw_tensor.h"

#include <sstream>

#include "util/error.h"

namespace gad {
namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;  // safetensors spelling
  size_t size;
};

// One table so the name, size and enum can never disagree.
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4},   {DType::F64, "F64", 8}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},   {DType::I8, "I8", 1},   {DType::U8, "U8", 1},
    {DType::Bool, "BOOL", 1},
};

const DTypeInfo& info(DType dtype) {
  for (const DTypeInfo& entry : kDTypes) {
    if (entry.dtype == dtype) return entry;
  }
  fail("internal error: unknown DType value ", static_cast<int>(dtype));
}

}  // namespace

DType dtype_from_name(const std::string& name) {
  for (const DTypeInfo& entry : kDTypes) {
    if (name == entry.name) return entry.dtype;
  }
  fail("unsupported tensor dtype \"", name,
       "\" (supported: F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL)");
}

const char* dtype_name(DType dtype) { return info(dtype).name; }

size_t dtype_size(DType dtype) { return info(dtype).size; }

int64_t RawTensor::numel() const {
  int64_t count = 1;  // a 0-d tensor holds one element
  for (int64_t dim : shape) count *= dim;
  return count;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? "," : "") << shape[i];
  out << ']';
  return out.str();
}

}  // namespace gad
