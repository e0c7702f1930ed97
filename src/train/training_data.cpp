#include "train/training_data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "data/mvtec_layout.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/image_list.h"

namespace fs = std::filesystem;

namespace gad {
namespace {

std::string class_name_of(std::string name) {
  std::replace(name.begin(), name.end(), '_', ' ');
  return name;
}

struct Pool {
  std::string class_name;
  std::vector<std::pair<std::string, int>> items;  // path, label
};

void read_json_list(const std::string& path, std::map<std::string, Pool>& pools) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file_text(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!j.is_array()) fail(path, ": expected a JSON list of {image_path, target, type}");
  const fs::path base = fs::path(path).parent_path();
  for (size_t i = 0; i < j.size(); ++i) {
    const auto& e = j[i];
    if (!e.is_object() || !e.contains("image_path") || !e.contains("target") || !e.contains("type") ||
        !e["image_path"].is_string() || !e["target"].is_number_integer() || !e["type"].is_string())
      fail(path, ": entry ", i, " needs image_path (string), target (0/1) and type (string)");
    const int target = e["target"].get<int>();
    if (target != 0 && target != 1) fail(path, ": entry ", i, ": target must be 0 or 1, got ", target);
    fs::path image = e["image_path"].get<std::string>();
    if (image.is_relative() && !fs::exists(image)) image = base / image;
    if (!fs::exists(image)) fail(path, ": entry ", i, ": image not found: ", image.string());
    const std::string type = e["type"].get<std::string>();
    Pool& pool = pools[type];
    pool.class_name = class_name_of(type);
    pool.items.emplace_back(image.lexically_normal().string(), target);
  }
}

}  // namespace

TrainingData read_training_data(const std::vector<std::string>& sources) {
  if (sources.empty()) fail("train: no data given (--data ROOT_OR_JSON ...)");
  std::map<std::string, Pool> pools;
  std::vector<std::string> roots;
  for (const auto& s : sources) {
    if (fs::path(s).extension() == ".json") {
      if (!fs::is_regular_file(s)) fail(s, ": no such JSON file");
      read_json_list(s, pools);
    } else {
      roots.push_back(s);
    }
  }
  if (!roots.empty())
    for (const auto& c : discover_categories(roots)) {
      Pool& pool = pools[c.dataset + "/" + c.name];
      pool.class_name = class_name_of(c.name);
      for (const auto& p : c.train) pool.items.emplace_back(p, 0);
      for (size_t i = 0; i < c.test.size(); ++i) pool.items.emplace_back(c.test[i], c.labels[i]);
    }
  TrainingData data;
  for (auto& [key, pool] : pools) {
    std::sort(pool.items.begin(), pool.items.end());
    pool.items.erase(std::unique(pool.items.begin(), pool.items.end()), pool.items.end());
    const int index = static_cast<int>(data.categories.size());
    data.categories.push_back({key, pool.class_name});
    for (const auto& [path, label] : pool.items) data.samples.push_back({path, label, index});
  }
  return data;
}

TrainValSplit split_validation(const TrainingData& data, double fraction, uint64_t seed, int min_train_normals) {
  if (fraction < 0 || fraction >= 1) fail("--val-fraction: must be in [0, 1), got ", fraction);
  std::vector<bool> is_val(data.samples.size(), false);
  for (size_t c = 0; c < data.categories.size(); ++c)
    for (int label : {0, 1}) {
      std::vector<int> members;
      for (size_t i = 0; i < data.samples.size(); ++i)
        if (data.samples[i].category == static_cast<int>(c) && data.samples[i].label == label)
          members.push_back(static_cast<int>(i));
      const auto n_val = static_cast<size_t>(std::lround(fraction * members.size()));
      if (label == 0 && static_cast<int>(members.size() - n_val) < min_train_normals)
        fail("train: category '", data.categories[c].key, "' has ", members.size() - n_val,
             " training normal(s), needs at least ", min_train_normals, " (K prompts per query)");
      std::mt19937_64 rng(seed ^ (0x9E3779B97F4A7C15ull * (2 * c + label + 1)));
      for (size_t i : draw_indices(members.size(), n_val, rng)) is_val[members[i]] = true;
    }
  TrainValSplit split;
  for (size_t i = 0; i < data.samples.size(); ++i) (is_val[i] ? split.val : split.train).push_back(static_cast<int>(i));
  return split;
}

}  // namespace gad
