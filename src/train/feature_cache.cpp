#include "train/feature_cache.h"

#include <cstdlib>
#include <filesystem>

#include "image/image.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace fs = std::filesystem;

namespace gad {
namespace {

// Weights, taps and preprocessing all change the features; the description names taps and input.
std::string backbone_key(const Backbone& b) {
  const std::string d = b.kind() + "|" + b.description() + "|" + precision_name(b.precision());
  return b.fingerprint() + "-" + sha256_hex(reinterpret_cast<const uint8_t*>(d.data()), d.size()).substr(0, 8);
}

std::string entry_path(const std::string& dir, const std::string& sha) {
  return dir + "/" + sha.substr(0, 2) + "/" + sha + ".safetensors";
}

// Copies one cached entry ("global", "tap.0", ... in that order, all F16) into row `i` of the
// preallocated tensors; false when it does not fit.
bool load_entry(const std::string& path, CachedFeatures& out, int64_t i) {
  SafetensorsContents c = read_safetensors(path);
  if (c.tensors.size() != out.taps.size() + 1) return false;
  for (size_t t = 0; t < c.tensors.size(); ++t) {
    const auto& [name, raw] = c.tensors[t];
    at::Tensor dst = t == 0 ? out.global[i] : out.taps[t - 1][i];
    if (name != (t == 0 ? std::string("global") : "tap." + std::to_string(t - 1)) || raw.dtype != DType::F16 ||
        !dst.sizes().equals(raw.shape))
      return false;
    dst.copy_(at::from_blob(const_cast<uint8_t*>(raw.data), raw.shape, at::kHalf));
  }
  return true;
}

void store_entry(const std::string& path, const Features& f, int64_t b) {
  fs::create_directories(fs::path(path).parent_path());
  RawTensorList list;
  list.emplace_back("global", raw_view(f.global[b].to(at::kHalf).contiguous()));
  for (size_t l = 0; l < f.taps.size(); ++l)
    list.emplace_back("tap." + std::to_string(l), raw_view(f.taps[l][b].to(at::kHalf).contiguous()));
  write_safetensors(path, list);
}

}  // namespace

std::string default_feature_cache_dir() {
  if (const char* d = std::getenv("GAD_CACHE_DIR"); d && *d) return std::string(d) + "/features";
  const char* home = std::getenv("HOME");
  if (!home || !*home) fail("HOME is not set: give --cache DIR or set GAD_CACHE_DIR");
  return std::string(home) + "/.cache/gad/features";
}

CachedFeatures cached_features(const Backbone& backbone, const std::vector<std::string>& paths,
                               const FeatureCacheOptions& o) {
  const std::string dir = (o.dir.empty() ? default_feature_cache_dir() : o.dir) + "/" + backbone_key(backbone);
  const auto n = static_cast<int64_t>(paths.size());
  std::vector<std::string> shas(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) {
    std::vector<uint8_t> bytes = read_file_bytes(paths[i]);
    shas[i] = sha256_hex(bytes.data(), bytes.size());
  }

  // Shapes come from the first image's entry, encoded and stored now if it is missing or damaged.
  const std::string first = entry_path(dir, shas.at(0));
  auto encode_first = [&] {
    store_entry(first, backbone.encode(stack_pixels({backbone.preprocess(decode_image(paths[0]))})), 0);
  };
  SafetensorsContents probe;
  try {
    if (!fs::exists(first)) encode_first();
    probe = read_safetensors(first);
  } catch (const Error&) {
    encode_first();
    probe = read_safetensors(first);
  }
  CachedFeatures out;
  for (const auto& [name, raw] : probe.tensors) {
    if (name == "global") out.global = at::empty({n, raw.shape.at(0)});
    else out.taps.push_back(at::empty({n, raw.shape.at(0), raw.shape.at(1)}, at::kHalf));
  }
  if (!out.global.defined()) fail(first, ": feature cache entry without 'global' (delete it)");
  std::vector<int64_t> missing;
  for (int64_t i = 0; i < n; ++i) {
    const std::string p = entry_path(dir, shas[i]);
    bool ok = false;
    try {
      ok = fs::exists(p) && load_entry(p, out, i);
    } catch (const Error&) {
      ok = false;  // a damaged entry is re-encoded and rewritten
    }
    if (!ok) missing.push_back(i);
  }
  if (o.log)
    o.log("feature cache " + dir + ": " + std::to_string(n - static_cast<int64_t>(missing.size())) + " of " +
          std::to_string(n) + " images cached, encoding " + std::to_string(missing.size()));
  Progress bar(missing.size(), "images encoded");
  for (size_t start = 0; start < missing.size(); start += o.batch) {
    const size_t end = std::min(missing.size(), start + static_cast<size_t>(o.batch));
    std::vector<PixelTensor> pixels;
    for (size_t j = start; j < end; ++j) pixels.push_back(backbone.preprocess(decode_image(paths[missing[j]])));
    Features f = backbone.encode(stack_pixels(pixels));
    for (size_t j = start; j < end; ++j) {
      const int64_t i = missing[j], b = static_cast<int64_t>(j - start);
      store_entry(entry_path(dir, shas[i]), f, b);
      out.global[i].copy_(f.global[b].to(at::kHalf));
      for (size_t l = 0; l < f.taps.size(); ++l) out.taps[l][i].copy_(f.taps[l][b]);
    }
    if (o.progress) bar.update(end, fs::path(paths[missing[end - 1]]).filename().string());
  }
  if (o.progress && !missing.empty()) bar.finish();
  return out;
}

}  // namespace gad
