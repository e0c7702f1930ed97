#include "engine/load_model.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "clip/clip_backbone.h"
#include "dino/dino_backbone.h"
#include "io/safetensors.h"
#include "lite/fetch.h"
#include "lite/lite_backbone.h"
#include "engine/catalog.h"
#include "util/assets.h"
#include "util/error.h"

namespace gad {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The installed embedded default (`gad models fetch lite`).
std::string default_model_file() {
  std::string path = lite_model_path(default_models_dir());
  if (!std::filesystem::exists(path))
    fail_as(ErrorKind::NotFound, "no model given and the embedded default is not installed: run `gad models fetch lite` (looked for ", path, ")");
  return path;
}

// A lite backbone from a tfjs model.json or a gad lite file; `w` keeps any head keys of the file.
std::unique_ptr<Backbone> load_lite(const ModelOptions& files, const std::string& path, Weights& w) {
  if (!files.config.empty()) fail("config: applies to CLIP and DINOv2 models only, not to the lite model ", path);
  if (files.resolution) fail("resolution: applies to DINOv2 models only, not to the lite model ", path);
  LiteTaps taps;
  if (!files.lite_taps.empty()) taps.patch = files.lite_taps;
  if (ends_with(path, ".json")) return std::make_unique<LiteBackbone>(TfjsModel::load_tfjs(path), taps);
  w = Weights::load(path);
  return std::make_unique<LiteBackbone>(TfjsModel::from_weights(w, read_safetensors(path).metadata), taps);
}

// Heads trained by `gad train` record the backbone they were trained on; refuse any other.
void check_heads_backbone(const std::string& heads_path, const Backbone& backbone) {
  if (!ends_with(heads_path, ".safetensors")) return;
  const auto meta = read_safetensors(heads_path).metadata;
  const auto it = meta.find("gad");
  if (it == meta.end()) return;  // converted reference checkpoints carry no record
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception&) {
    fail(heads_path, ": unreadable gad metadata");
  }
  const std::string fp = j.value("/backbone/fingerprint"_json_pointer, std::string());
  if (!fp.empty() && fp != backbone.fingerprint())
    fail(heads_path, ": these heads were trained on another backbone (", j.value("/backbone/description"_json_pointer, fp),
         ", fingerprint ", fp, "), not on ", backbone.description(), " (", backbone.fingerprint(), ")");
}

}  // namespace

std::string shipped_lite_heads_path() { return asset_path("heads/lite-mobilenet_v2.safetensors"); }

LoadedModel load_model(const ModelOptions& named) {
  ModelOptions files = named;
  const ResolvedModel resolved = resolve_model_name(files.model, files.config);  // `--model vit-b-16-plus-240`
  files.model = resolved.path;
  files.config = resolved.config;
  const std::string path = files.model.empty() || files.model == "lite" ? default_model_file() : files.model;
  LoadedModel m;
  Weights w(path);
  if (ends_with(path, ".json") || TfjsModel::is_gad_file(path)) {
    m.backbone = load_lite(files, path, w);
  } else {
    if (!files.lite_taps.empty()) fail("lite taps: apply to lite models only, not to ", path);
    w = Weights::load(path);
    if (is_dino_weights(w)) {
      if (!files.heads.empty() && files.heads != "none") fail("heads: InCTRL heads need a CLIP or lite backbone, not DINOv2 (", path, ")");
      m.backbone = std::make_unique<DinoBackbone>(dino_config(w, files.config), w, files.resolution ? files.resolution : 448);
      w.check_all_taken();
      return m;
    }
    if (files.resolution) fail("resolution: applies to DINOv2 models only, not to ", path);
    m.backbone = std::make_unique<ClipBackbone>(load_clip_config(files.config.empty() ? kDefaultClipConfig : files.config), w);
  }
  const int64_t D = m.backbone->embed_dim(), P = m.backbone->num_patches();
  const std::string heads = files.heads == "lite" ? shipped_lite_heads_path() : files.heads;
  if (heads == "none") {
    w.ignore_prefix("adapter.");
    w.ignore_prefix("diff_head");
  } else if (!heads.empty()) {
    check_heads_backbone(heads, *m.backbone);
    Weights hw = Weights::load(heads);
    m.heads = InctrlHeads::load(hw, D, P);
    hw.check_all_taken();
    if (m.heads->stats && m.backbone->kind() != "lite")
      fail(heads, ": a statistics head (gad's variant for the lite backbone) cannot score with ", m.backbone->description());
    m.heads_source = heads;
    w.ignore_prefix("adapter.");  // a separate heads file replaces any heads in the model file
    w.ignore_prefix("diff_head");
  } else if (InctrlHeads::present_in(w)) {
    m.heads = InctrlHeads::load(w, D, P);
    m.heads_source = path;
  }
  w.check_all_taken();
  return m;
}

}  // namespace gad

