#include "util/shard.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "util/csv.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/image_list.h"

namespace gad {

Shard parse_shard(const std::string& text) {
  Shard s;
  char slash = 0, extra = 0;
  std::istringstream in(text);
  if (!(in >> s.index >> slash >> s.count) || slash != '/' || (in >> extra))
    fail("--shard: expected I/N, e.g. 0/4 (got '", text, "')");
  if (s.count < 1 || s.index < 0 || s.index >= s.count)
    fail("--shard: I/N needs N >= 1 and 0 <= I < N (got '", text, "'; shards count from 0)");
  return s;
}

std::vector<std::string> shard_paths(std::vector<std::string> paths, const Shard& shard) {
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
  const size_t n = paths.size(), parts = static_cast<size_t>(shard.count), i = static_cast<size_t>(shard.index);
  const size_t begin = i * n / parts, end = (i + 1) * n / parts;
  if (begin == end)
    fail("--shard ", shard.index, "/", shard.count, ": this shard is empty (", n, " images for ", shard.count,
         " shards; use at most ", n, ")");
  return std::vector<std::string>(paths.begin() + static_cast<long>(begin), paths.begin() + static_cast<long>(end));
}

std::vector<std::string> read_path_list(const std::string& file) {
  std::istringstream in(read_file_text(file));
  std::vector<std::string> paths;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    paths.push_back(line);
  }
  if (paths.empty()) fail(file, ": --list names no images");
  return paths;
}

std::vector<std::string> score_inputs(const std::vector<std::string>& args, const std::string& list_file,
                                      const std::string& shard, size_t* not_images) {
  std::vector<std::string> all = args;
  if (!list_file.empty()) {
    auto listed = read_path_list(list_file);
    all.insert(all.end(), listed.begin(), listed.end());
  }
  if (all.empty()) fail("score: give query images, directories or --list FILE");
  auto paths = expand_image_args(all, "queries", not_images);
  return shard.empty() ? paths : shard_paths(std::move(paths), parse_shard(shard));
}

std::string merge_score_csvs(const std::vector<std::string>& files) {
  if (files.empty()) fail("--merge: give the shard CSV files");
  std::vector<std::string> header;
  std::map<std::string, std::pair<std::vector<std::string>, std::string>> rows;  // path -> (fields, file)
  for (const auto& file : files) {
    auto records = read_csv_file(file);
    if (header.empty()) header = records[0].fields;
    if (records[0].fields != header || header.empty() || header[0] != "path")
      fail(file, ": not a shard of the same run (its header differs from ", files[0], "'s, or has no path column)");
    for (size_t i = 1; i < records.size(); ++i) {
      const auto& fields = records[i].fields;
      auto [at, fresh] = rows.emplace(fields[0], std::make_pair(fields, file));
      if (!fresh)
        fail(file, ":", records[i].line, ": ", fields[0], " is also in ", at->second.second, " (overlapping shards)");
    }
  }
  CsvTable table(header);
  for (const auto& [path, row] : rows) table.add_row(row.first);
  return table.text();
}

}  // namespace gad
