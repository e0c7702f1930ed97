// One station line: a source's images (hot folder, video/stream, camera) → the set's scorer and
// threshold → the outbox → the line's sinks. Nothing is lost: a file counts as done only in the transaction that stores its
// result; sinks take results from the outbox and acknowledge them one by one; what a sink could
// not take stays there (bounded by `outbox_max`, then `when_full`) and is retried with backoff,
// also by the next process after a restart.
#pragma once

#include <atomic>
#include <functional>
#include <string>

#include <gad/gad.hpp>

#include "station/metrics.h"
#include "station/outbox.h"
#include "station/sinks.h"
#include "station/source.h"

namespace gad::station {

struct LineOptions {
  std::string name = "line1";
  std::string source;                // a folder, a video file or stream URL, /dev/videoN, aravis:CAMERA_ID
  bool recursive = false;            // folder: the folders below it too
  bool skip_existing = false;        // at the line's first start, what is already there is not scored
  std::string refs;                  // the .gadref (its scorer and threshold); re-read on reload
  FolderOptions folders;             // OK/NG folders and what happens to a processed file
  std::string jsonl, csv, mqtt, mqtt_cafile, webhook;
  bool to_stdout = false;
  int webhook_timeout_s = 10;
  int batch = 8;                     // images scored together when several are waiting
  int64_t outbox_max = 100000;       // results kept for sinks that are behind
  std::string when_full = "pause";   // pause: take no new images | drop-oldest: count and drop
  int drain_s = 10;                  // at stop: time the sinks get to deliver what is stored
  int every = 1;                     // video: score every N-th frame
  double max_fps = 0;                // video/camera: at most this many frames per second (0: all)
  std::string trigger = "free-run";  // camera: free-run | software | a hardware line (Line1, ...)
  double exposure_us = 0, gain = -1; // camera: set when given
  int queue = 8;                     // video/camera: frames captured ahead of the scorer
  std::string when_behind;           // video/camera, queue full: queue | drop-oldest | drop-newest
                                     // (default: queue for a video file, drop-oldest for live sources)
  int log_every_s = 60;              // a summary line (rate, latency, backlog) this often; 0: never
};

using Log = std::function<void(const std::string&)>;

// Checks the options that do not need a model (one line naming the option on failure).
void check_line_options(const LineOptions& o);

// What kind of source a SOURCE argument names: "folder", "camera" (aravis:ID) or "video".
std::string source_kind(const std::string& source);

// Runs the line until `stop` is set (or a video file ended and its results were delivered); `reload` (set by SIGHUP) re-reads the set between batches
// (a set that fails to load is logged and the old one kept). Returns the number of images that
// could not be scored.
int64_t run_line(const LineOptions& o, Detector& detector, Outbox& outbox, const std::atomic<bool>& stop,
                 std::atomic<bool>& reload, const Log& log, LineMetrics& metrics);

}  // namespace gad::station
