// `gad data convert KIND SRC DST`: public anomaly-detection datasets → MVTec layout (spec §3.6).
//
// Output, per category:  DST/<category>/train/good/*, DST/<category>/test/good/*,
//                        DST/<category>/test/<defect>/*  (+ DST/<category>/ground_truth/<defect>/*_mask.png
//                        where the source has masks: visa)
//
// Splits. The reference (InCTRL datasets/preprocess) splits normals with sklearn
// train_test_split(test_size=0.25, random_state=42) over os.listdir order, which depends on the
// filesystem. gad intentionally differs, for portability: the normal items are sorted by their
// source-relative path (byte order), and n_test = ceil(test_fraction * n) of them (sklearn's
// rounding) are drawn for test/good with the same partial Fisher–Yates draw as `--k`
// (std::mt19937_64(seed), j = i + rng() % (n − i)); the rest go to train/good. The same seed gives
// the same split on every machine, whatever order the files were created or listed in.
//
// Files are hard-linked into place when possible (same filesystem; the output then shares the
// source's bytes, so edit neither in place), else copied; only formats that must be written
// (IDX → PNG, tiles/bands → PNG, binarised masks) are encoded. Everything is written into a hidden
// temporary directory inside DST and renamed into DST/<category> at the end, so an error never
// leaves half-written output. An existing DST/<category> is an error (nothing is overwritten).
//
// Kinds (see convert_usage()): elpv, headct, brainmri, visa, aitex, sdd, mnist, fashion-mnist,
// cifar10, folder, synthetic, mosaic. A malformed source throws gad::Error naming the file (and line), e.g.
// "SRC/labels.csv:17: bad defect probability 'x'".
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace gad {

struct ConvertOptions {
  uint64_t seed = 42;           // seed of the normal train/test draw (and of --limit draws)
  double test_fraction = 0.25;  // share of the normals that goes to test/good (rounded up)
  // mnist / fashion-mnist: "one-vs-all" (needs normal_class) or "multiclass" (even classes normal).
  // cifar10: "one-vs-all" (needs normal_class) or "animal-vs-vehicle" (category `animal`).
  std::string protocol;
  std::string normal_class;  // mnist: 0-9; cifar10: class name (cat) or index 0-9
  size_t synthetic_count = 100;  // synthetic: anomalies per kind and category; mosaic: images per folder
  int mosaic_tiles = 3;          // mosaic: tiles per side
  size_t limit = 0;          // mnist/fashion-mnist/cifar10: keep at most N per output folder (seeded draw); 0 = all
  // folder: the normal and anomalous directories (relative to SRC unless absolute), the category
  // (default: SRC's directory name) and the defect folder name. With several anomalous
  // directories each becomes test/<its own name>; `defect_name` applies to a single one.
  std::string normal_dir = "good", category, defect_name;
  std::vector<std::string> anomalous_dirs = {"defect"};
  std::function<void(const std::string&)> log;  // progress lines (may be empty)
};

struct CategoryCounts {
  std::string category;
  std::string path;  // DST/<category>
  size_t train_good = 0, test_good = 0;
  std::map<std::string, size_t> test_defects;  // defect folder → count
  size_t dropped = 0;                          // source items skipped on purpose (elpv 1/3, 2/3)
  std::string summary() const;                 // "elpv: train/good 75, test/good 25, test/mono 50, ..."
};

// Converts SRC into DST (created if missing). Returns the counts per category, sorted by name.
std::vector<CategoryCounts> convert_dataset(const std::string& kind, const std::string& src, const std::string& dst,
                                            const ConvertOptions& options = {});

// The kinds and what each expects in SRC (for --help).
std::string convert_usage();
std::vector<std::string> convert_kinds();

// The split used by every converter: indices (into `sorted_keys`) that go to test/good, in
// ascending order. `sorted_keys` must already be sorted; n_test = ceil(fraction * n).
std::vector<size_t> split_test_indices(size_t n, double fraction, uint64_t seed);
// Seeded choice of k of n (partial Fisher–Yates as above), returned sorted ascending; k >= n keeps all.
std::vector<size_t> draw_indices(size_t n, size_t k, uint64_t seed);

// IDX (MNIST) files, plain or gzip-compressed.
struct IdxImages {
  size_t count = 0;
  int rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols
};
IdxImages read_idx_images(const std::string& path);
std::vector<uint8_t> read_idx_labels(const std::string& path);

}  // namespace gad
