// Reading datasets in the MVTec layout: <root>/<category>/train/good, test/good, test/<defect>/.
// A root is either one category (it has train/good and test/) or a folder of categories. Every
// list is sorted so each machine sees the same order.
#pragma once

#include <string>
#include <vector>

namespace gad {

struct DatasetCategory {
  std::string dataset, name;       // root folder name, category folder name
  std::string dir;                 // <root>/<category>
  std::vector<std::string> train;  // sorted train/good
  std::vector<std::string> test;   // sorted test/**
  std::vector<int> labels;         // per test image: 0 = test/good, 1 = any other test/ folder
  // Per test image ground_truth/<defect>/<stem>_mask.png ("" for normals), only when every defect
  // image has one; otherwise empty, and `masks_note` says which mask is missing.
  std::vector<std::string> masks;
  std::string masks_note;
};

// Categories of every root, in root order then sorted by name. Errors name the root: missing
// directory, no category, a test/ without both good and defect images.
std::vector<DatasetCategory> discover_categories(const std::vector<std::string>& roots);

}  // namespace gad
