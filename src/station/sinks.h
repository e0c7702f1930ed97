// Where a station line's results go. Each sink receives results from the outbox in sequence
// order and says how many it acknowledged: a JSONL file once written and fsync'ed, stdout once
// flushed, MQTT once the broker's PUBACK (QoS 1) arrived, a webhook once it answered 2xx, the
// OK/NG folders once the image was copied. Unacknowledged results stay in the outbox and are
// offered again (at-least-once; consumers key results by line and seq).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "station/outbox.h"

namespace gad::station {

class Sink {
 public:
  virtual ~Sink() = default;
  // The outbox keys pending deliveries by this name: jsonl, csv, stdout, mqtt, webhook, folders.
  virtual std::string name() const = 0;
  // Where it delivers, for log lines (no credentials).
  virtual std::string where() const = 0;
  // Delivers `items` in order; returns how many of them, from the first, were acknowledged.
  // Throws gad::Error when the destination cannot be reached (the line backs off and retries).
  virtual size_t deliver(const std::vector<OutboxItem>& items) = 0;
};

std::unique_ptr<Sink> jsonl_sink(const std::string& path);
// CSV rows line,seq,path,score,anomalous,error,time (score and verdict empty for a failed image).
std::unique_ptr<Sink> csv_sink(const std::string& path);
std::unique_ptr<Sink> stdout_sink();

struct MqttOptions {
  std::string url;      // mqtt://[user:password@]host[:port]/topic, or mqtts:// (TLS)
  std::string cafile;   // mqtts: the CA certificates (default: the system's)
  std::string line;     // client id and status topic: <topic>/status (retained "online"; will "offline")
  int ack_timeout_s = 10;
};
// Starts connecting at once (in the background, reconnecting with backoff after a drop).
std::unique_ptr<Sink> mqtt_sink(const MqttOptions& options);

// JSON POST per result; 2xx acknowledges it. The timeout bounds each request.
std::unique_ptr<Sink> webhook_sink(const std::string& url, int timeout_s);

// OK/NG folders: the image is copied to ok_dir (scored, not flagged) or ng_dir (flagged, or not
// scored: an image gad could not score is never filed as OK) as <seq>_<file name> (a frame, kept
// as a PNG until then: <seq>_frame.png). Then the processed file is kept, moved to done_dir, or
// deleted, as `done_action` says (keep | move | delete). A flagged image's overlay (its anomaly
// map, on the set's colour scale) goes beside it as <seq>_<stem>.overlay.png.
struct FolderOptions {
  std::string ok_dir, ng_dir, done_action = "keep", done_dir;
};
std::unique_ptr<Sink> folder_sink(const FolderOptions& options);
// The done action alone (what the line does when no folder sink does it).
void finish_file(const std::string& path, const std::string& done_action, const std::string& done_dir);

}  // namespace gad::station
