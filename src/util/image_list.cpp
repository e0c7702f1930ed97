#include "util/image_list.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <random>

#include "util/error.h"

namespace fs = std::filesystem;

namespace gad {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  static const char* kExts[] = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

std::vector<std::string> expand_image_args(const std::vector<std::string>& args, const std::string& what,
                                           size_t* not_images) {
  std::vector<std::string> out;
  for (const auto& arg : args) {
    std::error_code ec;
    if (fs::is_directory(arg, ec)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(arg, ec); !ec && it != fs::recursive_directory_iterator();
           it.increment(ec)) {
        if (is_hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (!it->is_regular_file()) continue;
        if (is_image_file(it->path())) found.push_back(it->path().string());
        else if (not_images) ++*not_images;
      }
      if (ec) fail_as(ErrorKind::Io, arg, ": cannot list directory (", ec.message(), ")");
      if (found.empty()) fail(arg, ": no image files in this directory");
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else if (fs::exists(arg, ec)) {
      out.push_back(arg);
    } else {
      fail_as(ErrorKind::NotFound, arg, ": no such file or directory");
    }
  }
  if (out.empty()) fail(what, ": no images given");
  return out;
}

uint64_t name_seed(uint64_t seed, const std::string& text) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (char ch : text) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ull;
  return h;
}

std::vector<size_t> draw_indices(size_t n, size_t k, std::mt19937_64& rng) {
  std::vector<size_t> pool(n);
  for (size_t i = 0; i < n; ++i) pool[i] = i;
  for (size_t i = 0; i < k; ++i) std::swap(pool[i], pool[i + static_cast<size_t>(rng() % (n - i))]);
  pool.resize(k);
  return pool;
}

std::vector<std::string> draw_references(const std::vector<std::string>& paths, int k, uint64_t seed) {
  if (k < 1) fail("k: must be at least 1 (got ", k, ")");
  if (static_cast<size_t>(k) > paths.size())
    fail("k = ", k, ": only ", paths.size(), " reference image(s) available");
  std::mt19937_64 rng(seed);
  std::vector<std::string> out;
  for (size_t i : draw_indices(paths.size(), static_cast<size_t>(k), rng)) out.push_back(paths[i]);
  return out;
}

std::vector<std::string> list_images(const std::vector<std::string>& files_or_dirs) {
  return expand_image_args(files_or_dirs, "images");
}

}  // namespace gad
