// `gad watch --station FILE`: several lines in one process, from a JSON file (docs/station.md):
//   {"outbox": "PATH", "lines": [{"name": "a", "source": "DIR", "refs": "SET.gadref", "jsonl": ...}, ...]}
// Each line takes the keys of the command line's options (snake_case: ok_dir, max_fps, ...).
// An unknown key, a value of the wrong type, or a repeated line name is refused, naming the key's
// path (lines[1].jsnol).
#pragma once

#include <string>
#include <vector>

#include "station/line.h"

namespace gad::station {

struct StationConfig {
  std::string outbox;  // "" = the default place
  std::vector<LineOptions> lines;
};

StationConfig read_station_config(const std::string& path);

}  // namespace gad::station
