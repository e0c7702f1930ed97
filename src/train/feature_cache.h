// FeatureCache — backbone outputs of training images, computed once and kept on disk.
//
// Training only ever needs each image's global embedding and tapped patch tokens, and the frozen
// backbone dominates the cost, so `gad train` encodes every image once and stores the result as
// float16 in <cache>/<backbone key>/<sha[0:2]>/<sha256 of the file bytes>.safetensors. Keys are
// file contents, so renamed or copied images hit the cache and edited ones miss it; the backbone
// key covers weights, taps and preprocessing. Files are written one by one, atomically, so an
// interrupted run resumes where it stopped. Epochs then cost only the heads.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "backbone/backbone.h"

namespace gad {

struct CachedFeatures {
  at::Tensor global;             // [N, D] float32 (float16-rounded)
  std::vector<at::Tensor> taps;  // per tapped layer: [N, P_l, C_l] float16
};

struct FeatureCacheOptions {
  std::string dir;  // empty = default_feature_cache_dir()
  int batch = 32;   // images per encode
  bool progress = true;
  std::function<void(const std::string&)> log;
};

// $GAD_CACHE_DIR/features, else $HOME/.cache/gad/features.
std::string default_feature_cache_dir();

// Features of `paths` in order, from the cache or encoded now (and stored).
CachedFeatures cached_features(const Backbone& backbone, const std::vector<std::string>& paths,
                               const FeatureCacheOptions& options);

}  // namespace gad
