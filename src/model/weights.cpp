#include "model/weights.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "io/safetensors.h"
#include "io/torch_archive.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

at::ScalarType scalar_type(DType d) {
  switch (d) {
    case DType::F32: return at::kFloat;
    case DType::F64: return at::kDouble;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::I64: return at::kLong;
    case DType::I32: return at::kInt;
    case DType::I16: return at::kShort;
    case DType::I8: return at::kChar;
    case DType::U8: return at::kByte;
    case DType::Bool: return at::kBool;
  }
  return at::kFloat;
}

}  // namespace

at::Tensor to_tensor(const RawTensor& raw) {
  auto owner = raw.owner;
  std::vector<int64_t> shape(raw.shape.begin(), raw.shape.end());
  at::Tensor t = at::from_blob(const_cast<uint8_t*>(raw.data), shape, [owner](void*) {},
                               at::TensorOptions().dtype(scalar_type(raw.dtype)));
  if (t.is_floating_point() && t.scalar_type() != at::kFloat) return t.to(at::kFloat);
  return t;
}

namespace {

bool starts_with_zip_magic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  unsigned char magic[4] = {0, 0, 0, 0};
  size_t n = std::fread(magic, 1, 4, f);
  std::fclose(f);
  return n == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4;
}

std::string shape_of(at::IntArrayRef s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? "," : "") << s[i];
  o << "]";
  return o.str();
}

}  // namespace

RawTensor raw_view(const at::Tensor& t) {
  if (!t.is_contiguous()) fail("raw_view: tensor is not contiguous");
  RawTensor r;
  switch (t.scalar_type()) {
    case at::kFloat: r.dtype = DType::F32; break;
    case at::kHalf: r.dtype = DType::F16; break;
    case at::kBFloat16: r.dtype = DType::BF16; break;
    case at::kDouble: r.dtype = DType::F64; break;
    case at::kLong: r.dtype = DType::I64; break;
    default: fail("raw_view: unsupported dtype ", t.scalar_type());
  }
  r.shape.assign(t.sizes().begin(), t.sizes().end());
  r.data = static_cast<const uint8_t*>(t.data_ptr());
  r.nbytes = t.nbytes();
  auto keep = std::make_shared<at::Tensor>(t);
  r.owner = std::shared_ptr<const void>(keep, keep.get());
  return r;
}

Weights Weights::load(const std::string& path) {
  RawTensorList raw = starts_with_zip_magic(path) ? read_torch_archive(path) : read_safetensors(path).tensors;  // CorruptFile inside
  Weights w(path);
  for (const auto& [name, t] : raw) w.tensors_[name] = to_tensor(t);
  if (w.tensors_.empty()) fail_as(ErrorKind::CorruptFile, path, ": holds no tensors");
  w.strip_prefix_of_every_key("module.");
  return w;
}

void Weights::strip_prefix_of_every_key(const std::string& prefix) {
  // Only when every key has it: a file where some keys carry it is malformed, and stripping
  // those alone could make two keys collide or hide the real mismatch.
  for (const auto& kv : tensors_)
    if (kv.first.rfind(prefix, 0) != 0) return;
  std::map<std::string, at::Tensor> stripped;
  for (auto& kv : tensors_) stripped[kv.first.substr(prefix.size())] = std::move(kv.second);
  tensors_ = std::move(stripped);
}

std::vector<std::string> Weights::keys() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

Weights Weights::synthetic(uint64_t seed) {
  Weights w("<random weights>");
  w.synthetic_ = true;
  w.generator_ = at::make_generator<at::CPUGeneratorImpl>(seed);
  return w;
}

at::Tensor Weights::take(const std::string& key, at::IntArrayRef shape, at::ScalarType dtype) {
  if (synthetic_ && !tensors_.count(key)) {
    bool variance = key.size() > 11 && key.compare(key.size() - 11, 11, "running_var") == 0;
    tensors_[key] = variance                   ? at::ones(shape)  // a variance must be positive
                    : at::isFloatingType(dtype) ? at::normal(0.0, 0.02, shape, generator_).to(dtype)
                                                : at::zeros(shape, at::TensorOptions().dtype(dtype));
  }
  auto it = tensors_.find(key);
  if (it == tensors_.end()) fail_as(ErrorKind::CorruptFile, source_, ": missing key '", key, "' (expected shape ", shape_of(shape), ")");
  if (it->second.sizes() != shape)
    fail_as(ErrorKind::CorruptFile, source_, ": key '", key, "' has shape ", shape_of(it->second.sizes()), ", expected ", shape_of(shape));
  if (it->second.scalar_type() != dtype)
    fail_as(ErrorKind::CorruptFile, source_, ": key '", key, "' has dtype ", c10::toString(it->second.scalar_type()), ", expected ",
         c10::toString(dtype));
  used_.insert(key);
  return it->second;
}

void Weights::ignore(const std::string& key) {
  if (tensors_.count(key)) used_.insert(key);
}

void Weights::ignore_prefix(const std::string& prefix) {
  for (const auto& kv : tensors_)
    if (kv.first.rfind(prefix, 0) == 0) used_.insert(kv.first);
}

void Weights::check_all_taken() const {
  std::vector<std::string> extra;
  for (const auto& kv : tensors_)
    if (!used_.count(kv.first)) extra.push_back(kv.first);
  if (extra.empty()) return;
  std::ostringstream o;
  o << source_ << ": unexpected key '" << extra[0] << "' " << shape_of(tensors_.at(extra[0]).sizes());
  if (extra.size() > 1) o << " (and " << extra.size() - 1 << " more)";
  o << "; wrong --config for this file?";
  throw Error(o.str());
}

std::string fingerprint(const std::map<std::string, at::Tensor>& tensors) {
  Sha256 h;
  for (const auto& [name, t] : tensors) {
    h.update(name.data(), name.size());
    std::string s = shape_of(t.sizes());
    h.update(s.data(), s.size());
    // Hashing every byte of a ViT-B model takes seconds and pulls the whole memory-mapped file
    // into RAM (even strided samples do, through the kernel's fault-around). The first and last
    // 32 values of each tensor tell any two real checkpoints apart and touch two pages each.
    at::Tensor flat = (t.is_floating_point() ? t.to(at::kFloat) : t).reshape({-1});
    const int64_t n = flat.numel(), edge = std::min<int64_t>(32, n);
    at::Tensor sample = at::cat({flat.slice(0, 0, edge), flat.slice(0, n - edge, n)}).contiguous();
    h.update(sample.data_ptr(), sample.nbytes());
  }
  return h.hex().substr(0, 16);
}

}  // namespace gad
