#include "scorers/reference_set.h"


#include <algorithm>
#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/torch_archive.h"
#include "model/weights.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

constexpr const char* kFormat = "gad-refset-1";
constexpr const char* kChecksumKey = "gad_sha256";

// The integrity checksum (see the header): the metadata JSON, then every tensor by name.
std::string payload_sha256(const std::string& meta_json, RawTensorList tensors) {
  std::sort(tensors.begin(), tensors.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  Sha256 h;
  h.update(meta_json.data(), meta_json.size());
  for (const auto& [name, raw] : tensors) {
    const std::string head = "\n" + name + " " + dtype_name(raw.dtype) + " " + shape_string(raw.shape) + "\n";
    h.update(head.data(), head.size());
    h.update(raw.data, raw.nbytes);
  }
  return h.hex();
}

nlohmann::json threshold_to_json(const Threshold& t) {
  nlohmann::json j = {{"value", t.value}, {"far", t.far}, {"method", t.method}, {"n", t.n}};
  if (!t.time.empty()) j["time"] = t.time;
  if (!t.setup.empty()) j["setup"] = t.setup;
  if (t.map_top > 0) j["map_top"] = t.map_top;
  return j;
}

Threshold threshold_from_json(const std::string& path, const nlohmann::json& t) {
  if (!t.is_object() || !t.contains("value") || !t["value"].is_number() || !std::isfinite(t["value"].get<double>()))
    fail_as(ErrorKind::CorruptFile, path, ": corrupt reference-set metadata (threshold without a finite numeric value)");
  Threshold out{t["value"].get<double>(), t.value("far", 0.0), t.value("method", ""), t.value("n", int64_t{0})};
  out.time = t.value("time", "");
  if (t.contains("setup")) out.setup = t["setup"].get<ScoringSetup>();
  out.map_top = t.value("map_top", 0.0);
  return out;
}

at::Tensor tensor_copy(const RawTensor& r) {
  std::vector<int64_t> shape(r.shape.begin(), r.shape.end());
  return at::from_blob(const_cast<uint8_t*>(r.data), shape, at::kFloat).clone();
}

at::Tensor l2_normalise_rows(const at::Tensor& x) { return x / x.norm(2, -1, true); }

std::vector<at::Tensor> to_bf16(const std::vector<at::Tensor>& banks) {
  std::vector<at::Tensor> out;
  for (const auto& b : banks) out.push_back(b.to(at::kBFloat16));
  return out;
}

// One [3,S,S] image of a prompt file as a PixelTensor (the crop geometry of an S x S source).
PixelTensor prompt_pixels(const std::string& path, size_t index, const at::Tensor& t, int64_t size) {
  if (t.dim() != 3 || t.size(0) != 3 || t.size(1) != size || t.size(2) != size)
    fail(path, ": prompt ", index, " has shape ", shape_string(t.sizes().vec()), ", expected [3,", size, ",", size,
         "] (images preprocessed for this model's ", size, " px input)");
  if (!t.is_floating_point()) fail(path, ": prompt ", index, " is not a float tensor (", t.scalar_type(), ")");
  at::Tensor f = t.to(at::kFloat).contiguous();
  if (!at::isfinite(f).all().item<bool>()) fail(path, ": prompt ", index, " holds NaN or infinite values");
  PixelTensor p;
  p.height = p.width = static_cast<int>(size);
  p.chw.assign(f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
  p.geometry = {p.width, p.height, p.width, p.height, 0, 0, p.width};
  return p;
}

// The `gad` metadata of a .gadref into `set`, checked against `backbone`. Throws gad::Error, or
// nlohmann::json::exception for a key of the wrong type (the caller words that).
void read_metadata(const std::string& path, const std::string& text, const Backbone* backbone, ReferenceSet& set) {
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    fail_as(ErrorKind::CorruptFile, path, ": corrupt reference-set metadata (", e.what(), ")");
  }
  if (!meta.is_object()) fail_as(ErrorKind::CorruptFile, path, ": corrupt reference-set metadata (not a JSON object)");
  if (meta.value("format", "") != kFormat) fail(path, ": unsupported reference-set format '", meta.value("format", ""), "'");
  set.class_name = meta.value("class_name", "");
  set.backbone_kind = meta.value("backbone_kind", "");
  set.backbone_fingerprint = meta.value("backbone_fingerprint", "");
  set.backbone_description = meta.value("backbone", "");
  if (meta.contains("taps")) set.taps = meta["taps"].get<std::vector<std::string>>();
  if (backbone && set.backbone_fingerprint != backbone->fingerprint())
    fail(path, ": made with another model (", set.backbone_description, ", fingerprint ", set.backbone_fingerprint,
         "); this model is ", backbone->description(), " (fingerprint ", backbone->fingerprint(), ")");
  if (meta.contains("sources"))
    for (const auto& s : meta["sources"]) set.sources.push_back({s.value("path", ""), s.value("sha256", "")});
  set.scorer = meta.value("scorer", "inctrl");
  set.views = meta.value("views", int64_t{1});
  if (meta.contains("scorer_options")) set.scorer_options = meta["scorer_options"].dump();
  // The name is checked against the scorers when a detector loads the set (make_scorer); here only
  // that it is a name at all, so `gad refs show` can describe any set.
  const bool name_ok = !set.scorer.empty() && set.scorer.size() <= 32 &&
                       std::all_of(set.scorer.begin(), set.scorer.end(), [](unsigned char c) { return std::islower(c) || std::isdigit(c) || c == '-'; });
  if (!name_ok || set.views < 1)
    fail(path, ": corrupt reference-set metadata (scorer '", set.scorer, "', views ", set.views, ")");
  if (meta.contains("thresholds"))
    for (const auto& t : meta["thresholds"]) set.threshold_history.push_back(threshold_from_json(path, t));
  if (meta.contains("threshold")) {
    set.threshold = threshold_from_json(path, meta["threshold"]);
    if (set.threshold_history.empty()) set.threshold_history.push_back(*set.threshold);  // an older file
  }
}

// Every bank, global and prior value must be finite: one NaN in a bank makes every query's score
// NaN, which must never reach a verdict.
void check_finite(const std::string& path, const std::string& name, const at::Tensor& t) {
  if (!at::isfinite(t).all().item<bool>())
    fail_as(ErrorKind::CorruptFile, path, ": tensor '", name, "' holds NaN or infinite values (a damaged set; rebuild it)");
}

}  // namespace

