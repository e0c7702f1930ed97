// `gad watch SOURCE --refs SET [sinks]`: an inspection station line. Images that arrive (hot
// folder, video or stream, camera) are scored with the set's scorer and threshold; every result is stored in a durable
// outbox first and delivered from there to the sinks (JSONL, stdout, MQTT, webhook, OK/NG
// folders). SIGTERM/SIGINT: finish the images taken, give the sinks --drain seconds, exit 0;
// SIGHUP: re-read the set between batches. docs/station.md.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <sstream>
#include <thread>

#include "cli/cli.h"
#include "serve/http.h"
#include "station/config.h"
#include "station/line.h"
#include "station/outbox.h"
#include "util/error.h"

namespace gad::cli {
namespace {

// A folder's line keeps its outbox inside it (SOURCE/.gad/LINE.outbox: hidden, never scored);
// other sources in $GAD_STATE_DIR, else ~/.local/state/gad.
std::string default_outbox(const std::string& source, const std::string& kind, const std::string& line) {
  namespace fs = std::filesystem;
  if (kind == "folder") return (fs::path(source) / ".gad" / (line + ".outbox")).string();
  const char* state = std::getenv("GAD_STATE_DIR");
  const char* home = std::getenv("HOME");
  const fs::path dir = state && *state ? fs::path(state) : fs::path(home && *home ? home : ".") / ".local/state/gad";
  return (dir / (line + ".outbox")).string();
}

struct WatchArgs {
  ModelArgs model;
  station::LineOptions line;
  std::string source, outbox, config, metrics_host = "127.0.0.1";
  int metrics_port = 0;
};

// `--metrics-port`: every line's counters and histograms on GET /metrics, on the program's thread.
class MetricsServer {
 public:
  MetricsServer(const std::string& host, int port, const std::vector<station::LineOptions>& lines,
                std::vector<station::LineMetrics>& metrics, station::Outbox& outbox) {
    server_.Get("/metrics", [&lines, &metrics, &outbox](const httplib::Request&, httplib::Response& res) {
      std::ostringstream o;
      station::render_station_metric_headers(o);
      for (size_t i = 0; i < lines.size(); ++i) metrics[i].render(o, lines[i].name, outbox.backlog(lines[i].name));
      res.set_content(o.str(), "text/plain; version=0.0.4");
    });
    if (!server_.bind_to_port(host, port)) fail("--metrics-port ", port, ": cannot listen on ", host, ":", port);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    log_line("metrics on http://" + host + ":" + std::to_string(port) + "/metrics");
  }
  ~MetricsServer() {
    server_.stop();
    thread_.join();
  }

