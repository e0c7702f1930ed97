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

namespace {

// One running line: its set, source, sinks and their delivery threads; run() is the loop.
class Line {
 public:
  Line(const LineOptions& o, Detector& detector, Outbox& outbox, const Log& log, LineMetrics& metrics)
      : o_(o), detector_(detector), outbox_(outbox), log_(log), metrics_(metrics), refs_(usable_set(detector, o.refs)),
        filing_(!o.folders.ok_dir.empty()),
        spool_((fs::path(outbox.path()).parent_path() / "frames").string()) {
    if (filing_ && !refs_.threshold())
      fail("--ok-dir/--ng-dir: ", o.refs, " has no threshold, so no image could be filed as OK (gad refs calibrate)");
    std::set<std::string> outputs;
    for (const auto& d : {o.folders.ok_dir, o.folders.ng_dir, o.folders.done_dir})
      if (!d.empty()) outputs.insert(d);
    source_ = open_source(o, outbox, outputs);
    sinks_ = make_sinks(o);
    for (auto& s : sinks_) {
      say("results to " + s->where());
      sink_names_.push_back(s->name());
      deliveries_.push_back(std::make_unique<Delivery>(o.name, *s, outbox, log));
    }
    options_.batch = o.batch;
    if (filing_) options_.map = MapKind::Patch;  // NG images are filed with their overlay
    say("watching " + source_->describe() + " with " + refs_.summary() + "; outbox " + outbox.path());
  }

  int64_t run(const std::atomic<bool>& stop, std::atomic<bool>& reload) {
    while (!stop) {
      summarise_when_due();
      if (reload.exchange(false)) reload_set();
      if (!outbox_has_room(stop)) continue;
      std::vector<Input> inputs;
      if (!take(stop, &inputs)) continue;
      if (inputs.empty()) {
        if (source_->finished()) break;
        continue;
      }
      // Stop only between batches: images taken are finished and stored.
      const auto started = Clock::now();
      const std::vector<ScoreRecord> records = score_inputs(detector_, refs_, inputs, options_);
      const double score_s = std::chrono::duration<double>(Clock::now() - started).count() / records.size();
      for (size_t i = 0; i < records.size(); ++i) store(inputs[i], records[i], started, score_s);
      for (auto& d : deliveries_) d->notify();
    }
    drain();
    return failed_;
  }

 private:
  void say(const std::string& s) const { log_("line " + o_.name + ": " + s); }

  void summarise_when_due() {
    if (o_.log_every_s <= 0 || Clock::now() - last_summary_ < std::chrono::seconds(o_.log_every_s)) return;
    last_summary_ = Clock::now();
    say(metrics_.period_summary() + "; backlog " + std::to_string(outbox_.backlog(o_.name)));
  }

  void reload_set() {
    try {
      refs_ = usable_set(detector_, o_.refs);
      say("reloaded " + refs_.summary());
    } catch (const std::exception& e) {
      say(std::string("reload failed, keeping the set in use: ") + e.what());
    }
  }

  // --outbox-max and --when-full: false while the line is paused for its sinks to catch up.
  bool outbox_has_room(const std::atomic<bool>& stop) {
    const int64_t backlog = outbox_.backlog(o_.name);
    if (backlog < o_.outbox_max) {
      if (paused_) say("outbox below its bound: taking images again");
      paused_ = false;
      return true;
    }
    if (o_.when_full == "drop-oldest") {
      const int64_t n = outbox_.drop_oldest(o_.name, o_.outbox_max - 1);
      dropped_ += n;
      metrics_.dropped(n);
      say("outbox full: dropped the " + std::to_string(n) + " oldest undelivered results (" + std::to_string(dropped_) +
          " in all)");
      return true;
    }
    if (!paused_) say("outbox full (" + std::to_string(backlog) + " undelivered): paused");
    paused_ = true;
    pause_for(std::chrono::milliseconds(100), stop);
    return false;
  }

