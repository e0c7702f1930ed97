// Batch jobs at scale: `gad score --shard I/N` scores one deterministic slice of the input, so a
// large archive runs as N independent jobs (Kubernetes indexed Jobs, Slurm arrays), and
// `gad score --merge` joins the per-shard CSV files into the CSV one run writes.
//
// The split: every input path (arguments, directories walked, --list entries) is sorted and
// de-duplicated, then cut into N contiguous slices whose sizes differ by at most one; shard I
// takes slice I (0-based, as JOB_COMPLETION_INDEX counts). The merge: one header (every file
// must have the same), rows sorted by path — the order one run over a directory writes — and a
// path found in two files is an error (overlapping shards).
#pragma once

#include <string>
#include <vector>

namespace gad {

struct Shard {
  int index = 0, count = 1;
};

// "I/N" with 0 <= I < N; throws gad::Error naming --shard.
Shard parse_shard(const std::string& text);

// Slice `shard` of `paths` (sorted and de-duplicated first). An empty slice is an error saying
// how many images there are.
std::vector<std::string> shard_paths(std::vector<std::string> paths, const Shard& shard);

// `--list FILE`: one path per line; blank lines and lines starting with '#' are skipped.
std::vector<std::string> read_path_list(const std::string& file);

// The images `gad score` scores: `args` and the --list entries, expanded as expand_image_args
// does, then the --shard slice (when `shard` is not empty).
std::vector<std::string> score_inputs(const std::vector<std::string>& args, const std::string& list_file,
                                      const std::string& shard, size_t* not_images = nullptr);

// The CSV text of the shard files `files` merged (see above). Throws gad::Error naming the file.
std::string merge_score_csvs(const std::vector<std::string>& files);

}  // namespace gad
