// `gad models fetch` (verified downloads: the npm lite model, named release files, any URL with
// its sha256) and `gad models list`.
#include <cstdio>
#include <filesystem>

#include "cli/cli.h"
#include "engine/catalog.h"
#include "lite/fetch.h"
#include "util/error.h"

namespace gad::cli {
namespace {

struct FetchArgs {
  std::string what, dir, sha256, out, url;
};

// `gad models fetch lite | NAME | URL`: the npm lite model, a catalog entry, or any file by URL
// with its sha256 (verified, written all-or-nothing).
int run_models_fetch(const FetchArgs& a) {
  std::string path;
  const bool is_url = a.what.rfind("http://", 0) == 0 || a.what.rfind("https://", 0) == 0;
  if (a.what == "lite") {
    if (!a.sha256.empty() || !a.out.empty() || !a.url.empty()) fail("models fetch lite: takes only --dir");
    FetchOptions o;
    o.log = log_line;
    path = fetch_lite_model(a.dir.empty() ? default_models_dir() : a.dir, o);
  } else if (is_url) {
    if (a.sha256.empty()) fail("models fetch URL: give --sha256 HEX (the file's expected hash; at least 8 hex digits)");
    if (!a.url.empty()) fail("models fetch URL: --url is for named models (a mirror); the URL is the argument");
    const std::string base = std::filesystem::path(a.what.substr(0, a.what.find_first_of("?#"))).filename().string();
    if (a.out.empty() && base.empty()) fail("models fetch ", a.what, ": no file name in the URL; give -o FILE");
    CatalogEntry e{a.what, a.what, a.sha256, base, "", ""};
    CatalogFetch o{a.out, a.dir, "", true, log_line};
    path = fetch_catalog_model(e, o);
  } else if (const CatalogEntry* e = find_catalog_entry(a.what)) {
    if (!a.sha256.empty()) fail("models fetch ", a.what, ": --sha256 is pinned for named models (", e->sha256, ")");
    path = fetch_catalog_model(*e, {a.out, a.dir, a.url, true, log_line});
  } else {
    fail("models fetch: unknown model '", a.what, "' (available: ", catalog_names(), ", or a URL with --sha256)");
  }
  std::printf("%s\n", path.c_str());
  return 0;
}

int run_models_list(const std::string& dir_arg) {
  const std::string dir = dir_arg.empty() ? default_models_dir() : dir_arg;
  auto models = installed_models(dir);
  for (const auto& e : model_catalog()) {
    const std::string path = catalog_install_path(e, dir);
    if (std::filesystem::is_regular_file(path))
      models.push_back({path, e.name + ": " + e.description, std::filesystem::file_size(path), false, false});
  }
  if (models.empty()) log_line("no models in " + dir + " (run `gad models fetch lite`)");
  for (const auto& m : models)
    std::printf("%s  %s  %.1f MB  %s%s\n", m.path.c_str(), m.lite ? "lite" : "other", static_cast<double>(m.bytes) / 1e6,
                m.description.c_str(), m.has_license ? " (LICENSE alongside)" : "");
  return 0;
}

}  // namespace

void add_models_command(CLI::App& app, Context& ctx) {
  auto* models = app.add_subcommand("models", "install and list backbone models");
  models->require_subcommand(1);
  auto a = std::make_shared<FetchArgs>();
  auto* fetch = models->add_subcommand("fetch", "download a model: lite (nsfwjs MobileNetV2 via npm, MIT), a named release\n"
                                                "file (hash pinned), or any URL with --sha256; verified, all-or-nothing");
  fetch->add_option("model", a->what, "lite, " + catalog_names().substr(6) + ", or an http(s) URL")->required();
  fetch->add_option("--dir", a->dir, "models directory (default: $GAD_MODELS_DIR or ~/.cache/gad/models)");
  fetch->add_option("--sha256", a->sha256, "with a URL: the expected sha256 (64 hex digits, or a prefix of at least 8)");
  fetch->add_option("-o,--output", a->out, "file to write (default: <models dir>/<release file name>)");
  fetch->add_option("--url", a->url, "with a named model: download the same file from this mirror instead");
  fetch->callback([a, &ctx] { ctx.run = [a] { return run_models_fetch(*a); }; });
  auto dir = std::make_shared<std::string>();
  auto* list = models->add_subcommand("list", "list the installed models");
  list->add_option("--dir", *dir, "models directory (default: $GAD_MODELS_DIR or ~/.cache/gad/models)");
  list->callback([dir, &ctx] { ctx.run = [dir] { return run_models_list(*dir); }; });
}

}  // namespace gad::cli