PromptFile read_prompt_file(const std::string& path, int64_t input_size) {
  std::vector<at::Tensor> images;
  for (const RawTensor& raw : read_torch_tensors(path)) {
    at::Tensor t = to_tensor(raw);
    if (t.dim() == 4) {  // a stacked [K,3,H,W] set
      for (int64_t i = 0; i < t.size(0); ++i) images.push_back(t[i]);
    } else {
      images.push_back(t);
    }
  }
  if (images.empty()) fail(path, ": holds no prompt images (K = 0)");
  PromptFile out;
  const std::string sha = file_sha256(path);
  for (size_t i = 0; i < images.size(); ++i) {
    out.pixels.push_back(prompt_pixels(path, i, images[i], input_size));
    out.sources.push_back({path + "#" + std::to_string(i), sha});
  }
  return out;
}

ReferenceSet ReferenceSet::build(const Backbone& backbone, const std::vector<PixelTensor>& images,
                                 const std::vector<ReferenceSource>& sources, const std::string& class_name,
                                 bool with_text) {
  if (images.empty()) fail("reference set: K must be at least 1 (no reference images given)");
  at::Tensor text = with_text && backbone.has_text() ? backbone.text_prior(class_name) : at::Tensor();  // validates the name
  const bool same_size = std::all_of(images.begin(), images.end(), [&](const PixelTensor& p) {
    return p.width == images[0].width && p.height == images[0].height;
  });
  if (same_size) return from_features(backbone, backbone.encode(stack_pixels(images)), text, sources, class_name);
  Features all;
  std::vector<at::Tensor> globals;
  std::vector<std::vector<at::Tensor>> taps;
  for (const auto& image : images) {
    Features f = backbone.encode(stack_pixels({image}));
    globals.push_back(f.global);
    taps.resize(f.taps.size());
    for (size_t l = 0; l < f.taps.size(); ++l) taps[l].push_back(f.taps[l][0]);
  }
  all.global = at::cat(globals);
  for (auto& t : taps) all.taps.push_back(at::cat(t).unsqueeze(0));  // [1, sum of P, C]: the bank's rows
  return from_features(backbone, all, text, sources, class_name);
}

