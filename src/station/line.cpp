#include "station/line.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "engine/score_json.h"
#include "station/hot_folder.h"
#include "util/error.h"

namespace gad::station {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::vector<std::unique_ptr<Sink>> make_sinks(const LineOptions& o) {
  std::vector<std::unique_ptr<Sink>> sinks;
  if (!o.jsonl.empty()) sinks.push_back(jsonl_sink(o.jsonl));
  if (o.to_stdout) sinks.push_back(stdout_sink());
  if (!o.mqtt.empty()) sinks.push_back(mqtt_sink({o.mqtt, o.mqtt_cafile, o.name}));
  if (!o.webhook.empty()) sinks.push_back(webhook_sink(o.webhook, o.webhook_timeout_s));
  if (!o.folders.ok_dir.empty() || !o.folders.ng_dir.empty()) sinks.push_back(folder_sink(o.folders));
  return sinks;
}

// Moves one sink's results out of the outbox on its own thread, backing off while it fails and
// saying so once per change of state.
class Delivery {
 public:
  Delivery(const std::string& line, Sink& sink, Outbox& outbox, const Log& log)
      : line_(line), sink_(sink), outbox_(outbox), log_(log), thread_([this] { loop(); }) {}
  ~Delivery() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      finished_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  void notify() { wake_.notify_all(); }

 private:
  void loop() {
    auto backoff = std::chrono::milliseconds(250);
    bool failing = false;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (finished_) return;
      }
      std::vector<OutboxItem> items;
      size_t acked = 0;
      try {
        items = outbox_.pending(line_, sink_.name(), 64);
        if (!items.empty()) acked = sink_.deliver(items);
        for (size_t i = 0; i < acked; ++i) outbox_.ack(line_, sink_.name(), items[i].seq);
        if (failing && acked > 0) {
          log_("line " + line_ + ": " + sink_.where() + ": delivering again");
          failing = false;
        }
      } catch (const std::exception& e) {
        if (!failing) log_("line " + line_ + ": " + e.what() + " — results kept in the outbox, retrying");
        failing = true;
      }
      const bool idle = items.empty() || (acked == 0);
      if (!idle) {
        backoff = std::chrono::milliseconds(250);
        continue;
      }
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait_for(lock, failing || !items.empty() ? backoff : std::chrono::milliseconds(500), [&] { return finished_; });
      if (failing || !items.empty()) backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    }
  }
  std::string line_;
  Sink& sink_;
  Outbox& outbox_;
  const Log& log_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool finished_ = false;
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace

void check_line_options(const LineOptions& o) {
  if (o.name.empty() || o.name.find_first_of("/#+ ") != std::string::npos)
    fail("--line '", o.name, "': a name without spaces, '/', '#' or '+'");
  if (o.batch < 1 || o.batch > 256) fail("--batch: must be within 1..256 (got ", o.batch, ")");
  if (o.outbox_max < 1) fail("--outbox-max: must be at least 1 (got ", o.outbox_max, ")");
  if (o.when_full != "pause" && o.when_full != "drop-oldest")
    fail("--when-full '", o.when_full, "': pause or drop-oldest");
  if (o.folders.done_action != "keep" && o.folders.done_action != "move" && o.folders.done_action != "delete")
    fail("--done '", o.folders.done_action, "': keep, move or delete");
  if ((o.folders.done_action == "move") != !o.folders.done_dir.empty())
    fail("--done-dir: give it exactly when --done move");
  if (o.folders.ok_dir.empty() != o.folders.ng_dir.empty()) fail("--ok-dir and --ng-dir: give both or neither");
  if (o.drain_s < 0) fail("--drain: must be at least 0 seconds");
}

