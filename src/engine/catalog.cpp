#include "engine/catalog.h"

#include <filesystem>

#include "lite/fetch.h"
#include "util/download.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

constexpr const char* kOpenClipRelease = "https://github.com/mlfoundations/open_clip/releases/download/v0.2-weights/";

CatalogEntry openclip(const std::string& name, const std::string& file, const std::string& config,
                      const std::string& description) {
  // The release names end in -<first 8 hex digits of the sha256>.pt.
  const std::string prefix = file.substr(file.rfind('-') + 1, 8);
  return {name, kOpenClipRelease + file, prefix, file, config, description};
}


// Meta's torch.hub release (facebookresearch/dinov2 hubconf.py). It publishes no checksums and
// torch.hub does not check these files, so neither can gad: it prints the sha256 it received,
// and the first load checks every key and shape.
CatalogEntry dinov2(const std::string& arch, const std::string& description) {
  std::string base = arch.substr(0, arch.find('_'));
  std::string file = "dinov2_" + arch + (arch.find("_reg") != std::string::npos ? "4" : "") + "_pretrain.pth";
  std::string name = "dinov2-" + arch;
  for (auto& ch : name) ch = ch == '_' ? '-' : ch;
  return {name, "https://dl.fbaipublicfiles.com/dinov2/dinov2_" + base + "/" + file, "", file, "",
          "DINOv2 " + description + " (Apache-2.0)"};
}

}  // namespace

const std::vector<CatalogEntry>& model_catalog() {
  static const std::vector<CatalogEntry> entries = {
      openclip("vit-b-16-plus-240", "vit_b_16_plus_240-laion400m_e32-699c4b84.pt", "ViT-B-16-plus-240",
               "OpenCLIP ViT-B-16-plus-240, LAION-400M epoch 32: InCTRL's backbone (MIT)"),
      openclip("vit-b-16", "vit_b_16-laion400m_e32-55e67d44.pt", "ViT-B-16", "OpenCLIP ViT-B-16, LAION-400M epoch 32 (MIT)"),
      openclip("vit-l-14", "vit_l_14-laion400m_e32-3d133497.pt", "ViT-L-14", "OpenCLIP ViT-L-14, LAION-400M epoch 32 (MIT)"),
      dinov2("vits14", "ViT-S/14, 21 M parameters: AnomalyDINO's backbone"),
      dinov2("vitb14", "ViT-B/14, 86 M parameters"),
      dinov2("vitl14", "ViT-L/14, 300 M parameters"),
      dinov2("vits14_reg", "ViT-S/14 with 4 registers"),
      dinov2("vitb14_reg", "ViT-B/14 with 4 registers"),
      dinov2("vitl14_reg", "ViT-L/14 with 4 registers"),
  };
  return entries;
}

std::string catalog_install_path(const CatalogEntry& e, const std::string& models_dir) {
  return (models_dir.empty() ? default_models_dir() : models_dir) + "/" + e.file;
}

const CatalogEntry* find_catalog_entry(const std::string& name) {
  for (const auto& e : model_catalog())
    if (e.name == name) return &e;
  return nullptr;
}

std::string catalog_names() {
  std::string names = "lite";
  for (const auto& e : model_catalog()) names += ", " + e.name;
  return names;
}

std::string fetch_catalog_model(const CatalogEntry& e, const CatalogFetch& o) {
  const std::string dest = o.dest.empty() ? catalog_install_path(e, o.models_dir) : o.dest;
  if (std::filesystem::is_regular_file(dest) && (e.sha256.empty() || sha256_matches(file_sha256(dest), e.sha256))) {
    if (o.log) o.log(e.name + " is already installed: " + dest);
    return dest;
  }
  const std::string parent = std::filesystem::path(dest).parent_path().string();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  const std::string url = o.url_override.empty() ? e.url : o.url_override;
  if (o.log) o.log("downloading " + e.name + " from " + url);
  try {
    DownloadOptions d;
    d.sha256 = e.sha256;
    d.progress = o.progress;
    const std::string got = download_file(url, dest, d);
    if (e.sha256.empty() && o.log) o.log(dest + ": sha256 " + got + " (the publisher gives no checksum to compare with)");
  } catch (const Error& err) {
    fail("could not fetch ", e.name, ": ", err.what(), "; to install it by hand, download ", e.url, " elsewhere and place it at ",
         dest, e.sha256.empty() ? "" : " (its sha256 must start with " + e.sha256 + ")", ", or point --url at a mirror of that file");
  }
  return dest;
}

ResolvedModel resolve_model_name(const std::string& model, const std::string& config) {
  const CatalogEntry* e = find_catalog_entry(model);
  if (!e || std::filesystem::exists(model)) return {model, config};  // a file of that name wins
  const std::string path = catalog_install_path(*e, "");
  if (!std::filesystem::is_regular_file(path))
    fail("model ", model, ": not installed (looked for ", path, "); run `gad models fetch ", model, "`");
  return {path, config.empty() ? e->config : config};
}

}  // namespace gad
