// `gad watch FOLDER --refs SET [sinks]`: an inspection station line. Images that arrive in the
// folder are scored with the set's scorer and threshold; every result is stored in a durable
// outbox first and delivered from there to the sinks (JSONL, stdout, MQTT, webhook, OK/NG
// folders). SIGTERM/SIGINT: finish the images taken, give the sinks --drain seconds, exit 0;
// SIGHUP: re-read the set between batches. docs/station.md.
#include <filesystem>

#include "cli/cli.h"
#include "station/line.h"
#include "station/outbox.h"
#include "util/error.h"

namespace gad::cli {
namespace {

struct WatchArgs {
  ModelArgs model;
  station::LineOptions line;
  std::string source, outbox;
};

int run_watch(WatchArgs a) {
  namespace fs = std::filesystem;
  auto& o = a.line;
  if (a.source.rfind("aravis:", 0) == 0 || a.source.find("://") != std::string::npos)
    fail("SOURCE ", a.source, ": cameras and streams are not supported by this gad yet; give a folder");
  std::error_code ec;
  if (!fs::is_directory(a.source, ec)) fail("SOURCE ", a.source, ": not a folder");
  o.folder = a.source;
  station::check_line_options(o);
  if (o.jsonl.empty() && o.mqtt.empty() && o.webhook.empty() && o.folders.ok_dir.empty()) o.to_stdout = true;
  if (!o.jsonl.empty()) prepare_output_file("--jsonl", o.jsonl);
  for (const auto& [opt, dir] : {std::pair<const char*, std::string>{"--ok-dir", o.folders.ok_dir},
                                 {"--ng-dir", o.folders.ng_dir}, {"--done-dir", o.folders.done_dir}})
    if (!dir.empty()) prepare_output_dir(opt, dir);
  if (a.outbox.empty()) a.outbox = (fs::path(a.source) / ".gad" / (o.name + ".outbox")).string();
  prepare_output_file("--outbox", a.outbox);
  station::Outbox outbox(a.outbox);
  Detector detector(a.model.resolve());
  (void)load_set(detector, o.refs);  // checks the set (and warns once) before the line starts
  catch_stop_signals();
  catch_reload_signal();
  const int64_t failed = station::run_line(o, detector, outbox, stop_requested(), reload_requested(), log_line);
  if (failed > 0) log_line(std::to_string(failed) + " images could not be scored (error results)");
  return kExitOk;
}

}  // namespace

void add_watch_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<WatchArgs>();
  auto* w = app.add_subcommand("watch", "an inspection station line: score the images that arrive in a folder, "
                                        "deliver every result (durable outbox; JSONL, MQTT, webhook, OK/NG folders)");
  a->model.add_to(w);
  auto& o = a->line;
  w->add_option("SOURCE", a->source, "the hot folder")->required();
  w->add_option("--refs", o.refs, "the reference set (.gadref): its scorer and threshold")->required();
  w->add_option("--line", o.name, "the line's name: in every result, the MQTT client id and the outbox (default line1)");
  w->add_flag("--recursive", o.recursive, "watch the folders below SOURCE too");
  w->add_flag("--skip-existing", o.skip_existing, "at the line's first start, leave the images already there unscored");
  w->add_option("--jsonl", o.jsonl, "append every result to this JSON-lines file (fsync'ed)");
  w->add_flag("--stdout", o.to_stdout, "print every result as a JSON line (the default when no other sink is given)");
  w->add_option("--mqtt", o.mqtt, "publish every result (QoS 1) to mqtt://[USER:PASS@]HOST[:PORT]/TOPIC (mqtts:// for TLS); "
                                  "TOPIC/status holds online/offline (retained, last will)");
  w->add_option("--mqtt-cafile", o.mqtt_cafile, "mqtts: the CA certificates to trust (default: the system's)");
  w->add_option("--webhook", o.webhook, "POST every result as JSON to this URL; 2xx acknowledges it");
  w->add_option("--webhook-timeout", o.webhook_timeout_s, "seconds per webhook request (default 10)");
  w->add_option("--ok-dir", o.folders.ok_dir, "copy OK images here as SEQ_NAME (needs a calibrated set)");
  w->add_option("--ng-dir", o.folders.ng_dir, "copy flagged images, and images that could not be scored, here");
  w->add_option("--done", o.folders.done_action, "a processed file, once its result is stored: keep, move or delete (default keep)");
  w->add_option("--done-dir", o.folders.done_dir, "--done move: where processed files go");
  w->add_option("--outbox", a->outbox, "the durable outbox (SQLite; default SOURCE/.gad/LINE.outbox)");
  w->add_option("--outbox-max", o.outbox_max, "undelivered results kept before --when-full applies (default 100000)");
  w->add_option("--when-full", o.when_full, "outbox full: pause (take no new images) or drop-oldest (default pause)");
  w->add_option("--batch", o.batch, "images scored together when several wait (default 8)");
  w->add_option("--drain", o.drain_s, "at stop: seconds the sinks get to deliver what is stored (default 10)");
  w->callback([a, &ctx] { ctx.run = [a] { return run_watch(*a); }; });
}

}  // namespace gad::cli
