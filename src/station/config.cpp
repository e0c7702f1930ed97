#include "station/config.h"

#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "util/error.h"

namespace gad::station {
namespace {

using json = nlohmann::json;

// One setter per key: reads the value into the line, or fails naming `where` and the type wanted.
using Setter = std::function<void(const json&, LineOptions&, const std::string& where)>;

template <typename T>
T typed(const json& v, const std::string& where, const char* wanted) {
  const bool ok = std::is_same<T, bool>::value     ? v.is_boolean()
                  : std::is_same<T, std::string>::value ? v.is_string()
                  : std::is_integral<T>::value          ? v.is_number_integer()
                                                        : v.is_number();
  if (!ok) fail(where, ": expected ", wanted, " (got ", v.dump(), ")");
  return v.get<T>();
}

const std::map<std::string, Setter>& setters() {
  static const std::map<std::string, Setter> s = [] {
    std::map<std::string, Setter> m;
    auto text = [&](const char* key, std::string LineOptions::*field) {
      m[key] = [field](const json& v, LineOptions& o, const std::string& w) { o.*field = typed<std::string>(v, w, "a string"); };
    };
    text("name", &LineOptions::name);
    text("source", &LineOptions::source);
    text("refs", &LineOptions::refs);
    text("jsonl", &LineOptions::jsonl);
    text("csv", &LineOptions::csv);
    text("mqtt", &LineOptions::mqtt);
    text("mqtt_cafile", &LineOptions::mqtt_cafile);
    text("webhook", &LineOptions::webhook);
    text("when_full", &LineOptions::when_full);
    text("trigger", &LineOptions::trigger);
    text("when_behind", &LineOptions::when_behind);
    m["ok_dir"] = [](const json& v, LineOptions& o, const std::string& w) { o.folders.ok_dir = typed<std::string>(v, w, "a string"); };
    m["ng_dir"] = [](const json& v, LineOptions& o, const std::string& w) { o.folders.ng_dir = typed<std::string>(v, w, "a string"); };
    m["done"] = [](const json& v, LineOptions& o, const std::string& w) { o.folders.done_action = typed<std::string>(v, w, "a string"); };
    m["done_dir"] = [](const json& v, LineOptions& o, const std::string& w) { o.folders.done_dir = typed<std::string>(v, w, "a string"); };
    m["recursive"] = [](const json& v, LineOptions& o, const std::string& w) { o.recursive = typed<bool>(v, w, "true or false"); };
    m["skip_existing"] = [](const json& v, LineOptions& o, const std::string& w) { o.skip_existing = typed<bool>(v, w, "true or false"); };
    m["stdout"] = [](const json& v, LineOptions& o, const std::string& w) { o.to_stdout = typed<bool>(v, w, "true or false"); };
    m["webhook_timeout"] = [](const json& v, LineOptions& o, const std::string& w) { o.webhook_timeout_s = typed<int>(v, w, "an integer"); };
    m["batch"] = [](const json& v, LineOptions& o, const std::string& w) { o.batch = typed<int>(v, w, "an integer"); };
    m["outbox_max"] = [](const json& v, LineOptions& o, const std::string& w) { o.outbox_max = typed<int64_t>(v, w, "an integer"); };
    m["drain"] = [](const json& v, LineOptions& o, const std::string& w) { o.drain_s = typed<int>(v, w, "an integer"); };
    m["log_every"] = [](const json& v, LineOptions& o, const std::string& w) { o.log_every_s = typed<int>(v, w, "an integer"); };
    m["queue"] = [](const json& v, LineOptions& o, const std::string& w) { o.queue = typed<int>(v, w, "an integer"); };
    m["every"] = [](const json& v, LineOptions& o, const std::string& w) { o.every = typed<int>(v, w, "an integer"); };
    m["max_fps"] = [](const json& v, LineOptions& o, const std::string& w) { o.max_fps = typed<double>(v, w, "a number"); };
    m["exposure"] = [](const json& v, LineOptions& o, const std::string& w) { o.exposure_us = typed<double>(v, w, "a number"); };
    m["gain"] = [](const json& v, LineOptions& o, const std::string& w) { o.gain = typed<double>(v, w, "a number"); };
    return m;
  }();
  return s;
}

}  // namespace

StationConfig read_station_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail_as(ErrorKind::NotFound, path, ": cannot read the station config");
  json root;
  try {
    root = json::parse(in);
  } catch (const json::parse_error& e) {
    fail(path, ": not valid JSON (", e.what(), ")");
  }
  if (!root.is_object()) fail(path, ": expected a JSON object with \"lines\"");
  StationConfig c;
  for (const auto& [key, value] : root.items()) {
    if (key == "outbox") c.outbox = typed<std::string>(value, path + ": outbox", "a string");
    else if (key != "lines") fail(path, ": ", key, ": unknown key (outbox, lines)");
  }
  if (!root.contains("lines") || !root["lines"].is_array() || root["lines"].empty())
    fail(path, ": lines: expected a non-empty list of lines");
  std::set<std::string> names;
  for (size_t i = 0; i < root["lines"].size(); ++i) {
    const json& l = root["lines"][i];
    const std::string at = path + ": lines[" + std::to_string(i) + "]";
    if (!l.is_object()) fail(at, ": expected an object");
    LineOptions o;
    o.name = "line" + std::to_string(i + 1);
    for (const auto& [key, value] : l.items()) {
      auto s = setters().find(key);
      if (s == setters().end()) fail(at, ".", key, ": unknown key");
      s->second(value, o, at + "." + key);
    }
    if (o.source.empty()) fail(at, ".source: missing");
    if (o.refs.empty()) fail(at, ".refs: missing");
    if (!names.insert(o.name).second) fail(at, ".name: '", o.name, "' names two lines");
    c.lines.push_back(std::move(o));
  }
  return c;
}

}  // namespace gad::station