ReferenceSet ReferenceSet::made_with(const Backbone& backbone, const std::vector<ReferenceSource>& sources,
                                     const std::string& class_name) {
  ReferenceSet set;
  set.class_name = class_name;
  set.backbone_kind = backbone.kind();
  set.backbone_fingerprint = backbone.fingerprint();
  set.backbone_description = backbone.description();
  set.sources = sources;
  set.taps = backbone.patch_taps();
  return set;
}

ReferenceSet ReferenceSet::from_features(const Backbone& backbone, const Features& f, at::Tensor text_prior,
                                         const std::vector<ReferenceSource>& sources, const std::string& class_name) {
  ReferenceSet set = made_with(backbone, sources, class_name);
  set.text_prior = std::move(text_prior);
  set.globals = f.global.contiguous();
  for (const auto& tap : f.taps) set.banks.push_back(l2_normalise_rows(tap.reshape({-1, tap.size(-1)})).contiguous());
  for (size_t l = 0; l < set.banks.size(); ++l) check_finite("reference images", "bank." + std::to_string(l), set.banks[l]);
  if (backbone.precision() == Precision::BF16) set.banks_bf16 = to_bf16(set.banks);
  return set;
}

void ReferenceSet::save(const std::string& path) const {
  const auto [tensors, metadata] = contents();
  write_safetensors(path, tensors, metadata);
}

std::string ReferenceSet::to_bytes() const {
  const auto [tensors, metadata] = contents();
  return safetensors_bytes(tensors, metadata);
}

std::pair<RawTensorList, std::map<std::string, std::string>> ReferenceSet::contents() const {
  RawTensorList tensors;
  for (size_t l = 0; l < banks.size(); ++l) tensors.emplace_back("bank." + std::to_string(l), raw_view(banks[l]));
  tensors.emplace_back("globals", raw_view(globals));
  if (text_prior.defined()) tensors.emplace_back("text_prior", raw_view(text_prior));
  for (const auto& [name, t] : state) tensors.emplace_back("state." + name, raw_view(t));
  nlohmann::json meta = {{"format", kFormat},
                         {"class_name", class_name},
                         {"k", k()},
                         {"backbone_kind", backbone_kind},
                         {"backbone_fingerprint", backbone_fingerprint},
                         {"backbone", backbone_description},
                         {"preprocessing", backbone_kind == "clip"     ? "clip-bicubic-centercrop"
                                           : scorer == "subspacead" && backbone_kind == "dinov2" ? "square-bicubic"
                                           : backbone_kind == "dinov2" ? "dino-bicubic-smaller-edge-topleft"
                                                                       : "lite-bilinear"},
                         {"scorer", scorer},
                         {"views", views}};
  if (!taps.empty()) meta["taps"] = taps;
  if (scorer_options != "{}") meta["scorer_options"] = nlohmann::json::parse(scorer_options);
  for (const auto& s : sources) meta["sources"].push_back({{"path", s.path}, {"sha256", s.sha256}});
  if (threshold) meta["threshold"] = threshold_to_json(*threshold);
  for (const auto& t : threshold_history) meta["thresholds"].push_back(threshold_to_json(t));
  const std::string text = meta.dump();
  std::map<std::string, std::string> metadata = {{"gad", text}, {kChecksumKey, payload_sha256(text, tensors)}};
  return {std::move(tensors), std::move(metadata)};
}

ReferenceSet ReferenceSet::with_threshold(const Threshold& t) const {
  ReferenceSet out = *this;  // the tensors are shared, not copied
  out.threshold = t;
  out.threshold_history.push_back(t);
  return out;
}

std::vector<std::string> ReferenceSet::saved_taps(const std::string& path) {
  SafetensorsContents c = read_safetensors(path);
  auto it = c.metadata.find("gad");
  if (it == c.metadata.end()) return {};
  nlohmann::json meta = nlohmann::json::parse(it->second, nullptr, false);
  if (!meta.is_object() || !meta.contains("taps") || !meta["taps"].is_array()) return {};
  std::vector<std::string> taps;
  for (const auto& t : meta["taps"])
    if (t.is_string()) taps.push_back(t.get<std::string>());
  return taps;
}

