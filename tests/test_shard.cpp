// `gad score --shard I/N` and `--merge`: the split covers every image exactly once whatever the
// argument order, and the merged shard CSVs hold the rows of one run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "support.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/shard.h"

namespace gad {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> names(int n) {
  std::vector<std::string> v;
  for (int i = 0; i < n; ++i) v.push_back("img" + std::to_string(1000 + i) + ".png");
  return v;
}

TEST(Shard, ParsesIOverNAndRefusesTheRest) {
  EXPECT_EQ(parse_shard("2/5").index, 2);
  EXPECT_EQ(parse_shard("2/5").count, 5);
  EXPECT_EQ(parse_shard("0/1").count, 1);
  for (const char* bad : {"5/5", "-1/3", "1/0", "1", "1/3x", "a/b", "", "1//3"})
    EXPECT_NE(test::error_of([&] { parse_shard(bad); }).find("--shard"), std::string::npos) << bad;
}

TEST(Shard, SlicesCoverEveryPathOnceInAnyInputOrder) {
  for (int n : {1, 7, 10, 11, 100})
    for (int parts : {1, 3, 4, 7}) {
      if (parts > n) continue;
      auto paths = names(n);
      std::vector<std::string> reversed(paths.rbegin(), paths.rend());
      reversed.push_back(paths[0]);  // a duplicate argument is scored once
      std::vector<std::string> joined;
      size_t smallest = n, largest = 0;
      for (int i = 0; i < parts; ++i) {
        auto slice = shard_paths(reversed, {i, parts});
        EXPECT_EQ(slice, shard_paths(paths, {i, parts}));
        smallest = std::min(smallest, slice.size());
        largest = std::max(largest, slice.size());
        joined.insert(joined.end(), slice.begin(), slice.end());
      }
      EXPECT_EQ(joined, paths) << n << " paths in " << parts;
      EXPECT_LE(largest - smallest, 1u);
    }
  EXPECT_NE(test::error_of([] { shard_paths(names(2), {0, 3}); }).find("this shard is empty (2 images for 3 shards"),
            std::string::npos);
}

TEST(Shard, MergeRefusesOverlapsAndOtherRuns) {
  const std::string dir = test::temp_dir("shard-merge");
  std::ofstream(dir + "/a.csv") << "path,score,ms\nx.png,0.5,1\n";
  std::ofstream(dir + "/b.csv") << "path,score,ms\nw.png,0.25,2\n";
  std::ofstream(dir + "/c.csv") << "path,score,anomalous,ms\ny.png,0.5,1,1\n";
  EXPECT_EQ(merge_score_csvs({dir + "/a.csv", dir + "/b.csv"}), "path,score,ms\nw.png,0.25,2\nx.png,0.5,1\n");
  EXPECT_NE(test::error_of([&] { merge_score_csvs({dir + "/a.csv", dir + "/a.csv"}); }).find("overlapping shards"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { merge_score_csvs({dir + "/a.csv", dir + "/c.csv"}); }).find("not a shard of the same run"),
            std::string::npos);
}

// The rows of a score CSV without the timing column (`ms` differs between any two runs).
std::vector<std::vector<std::string>> rows_without_ms(const std::string& path) {
  auto records = read_csv_file(path);
  const auto& header = records[0].fields;
  const size_t ms = static_cast<size_t>(std::find(header.begin(), header.end(), "ms") - header.begin());
  EXPECT_LT(ms, header.size());
  std::vector<std::vector<std::string>> rows;
  for (auto& r : records) {
    if (ms < r.fields.size()) r.fields.erase(r.fields.begin() + static_cast<long>(ms));
    rows.push_back(r.fields);
  }
  return rows;
}

TEST(Shard, ThreeShardsMergedEqualOneRun) {
  const std::string dir = test::temp_dir("shard-cli");
  // --batch 1: every image is its own forward pass in one run and in the shards alike, so the
  // numbers are bit-identical (batched, a float sum over another batch composition can differ in
  // the 8th digit).
  const std::string model = "--model " + test::shared("fixtures/lite/mobilenet_v2/model.json") + " --precision fp32";
  const std::string refs = dir + "/r.gadref";
  ASSERT_EQ(test::run_cli("refs build " + model +
                          " --class tile examples/tiles/train/good/000.png examples/tiles/train/good/001.png -o " + refs)
                .status,
            0);
  auto one = test::run_cli("score " + model + " --refs " + refs + " examples/tiles/test --batch 1 --csv " + dir + "/one.csv");
  ASSERT_EQ(one.status, 0) << one.err;
  // The same images, split between the arguments and a --list file, in another order.
  std::ofstream(dir + "/list.txt") << "# the defects\nexamples/tiles/test/defect\n";
  std::vector<std::string> shards;
  std::string jsonl;
  for (int i = 0; i < 3; ++i) {
    shards.push_back(dir + "/shard" + std::to_string(i) + ".csv");
    auto r = test::run_cli("score " + model + " --refs " + refs + " examples/tiles/test/good --list " + dir +
                           "/list.txt --batch 1 --shard " + std::to_string(i) + "/3 --csv " + shards.back());
    ASSERT_EQ(r.status, 0) << r.err;
    jsonl += r.out;
  }
  auto merged = test::run_cli("score --merge " + shards[2] + " " + shards[0] + " " + shards[1] + " --csv " + dir +
                              "/merged.csv");
  ASSERT_EQ(merged.status, 0) << merged.err;
  const auto expected = rows_without_ms(dir + "/one.csv");
  EXPECT_EQ(expected.size(), 13u);  // header + 12 images
  EXPECT_EQ(rows_without_ms(dir + "/merged.csv"), expected);
  EXPECT_EQ(std::count(jsonl.begin(), jsonl.end(), '\n'), std::count(one.out.begin(), one.out.end(), '\n'));
  auto empty = test::run_cli("score " + model + " --refs " + refs + " examples/tiles/test/good --shard 0/20");
  EXPECT_EQ(empty.status, 1);
  EXPECT_NE(empty.err.find("this shard is empty"), std::string::npos) << empty.err;
}

}  // namespace
}  // namespace gad
