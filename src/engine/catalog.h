// The model catalog — named downloads that `gad models fetch NAME` installs and `--model NAME`
// finds: pinned URLs and hashes taken from the public releases themselves.
//
// OpenCLIP's release files carry the first 8 hex digits of their sha256 in their names and
// OpenCLIP checks only that prefix; gad checks the same (a full hash where a release publishes
// one). Mirrors (`--url`) must serve the identical file: the hash is checked all the same.
// The InCTRL checkpoints themselves live on Google Drive with no stable URL, so they are not
// listed: users download them by hand and gad checks every key and shape when loading.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace gad {

struct CatalogEntry {
  std::string name;         // what users type: `gad models fetch vit-b-16-plus-240`
  std::string url;          // where the release publishes the file
  std::string sha256;       // full hex, or the prefix the release names
  std::string file;         // installed as <models_dir>/<file>
  std::string config;       // the architecture it loads with (--config default)
  std::string description;
};

const std::vector<CatalogEntry>& model_catalog();
const CatalogEntry* find_catalog_entry(const std::string& name);  // nullptr if unknown
std::string catalog_install_path(const CatalogEntry& entry, const std::string& models_dir);  // "" = default dir
std::string catalog_names();                                      // "lite, vit-b-16-plus-240, ..."

struct CatalogFetch {
  std::string dest;          // file to write; empty = <models_dir>/<entry.file>
  std::string models_dir;    // empty = default_models_dir()
  std::string url_override;  // a mirror of the same file
  bool progress = false;
  std::function<void(const std::string&)> log;
};

// Installs `entry` (nothing to do when the destination already holds the right file) and returns
// its path. A failed download is one line: what was tried, from where, and how to place the file
// by hand.
std::string fetch_catalog_model(const CatalogEntry& entry, const CatalogFetch& options);

// `--model` values that name a catalog entry resolve to its installed file (and its config);
// anything else is returned unchanged. Throws when the entry is not installed yet.
struct ResolvedModel {
  std::string path, config;
};
ResolvedModel resolve_model_name(const std::string& model, const std::string& config);

}  // namespace gad