 private:
  httplib::Server server_;
  std::thread thread_;
};

// Checks one line before anything starts: options, SOURCE, output places; stdout when no sink.
void prepare_line(station::LineOptions& o) {
  namespace fs = std::filesystem;
  const std::string kind = station::source_kind(o.source);
  std::error_code ec;
  if (kind == "video" && o.source.find("://") == std::string::npos && o.source.rfind("/dev/video", 0) != 0 &&
      !fs::is_regular_file(o.source, ec))
    fail("SOURCE ", o.source, ": no such folder, video file, stream URL or aravis:CAMERA");
  station::check_line_options(o);
  if (o.jsonl.empty() && o.csv.empty() && o.mqtt.empty() && o.webhook.empty() && o.folders.ok_dir.empty())
    o.to_stdout = true;
  if (!o.jsonl.empty()) prepare_output_file("--jsonl", o.jsonl);
  if (!o.csv.empty()) prepare_output_file("--csv", o.csv);
  for (const auto& [opt, dir] : {std::pair<const char*, std::string>{"--ok-dir", o.folders.ok_dir},
                                 {"--ng-dir", o.folders.ng_dir}, {"--done-dir", o.folders.done_dir}})
    if (!dir.empty()) prepare_output_dir(opt, dir);
}

station::StationConfig station_config(const WatchArgs& a) {
  station::StationConfig c;
  if (!a.config.empty()) {
    if (!a.source.empty()) fail("--station: the lines come from the file; drop SOURCE");
    c = station::read_station_config(a.config);
  } else {
    if (a.source.empty()) fail("SOURCE: give a folder, a video or stream, or aravis:CAMERA_ID (or --station FILE)");
    c.lines = {a.line};
    c.lines[0].source = a.source;
  }
  if (!a.outbox.empty()) c.outbox = a.outbox;
  for (auto& o : c.lines) prepare_line(o);
  if (c.outbox.empty()) {
    const auto& first = c.lines[0];
    c.outbox = default_outbox(first.source, c.lines.size() == 1 ? station::source_kind(first.source) : "", first.name);
    if (c.lines.size() > 1) c.outbox = (std::filesystem::path(c.outbox).parent_path() / "station.outbox").string();
  }
  prepare_output_file("--outbox", c.outbox);
  return c;
}

int run_watch(WatchArgs a) {
  station::StationConfig config = station_config(a);
  station::Outbox outbox(config.outbox);
  const ModelOptions model = a.model.resolve();
  // One Detector per line (a Detector serves one thread at a time); each set checked up front.
  std::vector<std::unique_ptr<Detector>> detectors;
  for (const auto& o : config.lines) {
    detectors.push_back(std::make_unique<Detector>(model));
    (void)load_set(*detectors.back(), o.refs);
  }
  // FFmpeg logs to stderr on its own (connection refused, ...); gad reports every state change in
  // one line of its own instead.
  ::setenv("OPENCV_FFMPEG_LOGLEVEL", "-8", 0);
  catch_stop_signals();
  catch_reload_signal();
  const size_t n = config.lines.size();
  std::vector<std::atomic<bool>> reload(n);
  std::vector<station::LineMetrics> metrics(n);
  std::unique_ptr<MetricsServer> metrics_server;
  if (a.metrics_port > 0)
    metrics_server = std::make_unique<MetricsServer>(a.metrics_host, a.metrics_port, config.lines, metrics, outbox);
  std::vector<int64_t> failed(n, 0);
  std::vector<std::string> fatal(n);
  auto run = [&](size_t i) {
    try {
      failed[i] = station::run_line(config.lines[i], *detectors[i], outbox, stop_requested(), reload[i], log_line, metrics[i]);
    } catch (const std::exception& e) {  // this line ends; the others carry on
      fatal[i] = e.what();
      if (n > 1) log_line("line " + config.lines[i].name + ": error: " + fatal[i]);
    }
  };
  std::vector<std::thread> threads;
  std::vector<std::atomic<bool>> running(n);
  for (size_t i = 0; i < n; ++i) {
    running[i] = true;
    threads.emplace_back([&, i] {
      run(i);
      running[i] = false;
    });
  }
  // The signal flags are the program's: SIGHUP reaches every line.
  auto any_running = [&] { return std::any_of(running.begin(), running.end(), [](const auto& r) { return r.load(); }); };
  while (any_running()) {
    if (reload_requested().exchange(false))
      for (auto& r : reload) r = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& t : threads) t.join();
  int64_t total_failed = 0;
  for (auto f : failed) total_failed += f;
  if (total_failed > 0) log_line(std::to_string(total_failed) + " images could not be scored (error results)");
  if (n == 1 && !fatal[0].empty()) fail(fatal[0]);
  return std::any_of(fatal.begin(), fatal.end(), [](const std::string& f) { return !f.empty(); }) ? kExitError : kExitOk;
}

}  // namespace

void add_watch_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<WatchArgs>();
  auto* w = app.add_subcommand("watch", "an inspection station line: score the images that arrive in a folder, "
                                        "deliver every result (durable outbox; JSONL, MQTT, webhook, OK/NG folders)");
  a->model.add_to(w);
  auto& o = a->line;
  w->add_option("SOURCE", a->source, "a hot folder, a video file or stream URL (rtsp://, http:// MJPEG), /dev/videoN, "
                                     "or aravis:CAMERA_ID (GigE/USB3 Vision)");
  w->add_option("--station", a->config, "several lines from a JSON file (docs/station.md) instead of SOURCE and the line options");
  w->add_option("--refs", o.refs, "the reference set (.gadref): its scorer and threshold");
  w->add_option("--line", o.name, "the line's name: in every result, the MQTT client id and the outbox (default line1)");
  w->add_flag("--recursive", o.recursive, "watch the folders below SOURCE too");
  w->add_flag("--skip-existing", o.skip_existing, "at the line's first start, leave the images already there unscored");
  w->add_option("--jsonl", o.jsonl, "append every result to this JSON-lines file (fsync'ed)");
  w->add_option("--csv", o.csv, "append every result as a CSV row (line,seq,path,score,anomalous,error,time; fsync'ed)");
  w->add_flag("--stdout", o.to_stdout, "print every result as a JSON line (the default when no other sink is given)");
  w->add_option("--mqtt", o.mqtt, "publish every result (QoS 1) to mqtt://[USER:PASS@]HOST[:PORT]/TOPIC (mqtts:// for TLS); "
                                  "TOPIC/status holds online/offline (retained, last will)");
  w->add_option("--mqtt-cafile", o.mqtt_cafile, "mqtts: the CA certificates to trust (default: the system's)");
  w->add_option("--webhook", o.webhook, "POST every result as JSON to this URL; 2xx acknowledges it");
  w->add_option("--webhook-timeout", o.webhook_timeout_s, "seconds per webhook request (default 10)");
  w->add_option("--ok-dir", o.folders.ok_dir, "copy OK images here as SEQ_NAME (needs a calibrated set)");
  w->add_option("--ng-dir", o.folders.ng_dir, "copy flagged images (with SEQ_NAME.overlay.png, the map) and images that "
                                              "could not be scored here");
  w->add_option("--done", o.folders.done_action, "a processed file, once its result is stored: keep, move or delete (default keep)");
  w->add_option("--done-dir", o.folders.done_dir, "--done move: where processed files go");
  w->add_option("--outbox", a->outbox, "the durable outbox (SQLite; default SOURCE/.gad/LINE.outbox)");
  w->add_option("--outbox-max", o.outbox_max, "undelivered results kept before --when-full applies (default 100000)");
  w->add_option("--when-full", o.when_full, "outbox full: pause (take no new images) or drop-oldest (default pause)");
  w->add_option("--batch", o.batch, "images scored together when several wait (default 8)");
  w->add_option("--every", o.every, "video: score every N-th frame (default 1)");
  w->add_option("--max-fps", o.max_fps, "video/camera: at most this many frames per second (default: all)");
  w->add_option("--trigger", o.trigger, "camera: free-run, software (gad triggers at --max-fps) or a hardware line "
                                        "such as Line1 (default free-run)");
  w->add_option("--exposure", o.exposure_us, "camera: exposure time in microseconds");
  w->add_option("--gain", o.gain, "camera: gain");
  w->add_option("--queue", o.queue, "video/camera: frames captured ahead of the scorer (default 8)");
  w->add_option("--when-behind", o.when_behind, "video/camera, queue full: queue, drop-oldest or drop-newest "
                                                "(default: queue for a file, drop-oldest for a live source)");
  w->add_option("--log-every", o.log_every_s, "seconds between summary lines (rate, latency, backlog); 0: none (default 60)");
  w->add_option("--metrics-port", a->metrics_port, "serve Prometheus metrics on this port (GET /metrics)");
  w->add_option("--metrics-host", a->metrics_host, "the metrics address (default 127.0.0.1)");
  w->add_option("--drain", o.drain_s, "at stop: seconds the sinks get to deliver what is stored (default 10)");
  w->callback([a, &ctx] { ctx.run = [a] { return run_watch(*a); }; });
}

}  // namespace gad::cli
