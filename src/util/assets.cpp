#include "util/assets.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>

#include "util/error.h"

#ifndef GAD_LIB_TO_ASSETS
#error "GAD_LIB_TO_ASSETS (the asset directory relative to the library's) must be defined by the build"
#endif

namespace gad {

std::string asset_dir() {
  if (const char* env = std::getenv("GAD_ASSET_DIR"); env && *env) return env;
  Dl_info info{};
  // Any function of this library locates the shared object it was loaded from.
  if (!dladdr(reinterpret_cast<void*>(&asset_dir), &info) || !info.dli_fname)
    fail_as(ErrorKind::NotFound, "gad assets: cannot locate the gad library (set GAD_ASSET_DIR)");
  std::error_code ec;
  auto lib = std::filesystem::canonical(info.dli_fname, ec);
  if (ec) lib = info.dli_fname;
  return (lib.parent_path() / GAD_LIB_TO_ASSETS).lexically_normal().string();
}

std::string asset_path(const std::string& relative) { return asset_dir() + "/" + relative; }

}  // namespace gad