  // The next inputs; false when the source failed (reported once per change, retried with backoff).
  bool take(const std::atomic<bool>& stop, std::vector<Input>* inputs) {
    try {
      *inputs = source_->next(static_cast<size_t>(o_.batch), std::chrono::milliseconds(200));
    } catch (const std::exception& e) {
      if (!source_failing_) say(std::string(e.what()) + " — retrying");
      source_failing_ = true;
      source_->reset();
      pause_for(source_backoff_, stop);
      // Capped low: a buffered source retries on its own thread, and frames wait for this line.
      source_backoff_ = std::min(source_backoff_ * 2, std::chrono::milliseconds(5000));
      return false;
    }
    if (source_failing_) say(source_->describe() + ": running again");
    source_failing_ = false;
    source_backoff_ = std::chrono::milliseconds(500);
    if (const int64_t n = source_->dropped(); n > 0) {
      frames_dropped_ += n;
      metrics_.frames_dropped(n);
    }
    return true;
  }

  // One result into the outbox (with its file marked done), then the file's done action.
  void store(const Input& in, const ScoreRecord& r, Clock::time_point started, double score_s) {
    if (!r.ok()) ++failed_;
    const double queued_ms = std::chrono::duration<double, std::milli>(started - in.arrived).count();
    const auto verdict = r.anomalous();
    const auto storing = Clock::now();
    outbox_.append(o_.name, sink_names_, in.file, [&](int64_t seq) { return result_body(in, r, seq, queued_ms); });
    const auto stored = Clock::now();
    metrics_.record(!r.ok() ? "error" : !verdict ? "scored" : *verdict ? "ng" : "ok", queued_ms / 1000, score_s,
                    std::chrono::duration<double>(stored - storing).count(),
                    std::chrono::duration<double>(stored - in.arrived).count());
    if (!filing_ && in.file) finish_file(r.path, o_.folders.done_action, o_.folders.done_dir);
  }

  // `gad score`'s JSON for the record, with the line, its sequence number, the stage times and,
  // for the OK/NG folders, the spooled frame and an NG image's overlay.
  std::string result_body(const Input& in, const ScoreRecord& r, int64_t seq, double queued_ms) const {
    nlohmann::ordered_json j;
    j["line"] = o_.name;
    j["seq"] = seq;
    j["path"] = r.path;
    j.update(score_json(r));
    j["queue_ms"] = std::round(queued_ms * 100) / 100;
    j["time"] = utc_now_iso_ms();
    if (filing_ && !in.file) j["frame_file"] = spool_frame(in, spool_, o_.name, seq);
    const auto verdict = r.anomalous();
    if (filing_ && verdict && *verdict && !r.residual_map.empty()) {
      try {
        j["overlay_file"] = spool_overlay(in, r, refs_.threshold() ? refs_.threshold()->map_top : 0, spool_, o_.name, seq);
      } catch (const std::exception& e) {  // the verdict stands without its picture
        say(r.path + ": no overlay (" + e.what() + ")");
      }
    }
    return j.dump();
  }

  // The sinks get drain_s to deliver what is stored; the rest waits in the outbox.
  void drain() {
    const auto deadline = Clock::now() + std::chrono::seconds(o_.drain_s);
    while (outbox_.backlog(o_.name) > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const int64_t left = outbox_.backlog(o_.name);
    deliveries_.clear();
    say("stopped; " + std::to_string(left) + " results wait in the outbox for their sinks" +
        (frames_dropped_ > 0 ? "; " + std::to_string(frames_dropped_) + " frames dropped while behind" : ""));
  }

  const LineOptions& o_;
  Detector& detector_;
  Outbox& outbox_;
  const Log& log_;
  LineMetrics& metrics_;
  References refs_;
  const bool filing_;
  const std::string spool_;
  std::unique_ptr<Source> source_;
  std::vector<std::unique_ptr<Sink>> sinks_;
  std::vector<std::string> sink_names_;
  std::vector<std::unique_ptr<Delivery>> deliveries_;  // after sinks_: stopped before the sinks go
  ScoreOptions options_;
  int64_t failed_ = 0, dropped_ = 0, frames_dropped_ = 0;
  bool paused_ = false, source_failing_ = false;
  std::chrono::milliseconds source_backoff_{500};
  Clock::time_point last_summary_ = Clock::now();
};

}  // namespace

int64_t run_line(const LineOptions& o, Detector& detector, Outbox& outbox, const std::atomic<bool>& stop,
                 std::atomic<bool>& reload, const Log& log, LineMetrics& metrics) {
  return Line(o, detector, outbox, log, metrics).run(stop, reload);
}

}  // namespace gad::station
