#include "data/mvtec_layout.h"

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "util/error.h"
#include "util/image_list.h"

namespace fs = std::filesystem;

namespace gad {
namespace {

bool has_train_good(const fs::path& p) { return fs::is_directory(p / "train" / "good") && fs::is_directory(p / "test"); }

DatasetCategory read_category(const std::string& dataset, const fs::path& dir) {
  DatasetCategory c{dataset, dir.filename().string(), dir.string(), {}, {}, {}, {}, {}};
  c.train = expand_image_args({(dir / "train" / "good").string()}, "train/good");
  for (const auto& path : expand_image_args({(dir / "test").string()}, "test")) {
    c.test.push_back(path);
    std::string rel = fs::relative(path, dir / "test").string();
    c.labels.push_back(rel.rfind("good/", 0) == 0 ? 0 : 1);
  }
  int anomalous = std::accumulate(c.labels.begin(), c.labels.end(), 0);
  if (anomalous == 0 || anomalous == static_cast<int>(c.labels.size()))
    fail(dir.string(), "/test: needs both test/good and at least one defect folder");
  if (!fs::is_directory(dir / "ground_truth")) return c;
  std::vector<std::string> masks;
  for (size_t i = 0; i < c.test.size(); ++i) {
    if (!c.labels[i]) {
      masks.emplace_back();
      continue;
    }
    fs::path rel = fs::relative(c.test[i], dir / "test");
    fs::path mask = dir / "ground_truth" / rel.parent_path() / (rel.stem().string() + "_mask.png");
    if (!fs::exists(mask)) {
      c.masks_note = dir.string() + ": no ground-truth mask for " + rel.string();
      return c;
    }
    masks.push_back(mask.string());
  }
  c.masks = std::move(masks);
  return c;
}

}  // namespace

std::vector<DatasetCategory> discover_categories(const std::vector<std::string>& roots) {
  std::vector<DatasetCategory> out;
  for (const auto& root : roots) {
    fs::path p = fs::path(root).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    if (!fs::is_directory(p)) fail(root, ": no such dataset directory");
    if (has_train_good(p)) {
      out.push_back(read_category(p.parent_path().filename().string(), p));
      continue;
    }
    std::vector<fs::path> dirs;
    for (const auto& e : fs::directory_iterator(p))
      if (e.is_directory() && has_train_good(e.path())) dirs.push_back(e.path());
    if (dirs.empty()) fail(root, ": no category with train/good and test/ (MVTec layout expected)");
    std::sort(dirs.begin(), dirs.end());
    for (const auto& d : dirs) out.push_back(read_category(p.filename().string(), d));
  }
  return out;
}

}  // namespace gad
