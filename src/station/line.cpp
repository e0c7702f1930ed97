#include "station/line.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "engine/score_json.h"
#include "image/image.h"
#include "maps/anomaly_map.h"
#include "util/error.h"
#include "util/time_text.h"

namespace gad::station {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::vector<std::unique_ptr<Sink>> make_sinks(const LineOptions& o) {
  std::vector<std::unique_ptr<Sink>> sinks;
  if (!o.jsonl.empty()) sinks.push_back(jsonl_sink(o.jsonl));
  if (!o.csv.empty()) sinks.push_back(csv_sink(o.csv));
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
  void notify() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      woken_ = true;  // remembered: a notify between pending() and the wait is not lost
    }
    wake_.notify_all();
  }

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
      if (failing || !items.empty()) {
        wake_.wait_for(lock, backoff, [&] { return finished_; });
      } else {
        wake_.wait_for(lock, std::chrono::milliseconds(500), [&] { return finished_ || woken_; });
      }
      woken_ = false;
      if (failing || !items.empty()) backoff = std::min(backoff * 2, std::chrono::milliseconds(30000));
    }
  }
  std::string line_;
  Sink& sink_;
  Outbox& outbox_;
  const Log& log_;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool finished_ = false, woken_ = false;
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace

void check_line_options(const LineOptions& o) {
  if (o.refs.empty()) fail("--refs: give the line's reference set (.gadref)");
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
  if (o.log_every_s < 0) fail("--log-every: must be at least 0 seconds");
  if (o.queue < 1 || o.queue > 4096) fail("--queue: must be within 1..4096 (got ", o.queue, ")");
  if (!o.when_behind.empty() && o.when_behind != "queue" && o.when_behind != "drop-oldest" && o.when_behind != "drop-newest")
    fail("--when-behind '", o.when_behind, "': queue, drop-oldest or drop-newest");
  if (o.every < 1) fail("--every: must be at least 1 (got ", o.every, ")");
  if (!(o.max_fps >= 0)) fail("--max-fps: must be at least 0 (got ", o.max_fps, ")");
}

std::string source_kind(const std::string& source) {
  if (source.rfind("aravis:", 0) == 0) return "camera";
  std::error_code ec;
  if (fs::is_directory(source, ec)) return "folder";
  return "video";
}

