// ClipConfig — the architecture of an OpenCLIP ViT model, read from OpenCLIP's JSON configs.
//
// Shipped configs live in assets/configs (ViT-B-16-plus-240 is InCTRL's backbone and gad's CLIP
// default); `--config` also accepts a path to any file with the same schema.
#pragma once

#include <string>
#include <vector>

namespace gad {

struct VisionConfig {
  int image_size = 240, patch_size = 16, width = 896, layers = 12, heads = 14, mlp_width = 3584;
  int grid() const { return image_size / patch_size; }
  int num_patches() const { return grid() * grid(); }
};

struct TextConfig {
  int context_length = 77, vocab_size = 49408, width = 640, heads = 10, layers = 12, mlp_width = 2560;
};

struct ClipConfig {
  std::string name;  // config name or file path, for messages and metadata
  int embed_dim = 640;
  VisionConfig vision;
  TextConfig text;
  bool quick_gelu = false;
  std::vector<int> tapped_layers{7, 9, 11};  // 1-based block indices whose outputs InCTRL compares
};

inline constexpr const char* kDefaultClipConfig = "ViT-B-16-plus-240";

// `name_or_path` is a shipped config name (see list_clip_configs) or a JSON file path.
ClipConfig load_clip_config(const std::string& name_or_path);
std::vector<std::string> list_clip_configs();

}  // namespace gad
