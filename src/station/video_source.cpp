#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include <thread>

#include "station/source.h"
#include "util/error.h"

namespace gad::station {
namespace {

bool is_stream(const std::string& url) {
  return url.find("://") != std::string::npos || url.rfind("/dev/video", 0) == 0;
}

class VideoSource : public Source {
 public:
  explicit VideoSource(const VideoOptions& o) : o_(o) {
    if (o.every < 1) fail("--every: must be at least 1 (got ", o.every, ")");
    if (o.max_fps < 0) fail("--max-fps: must be at least 0 (got ", o.max_fps, ")");
    // A file that cannot be opened is an error at start; a stream or device is opened by next(),
    // so one that is down is retried (and reported) by the line like one that drops.
    if (!is_stream(o.url)) open();
  }
  std::string describe() const override { return o_.url; }
  bool finished() const override { return ended_; }
  void reset() override { capture_.release(); }

  std::vector<Input> next(size_t max, std::chrono::milliseconds) override {
    std::vector<Input> out;
    if (ended_) return out;
    if (!capture_.isOpened()) open();
    cv::Mat frame;
    while (out.size() < max) {
      if (!capture_.read(frame) || frame.empty()) {
        if (is_stream(o_.url)) {
          capture_.release();
          fail(o_.url, ": the stream stopped");
        }
        ended_ = true;
        break;
      }
      const int64_t n = frame_++;
      if (n % o_.every != 0) continue;
      const auto now = std::chrono::steady_clock::now();
      if (o_.max_fps > 0 && last_ && now - *last_ < std::chrono::duration<double>(1.0 / o_.max_fps)) continue;
      last_ = now;
      out.push_back(to_input(frame, n, now));
      if (is_stream(o_.url)) break;  // live: hand each frame over at once
    }
    return out;
  }

 private:
  void open() {
    const bool device = o_.url.rfind("/dev/video", 0) == 0;
    const bool ok = device ? capture_.open(std::stoi(o_.url.substr(10)), cv::CAP_V4L2) : capture_.open(o_.url, cv::CAP_FFMPEG);
    if (!ok || !capture_.isOpened()) fail(o_.url, ": cannot open the video (OpenCV videoio / FFmpeg)");
  }
  Input to_input(const cv::Mat& bgr, int64_t n, std::chrono::steady_clock::time_point now) const {
    cv::Mat rgb;
    if (bgr.channels() == 1) rgb = bgr;
    else cv::cvtColor(bgr, rgb, cv::COLOR_BGR2RGB);
    if (rgb.depth() != CV_8U) rgb.convertTo(rgb, CV_8U);
    Input in;
    in.id = o_.url + "#frame=" + std::to_string(n);
    in.width = rgb.cols;
    in.height = rgb.rows;
    in.channels = rgb.channels();
    in.pixels.resize(static_cast<size_t>(rgb.cols) * rgb.rows * rgb.channels());
    for (int y = 0; y < rgb.rows; ++y)
      std::copy(rgb.ptr<uint8_t>(y), rgb.ptr<uint8_t>(y) + rgb.cols * rgb.channels(),
                in.pixels.begin() + static_cast<std::ptrdiff_t>(y) * rgb.cols * rgb.channels());
    in.arrived = now;
    return in;
  }
  VideoOptions o_;
  cv::VideoCapture capture_;
  int64_t frame_ = 0;
  bool ended_ = false;
  std::optional<std::chrono::steady_clock::time_point> last_;
};

}  // namespace

std::unique_ptr<Source> video_source(const VideoOptions& options) { return std::make_unique<VideoSource>(options); }

}  // namespace gad::station