int64_t run_line(const LineOptions& o, Detector& detector, Outbox& outbox, const std::atomic<bool>& stop,
                 std::atomic<bool>& reload, const Log& log) {
  References refs = detector.load_references(o.refs);
  const bool filing = !o.folders.ok_dir.empty();
  if (filing && !refs.threshold())
    fail("--ok-dir/--ng-dir: ", o.refs, " has no threshold, so no image could be filed as OK (gad refs calibrate)");
  std::set<std::string> outputs;
  for (const auto& d : {o.folders.ok_dir, o.folders.ng_dir, o.folders.done_dir})
    if (!d.empty()) outputs.insert(d);
  HotFolder folder(o.folder, o.recursive, outputs);
  auto sinks = make_sinks(o);
  std::vector<std::string> sink_names;
  for (const auto& s : sinks) sink_names.push_back(s->name());
  const bool first_start = outbox.open_line(o.name);

  std::deque<std::string> queue;
  auto stamp_of = [](const std::string& path) -> std::optional<FileStamp> {
    long long size = 0, mtime = 0;
    if (!stat_file(path, &size, &mtime)) return std::nullopt;
    return FileStamp{path, size, mtime};
  };
  for (const auto& path : folder.existing()) {
    if (first_start && o.skip_existing) {
      if (auto s = stamp_of(path)) outbox.mark_done(o.name, *s);
    } else {
      queue.push_back(path);
    }
  }
  std::vector<std::unique_ptr<Delivery>> deliveries;
  for (auto& s : sinks) {
    log("line " + o.name + ": results to " + s->where());
    deliveries.push_back(std::make_unique<Delivery>(o.name, *s, outbox, log));
  }
  log("line " + o.name + ": watching " + o.folder + " with " + refs.summary() + "; outbox " + outbox.path());

  int64_t failed = 0, dropped = 0;
  bool paused = false;
  ScoreOptions so;
  so.batch = o.batch;
  while (!stop) {
    if (reload.exchange(false)) {
      try {
        refs = detector.load_references(o.refs);
        log("line " + o.name + ": reloaded " + refs.summary());
      } catch (const std::exception& e) {
        log("line " + o.name + ": reload failed, keeping the set in use: " + e.what());
      }
    }
    for (auto& path : folder.wait(std::chrono::milliseconds(queue.empty() ? 200 : 0))) queue.push_back(path);
    const int64_t backlog = outbox.backlog(o.name);
    if (backlog >= o.outbox_max) {
      if (o.when_full == "drop-oldest") {
        const int64_t n = outbox.drop_oldest(o.name, o.outbox_max - 1);
        dropped += n;
        log("line " + o.name + ": outbox full: dropped the " + std::to_string(n) + " oldest undelivered results (" +
            std::to_string(dropped) + " in all)");
      } else {
        if (!paused) log("line " + o.name + ": outbox full (" + std::to_string(backlog) + " undelivered): paused");
        paused = true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        continue;
      }
    } else if (paused) {
      log("line " + o.name + ": outbox below its bound: taking images again");
      paused = false;
    }
    // The next batch: files not yet done (a file written again under its name is new).
    std::vector<std::string> paths;
    std::vector<FileStamp> stamps;
    std::set<std::string> in_batch;
    while (!queue.empty() && static_cast<int>(paths.size()) < o.batch) {
      const std::string path = queue.front();
      queue.pop_front();
      auto s = stamp_of(path);
      if (!s || in_batch.count(path) || outbox.is_done(o.name, *s)) continue;
      in_batch.insert(path);
      paths.push_back(path);
      stamps.push_back(*s);
    }
    if (paths.empty()) continue;
    // Stop only between batches: images taken are finished and stored.
    const std::vector<ScoreRecord> records = detector.score(refs, paths, so);
    for (size_t i = 0; i < records.size(); ++i) {
      const ScoreRecord& r = records[i];
      if (!r.ok()) ++failed;
      const std::string time = utc_now();
      outbox.append(o.name, sink_names, stamps[i], [&](int64_t seq) {
        nlohmann::ordered_json j;
        j["line"] = o.name;
        j["seq"] = seq;
        j["path"] = r.path;
        j.update(score_json(r));
        j["time"] = time;
        return j.dump();
      });
      if (!filing) finish_file(r.path, o.folders.done_action, o.folders.done_dir);
    }
    for (auto& d : deliveries) d->notify();
  }
  // Drain: the sinks get drain_s to deliver what is stored; the rest waits in the outbox.
  const auto deadline = Clock::now() + std::chrono::seconds(o.drain_s);
  while (outbox.backlog(o.name) > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int64_t left = outbox.backlog(o.name);
  deliveries.clear();
  log("line " + o.name + ": stopped; " + std::to_string(left) + " results wait in the outbox for their sinks");
  return failed;
}

}  // namespace gad::station
