// GigE Vision / USB3 Vision cameras through Aravis 0.8. "Fake_N" ids are Aravis's in-process fake
// camera (its Fake interface is enabled for them only), which the tests use.
#include <arv.h>

#include <opencv2/imgproc.hpp>

#include <thread>

#include "station/source.h"
#include "util/error.h"

namespace gad::station {
namespace {

// An Aravis call's GError as one line naming the camera.
void check(GError* error, const std::string& id, const char* what) {
  if (!error) return;
  const std::string msg = error->message ? error->message : "unknown error";
  g_error_free(error);
  fail("aravis:", id, ": ", what, ": ", msg);
}

class CameraSource : public Source {
 public:
  explicit CameraSource(const CameraOptions& o) : o_(o) {
    if (o.max_fps < 0) fail("--max-fps: must be at least 0 (got ", o.max_fps, ")");
    if (o.trigger == "software" && o.max_fps <= 0) fail("--trigger software: give --max-fps (how often gad triggers)");
    if (o.id.rfind("Fake_", 0) == 0) arv_enable_interface("Fake");
    // Opened by next(): a camera that is off or unplugged is retried (and reported) by the line.
  }
  ~CameraSource() override { close(); }
  std::string describe() const override { return "aravis:" + o_.id; }
  void reset() override { close(); }

  std::vector<Input> next(size_t, std::chrono::milliseconds timeout) override {
    if (!camera_) open();
    if (o_.trigger == "software") {
      const auto wait = last_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(1.0 / o_.max_fps));
      std::this_thread::sleep_until(wait);
      GError* e = nullptr;
      arv_camera_software_trigger(camera_, &e);
      check(e, o_.id, "software trigger");
      last_ = std::chrono::steady_clock::now();
    }
    ArvBuffer* b = arv_stream_timeout_pop_buffer(stream_, static_cast<guint64>(std::max<int64_t>(timeout.count(), 1)) * 1000);
    std::vector<Input> out;
    if (!b) {
      if (++timeouts_ * timeout > std::chrono::seconds(10) && o_.trigger == "free-run") {
        close();
        fail("aravis:", o_.id, ": no frame for 10 s");
      }
      return out;
    }
    timeouts_ = 0;
    if (arv_buffer_get_status(b) == ARV_BUFFER_STATUS_SUCCESS) {
      const auto now = std::chrono::steady_clock::now();
      const bool capped = o_.trigger != "software" && o_.max_fps > 0 &&
                          now - last_ < std::chrono::duration<double>(1.0 / o_.max_fps);
      if (!capped) {
        if (o_.trigger != "software") last_ = now;
        out.push_back(to_input(b, now));
      }
    }
    arv_stream_push_buffer(stream_, b);
    return out;
  }

 private:
  void open() {
    GError* e = nullptr;
    camera_ = arv_camera_new(o_.id.c_str(), &e);
    check(e, o_.id, "cannot open the camera");
    try {
      arv_camera_set_acquisition_mode(camera_, ARV_ACQUISITION_MODE_CONTINUOUS, &e);
      check(e, o_.id, "acquisition mode");
      if (o_.trigger == "free-run") {
        arv_camera_clear_triggers(camera_, &e);
      } else {
        arv_camera_set_trigger(camera_, o_.trigger == "software" ? "Software" : o_.trigger.c_str(), &e);
      }
      check(e, o_.id, "trigger");
      if (o_.exposure_us > 0) arv_camera_set_exposure_time(camera_, o_.exposure_us, &e);
      check(e, o_.id, "exposure");
      if (o_.gain >= 0) arv_camera_set_gain(camera_, o_.gain, &e);
      check(e, o_.id, "gain");
      stream_ = arv_camera_create_stream(camera_, nullptr, nullptr, &e);
      check(e, o_.id, "cannot open the stream");
      const guint payload = arv_camera_get_payload(camera_, &e);
      check(e, o_.id, "payload size");
      for (int i = 0; i < 8; ++i) arv_stream_push_buffer(stream_, arv_buffer_new(payload, nullptr));
      arv_camera_start_acquisition(camera_, &e);
      check(e, o_.id, "cannot start acquisition");
    } catch (...) {
      close();
      throw;
    }
  }
  void close() {
    if (camera_ && stream_) arv_camera_stop_acquisition(camera_, nullptr);
    if (stream_) g_object_unref(stream_);
    if (camera_) g_object_unref(camera_);
    stream_ = nullptr;
    camera_ = nullptr;
  }
  // The buffer as RGB (or gray) pixels; a pixel format gad cannot convert is an error input.
  Input to_input(ArvBuffer* b, std::chrono::steady_clock::time_point now) {
    size_t size = 0;
    const auto* data = static_cast<const uint8_t*>(arv_buffer_get_image_data(b, &size));
    const int w = arv_buffer_get_image_width(b), h = arv_buffer_get_image_height(b);
    const ArvPixelFormat f = arv_buffer_get_image_pixel_format(b);
    Input in;
    in.id = "aravis:" + o_.id + "#frame=" + std::to_string(arv_buffer_get_frame_id(b));
    in.arrived = now;
    in.width = w;
    in.height = h;
    cv::Mat out;
    int bayer = -1;
    if (size < static_cast<size_t>(w) * h) {
      in.error = in.id + ": the camera sent " + std::to_string(size) + " bytes for a " + std::to_string(w) + "x" +
                 std::to_string(h) + " frame";
      return in;
    }
    switch (f) {
      case ARV_PIXEL_FORMAT_MONO_8: out = cv::Mat(h, w, CV_8UC1, const_cast<uint8_t*>(data)).clone(); break;
      case ARV_PIXEL_FORMAT_MONO_16: out = cv::Mat(h, w, CV_16UC1, const_cast<uint8_t*>(data)).clone(); break;
      case ARV_PIXEL_FORMAT_RGB_8_PACKED: out = cv::Mat(h, w, CV_8UC3, const_cast<uint8_t*>(data)).clone(); break;
      // OpenCV names Bayer patterns by the second row's first two pixels: GenICam's BayerRG is OpenCV's BayerBG.
      case ARV_PIXEL_FORMAT_BAYER_RG_8: bayer = cv::COLOR_BayerBG2RGB; break;
      case ARV_PIXEL_FORMAT_BAYER_BG_8: bayer = cv::COLOR_BayerRG2RGB; break;
      case ARV_PIXEL_FORMAT_BAYER_GR_8: bayer = cv::COLOR_BayerGB2RGB; break;
      case ARV_PIXEL_FORMAT_BAYER_GB_8: bayer = cv::COLOR_BayerGR2RGB; break;
      default: break;
    }
    if (bayer >= 0) cv::cvtColor(cv::Mat(h, w, CV_8UC1, const_cast<uint8_t*>(data)), out, bayer);
    if (out.empty()) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", static_cast<unsigned>(f));
      in.error = in.id + ": pixel format " + hex + " is not supported (Mono8, Mono16, RGB8, Bayer 8-bit)";
      return in;
    }
    in.channels = out.channels();
    in.bits = out.depth() == CV_16U ? 16 : 8;
    in.pixels.assign(out.datastart, out.dataend);
    return in;
  }
  CameraOptions o_;
  ArvCamera* camera_ = nullptr;
  ArvStream* stream_ = nullptr;
  std::chrono::steady_clock::time_point last_{};
  int timeouts_ = 0;
};

}  // namespace

std::unique_ptr<Source> camera_source(const CameraOptions& options) { return std::make_unique<CameraSource>(options); }

}  // namespace gad::station
