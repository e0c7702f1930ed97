#include "clip/config.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "util/assets.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

std::string config_dir() { return asset_path("configs"); }

int positive(const std::string& src, const nlohmann::json& j, const char* key, int fallback = -1) {
  if (!j.contains(key)) {
    if (fallback > 0) return fallback;
    fail(src, ": missing '", key, "'");
  }
  if (!j.at(key).is_number_integer() || j.at(key).get<int>() <= 0) fail(src, ": '", key, "' must be a positive integer");
  return j.at(key).get<int>();
}

double ratio(const nlohmann::json& j) { return j.contains("mlp_ratio") ? j.at("mlp_ratio").get<double>() : 4.0; }

ClipConfig parse(const std::string& src, const nlohmann::json& j) {
  ClipConfig c;
  c.name = src;
  if (!j.is_object() || !j.contains("vision_cfg") || !j.contains("text_cfg"))
    fail(src, ": not an OpenCLIP config (needs embed_dim, vision_cfg, text_cfg)");
  c.embed_dim = positive(src, j, "embed_dim");
  const auto& v = j.at("vision_cfg");
  c.vision.image_size = positive(src, v, "image_size");
  c.vision.patch_size = positive(src, v, "patch_size");
  c.vision.width = positive(src, v, "width");
  c.vision.layers = positive(src, v, "layers");
  int head_width = positive(src, v, "head_width", 64);
  if (c.vision.width % head_width != 0) fail(src, ": vision width ", c.vision.width, " is not a multiple of head_width ", head_width);
  c.vision.heads = c.vision.width / head_width;
  c.vision.mlp_width = static_cast<int>(c.vision.width * ratio(v));
  if (c.vision.image_size % c.vision.patch_size != 0) fail(src, ": image_size is not a multiple of patch_size");
  const auto& t = j.at("text_cfg");
  c.text.context_length = positive(src, t, "context_length");
  c.text.vocab_size = positive(src, t, "vocab_size");
  c.text.width = positive(src, t, "width");
  c.text.heads = positive(src, t, "heads");
  c.text.layers = positive(src, t, "layers");
  c.text.mlp_width = static_cast<int>(c.text.width * ratio(t));
  if (c.text.width % c.text.heads != 0) fail(src, ": text width is not a multiple of heads");
  c.quick_gelu = j.value("quick_gelu", false);
  if (j.contains("gad") && j.at("gad").contains("tapped_layers"))
    c.tapped_layers = j.at("gad").at("tapped_layers").get<std::vector<int>>();
  for (int layer : c.tapped_layers)
    if (layer < 1 || layer > c.vision.layers) fail(src, ": tapped layer ", layer, " is outside 1..", c.vision.layers);
  return c;
}

}  // namespace

ClipConfig load_clip_config(const std::string& name_or_path) {
  std::string path = name_or_path;
  bool is_name = name_or_path.find('/') == std::string::npos && name_or_path.find(".json") == std::string::npos;
  if (is_name) {
    path = config_dir() + "/" + name_or_path + ".json";
    if (!std::filesystem::exists(path)) {
      std::string known;
      for (const auto& n : list_clip_configs()) known += (known.empty() ? "" : ", ") + n;
      fail("config ", name_or_path, ": unknown config (known: ", known, "; or pass a JSON file)");
    }
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file_text(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": invalid JSON (", e.what(), ")");
  }
  try {
    ClipConfig c = parse(path, j);
    c.name = is_name ? name_or_path : path;
    return c;
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": bad config value (", e.what(), ")");
  }
}

std::vector<std::string> list_clip_configs() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(config_dir()))
    if (e.path().extension() == ".json") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace gad
