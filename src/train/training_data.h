// Auxiliary training data for `gad train` (spec §3.1): which images are normal or anomalous, per
// category, and the held-out validation split.
//
// Sources, several at once:
//   - MVTec-layout roots: normals = train/good + test/good, anomalies = every test/<defect>;
//   - the reference's JSON lists (`[{"image_path", "target", "type"}, ...]`), merged by `type`;
//     relative image paths are resolved against the JSON file's folder.
// Categories are sorted by key and samples by path, so runs are portable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gad {

struct TrainingSample {
  std::string path;
  int label = 0;     // 0 normal, 1 anomalous
  int category = 0;  // index into TrainingData::categories
};

struct TrainingCategory {
  std::string key;         // "<dataset>/<folder>" for folders, the JSON `type` for lists
  std::string class_name;  // the text prompt's class (folder name or `type`, '_' → ' ')
};

struct TrainingData {
  std::vector<TrainingCategory> categories;
  std::vector<TrainingSample> samples;  // grouped by category, sorted by path within it
};

TrainingData read_training_data(const std::vector<std::string>& sources);

// Per category and label, round(fraction · n) samples go to validation, drawn with the portable
// seeded draw; the rest train. Every category keeps at least `min_train_normals` training normals
// (enough for K prompts) or the call fails naming it.
struct TrainValSplit {
  std::vector<int> train, val;  // sample indices, ascending
};
TrainValSplit split_validation(const TrainingData& data, double fraction, uint64_t seed, int min_train_normals);

}  // namespace gad
