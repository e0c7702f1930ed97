// Installing gad's embedded default ("lite") backbone: nsfwjs MobileNetV2 from the npm registry.
//
// The only redistributable pretrained CNN gad found ships inside the MIT-licensed npm package
// nsfwjs@4.3.0, as two UMD JavaScript modules (the model.json object and the weight shard as a
// base64 string). `gad models fetch lite` runs `npm pack`, checks the tarball's sha256, extracts
// and decodes the two modules (reproducing node's JSON.stringify / base64 bytes exactly), checks
// the decoded files' sha256, and writes gad's converted model plus the package's MIT licence:
//   <models_dir>/lite-mobilenet_v2.safetensors, <models_dir>/lite-mobilenet_v2.LICENSE
// Every check runs before anything is written, and files are renamed into place, so a failure
// (offline, npm missing, hash mismatch) leaves no partial output. Fetching is idempotent.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gad {

// $GAD_MODELS_DIR, else $HOME/.cache/gad/models.
std::string default_models_dir();
// <models_dir>/lite-mobilenet_v2.safetensors
std::string lite_model_path(const std::string& models_dir);

struct FetchOptions {
  std::string npm = "npm";                        // program run as `npm pack ...` (found on PATH)
  std::function<void(const std::string&)> log;    // progress lines (may be empty)
};

// Installs the lite model into `models_dir` (created if needed); returns the model path. Does
// nothing when an installed file already records the expected source hashes.
std::string fetch_lite_model(const std::string& models_dir, const FetchOptions& options = {});
// The same from an nsfwjs-4.3.0.tgz already on disk (no network).
std::string install_lite_from_tarball(const std::string& tgz_path, const std::string& models_dir,
                                      const FetchOptions& options = {});

// What `gad models list` shows: every *.safetensors model in a directory.
struct InstalledModel {
  std::string path, description;
  uint64_t bytes = 0;
  bool lite = false, has_license = false;
};
std::vector<InstalledModel> installed_models(const std::string& models_dir);

// ---- decoding helpers (exposed for tests) ----
// The value a browserify/UMD module assigns to `module.exports`: an object/array literal comes
// back as the JSON text node's JSON.stringify would print; a string literal as its raw value.
// `source` names the module in errors.
std::string umd_exported_json(const std::string& js, const std::string& source);
std::string umd_exported_string(const std::string& js, const std::string& source);
// ECMAScript Number::toString for finite doubles ("1e-7", "0.5", "123", "1.5e+21").
std::string js_number_string(double v);

}  // namespace gad
