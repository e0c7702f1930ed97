// Where a station line's images come from. A source hands out inputs — a complete file of a hot
// folder, or a frame (RGB, 8 or 16 bits) of a video, stream or camera — and throws gad::Error
// when it fails (the line logs it once, backs off and opens it again).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "station/outbox.h"

namespace gad::station {

struct Input {
  std::string id;                 // the file's path, or the frame's id (SOURCE#frame=N)
  std::optional<FileStamp> file;  // a hot-folder file
  std::vector<uint8_t> pixels;    // a frame: rows of width * channels * bits / 8 bytes
  int width = 0, height = 0, channels = 0, bits = 8;
  std::chrono::steady_clock::time_point arrived;  // file complete / frame captured
  std::string error;              // a frame gad cannot read: stored as this input's error result
};

class Source {
 public:
  virtual ~Source() = default;
  virtual std::string describe() const = 0;
  // Up to `max` inputs, waiting at most `timeout` for the first.
  virtual std::vector<Input> next(size_t max, std::chrono::milliseconds timeout) = 0;
  // True once a finite source (a video file) has given its last input.
  virtual bool finished() const { return false; }
  // Drops the connection (a stream or camera that failed); the next call to next() reopens it.
  virtual void reset() {}
  // Inputs dropped since the last call (a buffered live source that fell behind).
  virtual int64_t dropped() { return 0; }
};

// `inner` read on a capture thread into a queue of `capacity` inputs; when it is full, `policy`:
// queue (wait), drop-oldest or drop-newest (counted by dropped()). The thread retries a failing
// source with backoff; next() throws its error while it fails.
std::unique_ptr<Source> buffered_source(std::unique_ptr<Source> inner, size_t capacity, const std::string& policy);

// A hot folder (HotFolder) whose files are offered once each: a file the outbox already has a
// result for (same path, size and time) is skipped. `skip_existing`: at the line's first start
// the files already there are marked done without a result.
std::unique_ptr<Source> folder_source(const std::string& dir, bool recursive, const std::set<std::string>& exclude,
                                      Outbox& outbox, const std::string& line, bool skip_existing);

struct VideoOptions {
  std::string url;        // a file, rtsp://, http(s):// MJPEG, /dev/videoN
  int every = 1;          // score every N-th frame
  double max_fps = 0;     // at most this many frames per second (0: no cap)
};
// OpenCV's videoio (FFmpeg, V4L2). A stream or device that drops is reopened; a file ends.
std::unique_ptr<Source> video_source(const VideoOptions& options);

struct CameraOptions {
  std::string id;                   // the Aravis device id (arv-tool-0.8 lists them)
  std::string trigger = "free-run"; // free-run | software (gad triggers at --max-fps) | LINE (hardware, e.g. Line1)
  double exposure_us = 0, gain = -1;  // set when given (>= 0 / > 0)
  double max_fps = 0;
};
// A GigE Vision / USB3 Vision camera through Aravis; Mono8/16, RGB8 and Bayer 8 become RGB.
std::unique_ptr<Source> camera_source(const CameraOptions& options);

}  // namespace gad::station