ReferenceSet ReferenceSet::load(const std::string& path, const Backbone& backbone) {
  return read(path, read_safetensors(path), &backbone);
}
ReferenceSet ReferenceSet::peek(const std::string& path) { return read(path, read_safetensors(path), nullptr); }
ReferenceSet ReferenceSet::from_bytes(const std::string& bytes, const std::string& name, const Backbone& backbone) {
  return read(name, read_safetensors_bytes(std::make_shared<const std::string>(bytes), name), &backbone);
}

ReferenceSet ReferenceSet::read(const std::string& path, const SafetensorsContents& c, const Backbone* backbone) {
  auto it = c.metadata.find("gad");
  if (it == c.metadata.end()) fail(path, ": not a gad reference set (no gad metadata)");
  ReferenceSet set;
  auto sum = c.metadata.find(kChecksumKey);
  set.integrity = sum == c.metadata.end() ? "unverified" : "verified";
  if (sum != c.metadata.end() && sum->second != payload_sha256(it->second, c.tensors))
    fail_as(ErrorKind::CorruptFile, path, ": checksum mismatch: the file was changed or damaged after it was written");
  try {
    read_metadata(path, it->second, backbone, set);
  } catch (const nlohmann::json::exception& e) {  // a key of the wrong JSON type
    fail(path, ": corrupt reference-set metadata (", e.what(), ")");
  }
  std::map<std::string, at::Tensor> named;
  for (const auto& [name, raw] : c.tensors) {
    if (raw.dtype != DType::F32) fail(path, ": tensor '", name, "' is ", dtype_name(raw.dtype), ", expected F32");
    named[name] = tensor_copy(raw);
  }
  for (size_t l = 0;; ++l) {
    auto b = named.find("bank." + std::to_string(l));
    if (b == named.end()) break;
    set.banks.push_back(b->second);
  }
  for (const auto& [name, t] : named)
    if (name.rfind("state.", 0) == 0) set.state[name.substr(6)] = t;
  // What each scorer reads beyond the globals is its own check (Scorer::check) when the set is loaded.
  if (!named.count("globals") || (set.banks.empty() && set.state.empty())) fail(path, ": reference set lacks its banks or globals");
  set.globals = named["globals"];
  if (named.count("text_prior")) set.text_prior = named["text_prior"];
  for (const auto& [name, t] : named) check_finite(path, name, t);
  if (backbone && backbone->precision() == Precision::BF16) set.banks_bf16 = to_bf16(set.banks);
  if (set.globals.dim() == 2 && set.globals.size(0) == 0) fail(path, ": holds no reference images (K = 0)");
  const int64_t dim = backbone ? backbone->embed_dim() : set.globals.size(-1);
  if (set.globals.dim() != 2 || set.globals.size(1) != dim || set.globals.size(0) % set.views != 0)
    fail(path, ": globals have shape ", set.globals.sizes(), ", expected [K·", set.views, ",", dim, "]");
  return set;
}

HeldOutReference hold_out_reference(const ReferenceSet& refs, int64_t k) {
  const int64_t K = refs.k();
  if (K < 2 || k < 0 || k >= K || refs.views != 1)
    fail("hold_out_reference: reference ", k, " of a set of K = ", K, " with ", refs.views, " view(s)");
  HeldOutReference h{{}, refs};
  h.rest.threshold.reset();
  h.rest.threshold_history.clear();
  h.rest.banks.clear();
  h.rest.banks_bf16.clear();
  for (const auto& bank : refs.banks) {
    const int64_t p = bank.size(0) / K;
    h.query.taps.push_back(bank.slice(0, k * p, (k + 1) * p).unsqueeze(0));
    h.rest.banks.push_back(at::cat({bank.slice(0, 0, k * p), bank.slice(0, (k + 1) * p)}).contiguous());
    if (!refs.banks_bf16.empty()) h.rest.banks_bf16.push_back(h.rest.banks.back().to(at::kBFloat16));
  }
  h.query.global = refs.globals.slice(0, k, k + 1);
  h.rest.globals = at::cat({refs.globals.slice(0, 0, k), refs.globals.slice(0, k + 1)}).contiguous();
  return h;
}

}  // namespace gad