namespace {

std::unique_ptr<Source> open_source(const LineOptions& o, Outbox& outbox, const std::set<std::string>& outputs) {
  const std::string kind = source_kind(o.source);
  if (kind == "folder") return folder_source(o.source, o.recursive, outputs, outbox, o.name, o.skip_existing);
  outbox.open_line(o.name);
  const bool live = kind == "camera" || o.source.find("://") != std::string::npos || o.source.rfind("/dev/video", 0) == 0;
  const std::string policy = !o.when_behind.empty() ? o.when_behind : live ? "drop-oldest" : "queue";
  auto inner = kind == "camera" ? camera_source({o.source.substr(7), o.trigger, o.exposure_us, o.gain, o.max_fps})
                                : video_source({o.source, o.every, o.max_fps});
  return buffered_source(std::move(inner), static_cast<size_t>(o.queue), policy);
}

// A frame that will be filed in the OK/NG folders is kept as a PNG beside the outbox until then.
std::string spool_frame(const Input& in, const std::string& spool, const std::string& line, int64_t seq) {
  fs::create_directories(spool);
  const std::string path = (fs::path(spool) / (line + "-" + std::to_string(seq) + ".png")).string();
  cv::Mat m(in.height, in.width, CV_MAKETYPE(in.bits == 16 ? CV_16U : CV_8U, in.channels), const_cast<uint8_t*>(in.pixels.data()));
  cv::Mat bgr;
  if (in.channels == 3) cv::cvtColor(m, bgr, cv::COLOR_RGB2BGR);
  else bgr = m;
  if (!cv::imwrite(path, bgr)) fail(spool, ": cannot write the frame ", path);
  return path;
}

// An NG image's overlay (its map on the set's colour scale) kept as a PNG until filed.
std::string spool_overlay(const Input& in, const ScoreRecord& r, double top, const std::string& spool,
                          const std::string& line, int64_t seq) {
  Image image;
  if (in.file) {
    image = decode_image(in.id);
  } else {
    image.width = in.width;
    image.height = in.height;
    image.channels = in.channels;
    const size_t n = static_cast<size_t>(in.width) * in.height * in.channels;
    image.pixels.resize(n);
    for (size_t i = 0; i < n; ++i)  // 16-bit frames: the high byte
      image.pixels[i] = in.bits == 16 ? in.pixels[2 * i + 1] : in.pixels[i];
  }
  const ImageMap map = map_to_image(r.residual_map, r.grid, r.geometry);
  fs::create_directories(spool);
  const std::string path = (fs::path(spool) / (line + "-" + std::to_string(seq) + "-overlay.png")).string();
  const std::string png = overlay_png(image, map, top);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  const bool ok = f && std::fwrite(png.data(), 1, png.size(), f) == png.size();
  if (f) std::fclose(f);
  if (!ok) fail(spool, ": cannot write the overlay ", path);
  return path;
}

// Scores a batch: files by path, frames by their pixels; one record per input, in order. A frame
// the source could not read is its error record.
std::vector<ScoreRecord> score_inputs(Detector& detector, const References& refs, const std::vector<Input>& inputs,
                                      const ScoreOptions& so) {
  std::vector<std::string> paths;
  std::vector<ImageView> views;
  for (const auto& in : inputs) {
    if (in.file) {
      paths.push_back(in.id);
    } else if (in.error.empty()) {
      ImageView v;
      v.data = in.pixels.data();
      v.width = in.width;
      v.height = in.height;
      v.channels = in.channels;
      v.bits = in.bits;
      v.name = in.id;
      views.push_back(v);
    }
  }
  std::vector<ScoreRecord> by_path = paths.empty() ? std::vector<ScoreRecord>{} : detector.score(refs, paths, so);
  std::vector<ScoreRecord> by_view = views.empty() ? std::vector<ScoreRecord>{} : detector.score(refs, views, so);
  std::vector<ScoreRecord> out;
  size_t p = 0, v = 0;
  for (const auto& in : inputs) {
    if (in.file) {
      out.push_back(std::move(by_path[p++]));
    } else if (in.error.empty()) {
      out.push_back(std::move(by_view[v++]));
    } else {
      ScoreRecord r;
      r.path = in.id;
      r.error = in.error;
      r.error_kind = ErrorKind::CorruptFile;
      out.push_back(std::move(r));
    }
  }
  return out;
}

// The line's set, checked the way scoring would check it: a threshold calibrated under another
// setup (other heads, taps, ...) is refused here — at start, and on reload, where the old set is
// kept — instead of ending the line at its next image.
References usable_set(Detector& detector, const std::string& path) {
  References refs = detector.load_references(path);
  if (const auto t = refs.threshold()) {
    const std::string diff = setup_difference(t->setup, detector.scoring_setup(refs));
    if (!diff.empty()) fail(path, ": its threshold was calibrated under another setup (", diff, ")");
  }
  return refs;
}

// Sleeps up to `d`, returning early when `stop` is set.
void pause_for(std::chrono::milliseconds d, const std::atomic<bool>& stop) {
  const auto until = Clock::now() + d;
  while (!stop && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
}

}  // namespace

int64_t run_line(const LineOptions& o, Detector& detector, Outbox& outbox, const std::atomic<bool>& stop,
                 std::atomic<bool>& reload, const Log& log, LineMetrics& metrics) {
  References refs = usable_set(detector, o.refs);
  const bool filing = !o.folders.ok_dir.empty();
  if (filing && !refs.threshold())
    fail("--ok-dir/--ng-dir: ", o.refs, " has no threshold, so no image could be filed as OK (gad refs calibrate)");
  std::set<std::string> outputs;
  for (const auto& d : {o.folders.ok_dir, o.folders.ng_dir, o.folders.done_dir})
    if (!d.empty()) outputs.insert(d);
  auto source = open_source(o, outbox, outputs);
  auto sinks = make_sinks(o);
  std::vector<std::string> sink_names;
  for (const auto& s : sinks) sink_names.push_back(s->name());
  std::vector<std::unique_ptr<Delivery>> deliveries;
  for (auto& s : sinks) {
    log("line " + o.name + ": results to " + s->where());
    deliveries.push_back(std::make_unique<Delivery>(o.name, *s, outbox, log));
  }
  log("line " + o.name + ": watching " + source->describe() + " with " + refs.summary() + "; outbox " + outbox.path());
  const std::string spool = (fs::path(outbox.path()).parent_path() / "frames").string();

  int64_t failed = 0, dropped = 0, frames_dropped = 0;
  bool paused = false, source_failing = false;
  auto source_backoff = std::chrono::milliseconds(500);
  ScoreOptions so;
  so.batch = o.batch;
  if (filing) so.map = MapKind::Patch;  // NG images are filed with their overlay
  auto last_summary = Clock::now();
  while (!stop) {
    if (o.log_every_s > 0 && Clock::now() - last_summary >= std::chrono::seconds(o.log_every_s)) {
      last_summary = Clock::now();
      log("line " + o.name + ": " + metrics.period_summary() + "; backlog " + std::to_string(outbox.backlog(o.name)));
    }
    if (reload.exchange(false)) {
      try {
        refs = usable_set(detector, o.refs);
        log("line " + o.name + ": reloaded " + refs.summary());
      } catch (const std::exception& e) {
        log("line " + o.name + ": reload failed, keeping the set in use: " + e.what());
      }
    }
    const int64_t backlog = outbox.backlog(o.name);
    if (backlog >= o.outbox_max) {
      if (o.when_full == "drop-oldest") {
        const int64_t n = outbox.drop_oldest(o.name, o.outbox_max - 1);
        dropped += n;
        metrics.dropped(n);
        log("line " + o.name + ": outbox full: dropped the " + std::to_string(n) + " oldest undelivered results (" +
            std::to_string(dropped) + " in all)");
      } else {
        if (!paused) log("line " + o.name + ": outbox full (" + std::to_string(backlog) + " undelivered): paused");
        paused = true;
        pause_for(std::chrono::milliseconds(100), stop);
        continue;
      }
    } else if (paused) {
      log("line " + o.name + ": outbox below its bound: taking images again");
      paused = false;
    }
    std::vector<Input> inputs;
    try {
      inputs = source->next(static_cast<size_t>(o.batch), std::chrono::milliseconds(200));
      if (source_failing) log("line " + o.name + ": " + source->describe() + ": running again");
      source_failing = false;
      source_backoff = std::chrono::milliseconds(500);
    } catch (const std::exception& e) {
      if (!source_failing) log("line " + o.name + ": " + e.what() + " — retrying");
      source_failing = true;
      source->reset();
      pause_for(source_backoff, stop);
      // Capped low: a buffered source retries on its own thread, and frames wait for this line.
      source_backoff = std::min(source_backoff * 2, std::chrono::milliseconds(5000));
      continue;
    }
    if (const int64_t n = source->dropped(); n > 0) {
      frames_dropped += n;
      metrics.frames_dropped(n);
    }
    if (inputs.empty()) {
      if (source->finished()) break;
      continue;
    }
    // Stop only between batches: images taken are finished and stored.
    const auto started = Clock::now();
    const std::vector<ScoreRecord> records = score_inputs(detector, refs, inputs, so);
    const double score_s = std::chrono::duration<double>(Clock::now() - started).count() / records.size();
    for (size_t i = 0; i < records.size(); ++i) {
      const ScoreRecord& r = records[i];
      const Input& in = inputs[i];
      if (!r.ok()) ++failed;
      const std::string time = utc_now_iso_ms();
      const double queued_ms = std::chrono::duration<double, std::milli>(started - in.arrived).count();
      const auto verdict = r.anomalous();
      const auto storing = Clock::now();
      outbox.append(o.name, sink_names, in.file, [&](int64_t seq) {
        nlohmann::ordered_json j;
        j["line"] = o.name;
        j["seq"] = seq;
        j["path"] = r.path;
        j.update(score_json(r));
        j["queue_ms"] = std::round(queued_ms * 100) / 100;
        j["time"] = time;
        if (filing && !in.file) j["frame_file"] = spool_frame(in, spool, o.name, seq);
        if (filing && verdict && *verdict && !r.residual_map.empty()) {
          try {
            j["overlay_file"] = spool_overlay(in, r, refs.threshold() ? refs.threshold()->map_top : 0, spool, o.name, seq);
          } catch (const std::exception& e) {  // the verdict stands without its picture
            log("line " + o.name + ": " + r.path + ": no overlay (" + e.what() + ")");
          }
        }
        return j.dump();
      });
      const auto stored = Clock::now();
      metrics.record(!r.ok() ? "error" : !verdict ? "scored" : *verdict ? "ng" : "ok", queued_ms / 1000, score_s,
                     std::chrono::duration<double>(stored - storing).count(),
                     std::chrono::duration<double>(stored - in.arrived).count());
      if (!filing && in.file) finish_file(r.path, o.folders.done_action, o.folders.done_dir);
    }
    for (auto& d : deliveries) d->notify();
  }
  // Drain: the sinks get drain_s to deliver what is stored; the rest waits in the outbox.
  const auto deadline = Clock::now() + std::chrono::seconds(o.drain_s);
  while (outbox.backlog(o.name) > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int64_t left = outbox.backlog(o.name);
  deliveries.clear();
  log("line " + o.name + ": stopped; " + std::to_string(left) + " results wait in the outbox for their sinks" +
      (frames_dropped > 0 ? "; " + std::to_string(frames_dropped) + " frames dropped while behind" : ""));
  return failed;
}

}  // namespace gad::station
