#include "station/sinks.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>

#include "util/csv.h"
#include "util/error.h"

namespace gad::station {
namespace fs = std::filesystem;

namespace {

// The CSV columns: the result's keys that every line has.
const char* const kCsvColumns[] = {"line", "seq", "path", "score", "anomalous", "error", "time"};

std::string csv_row(const std::string& body) {
  const auto j = nlohmann::json::parse(body);
  std::string row;
  for (const char* c : kCsvColumns) {
    if (!row.empty()) row += ',';
    if (!j.contains(c)) continue;  // a failed image: no score, no verdict — empty cells
    const auto& v = j[c];
    row += v.is_string() ? csv_field(v.get<std::string>()) : v.is_boolean() ? (v.get<bool>() ? "true" : "false") : v.dump();
  }
  return row;
}

// A file results are appended to, one line each, fsync'ed before they count as delivered:
// JSON lines, or CSV rows under a header written when the file is new.
class AppendFileSink : public Sink {
 public:
  AppendFileSink(const std::string& path, bool csv) : path_(path), csv_(csv) {
    const char* option = csv ? "--csv " : "--jsonl ";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) fail(option, path, ": cannot open for appending (", std::strerror(errno), ")");
    // A line torn by a crash mid-write is ended, so the next result starts a line of its own.
    char last = '\n';
    const off_t size = ::lseek(fd_, 0, SEEK_END);
    std::string start = size > 0 && ::pread(fd_, &last, 1, size - 1) == 1 && last != '\n' ? "\n" : "";
    if (csv && size == 0) {
      for (const char* c : kCsvColumns) start += std::string(start.empty() ? "" : ",") + c;
      start += "\n";
    }
    write_all(start);
  }
  ~AppendFileSink() override { ::close(fd_); }
  std::string name() const override { return csv_ ? "csv" : "jsonl"; }
  std::string where() const override { return path_; }
  size_t deliver(const std::vector<OutboxItem>& items) override {
    std::string text;
    for (const auto& it : items) text += (csv_ ? csv_row(it.body) : it.body) + "\n";
    write_all(text);
    if (::fsync(fd_) != 0) fail(path_, ": fsync failed (", std::strerror(errno), ")");
    return items.size();
  }

 private:
  void write_all(const std::string& text) {
    for (size_t done = 0; done < text.size();) {
      const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail(path_, ": write failed (", std::strerror(errno), ")");
      done += static_cast<size_t>(n);
    }
  }
  std::string path_;
  bool csv_;
  int fd_ = -1;
};

class StdoutSink : public Sink {
 public:
  std::string name() const override { return "stdout"; }
  std::string where() const override { return "stdout"; }
  size_t deliver(const std::vector<OutboxItem>& items) override {
    for (const auto& it : items) std::cout << it.body << '\n';
    std::cout.flush();
    if (!std::cout) fail("stdout: write failed");
    return items.size();
  }
};

// mqtt://[user:password@]host[:port]/topic
struct MqttUrl {
  bool tls = false;
  std::string user, password, host, topic;
  int port = 1883;
};

MqttUrl parse_mqtt_url(const std::string& url) {
  MqttUrl u;
  std::string rest;
  if (url.rfind("mqtt://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("mqtts://", 0) == 0) {
    rest = url.substr(8);
    u.tls = true;
    u.port = 8883;
  } else {
    fail("--mqtt ", url, ": expected mqtt://HOST[:PORT]/TOPIC or mqtts://...");
  }
  const auto slash = rest.find('/');
  if (slash == std::string::npos || slash + 1 >= rest.size()) fail("--mqtt ", url, ": no topic (mqtt://HOST:PORT/TOPIC)");
  u.topic = rest.substr(slash + 1);
  std::string authority = rest.substr(0, slash);
  if (const auto at = authority.rfind('@'); at != std::string::npos) {
    const std::string cred = authority.substr(0, at);
    authority = authority.substr(at + 1);
    const auto colon = cred.find(':');
    u.user = cred.substr(0, colon);
    if (colon != std::string::npos) u.password = cred.substr(colon + 1);
  }
  if (const auto colon = authority.rfind(':'); colon != std::string::npos) {
    try {
      u.port = std::stoi(authority.substr(colon + 1));
    } catch (const std::exception&) {
      fail("--mqtt ", url, ": bad port");
    }
    authority = authority.substr(0, colon);
  }
  if (authority.empty() || u.port <= 0 || u.port > 65535) fail("--mqtt ", url, ": bad host or port");
  if (u.topic.find_first_of("#+") != std::string::npos) fail("--mqtt ", url, ": the topic may not hold wildcards");
  u.host = authority;
  return u;
}

// libmosquitto's own thread keeps the connection (reconnecting with backoff); deliver() publishes
// with QoS 1 and waits for the PUBACKs, which the callbacks record.
class MqttSink : public Sink {
 public:
  explicit MqttSink(const MqttOptions& o) : url_(parse_mqtt_url(o.url)), ack_timeout_s_(o.ack_timeout_s) {
    status_topic_ = url_.topic + "/status";
    const std::string client = "gad-" + o.line + "-" + std::to_string(::getpid());
    m_ = mosquitto_new(client.c_str(), true, this);
    if (!m_) fail("--mqtt: cannot create a client");
    mosquitto_int_option(m_, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_will_set(m_, status_topic_.c_str(), 7, "offline", 1, true);
    if (!url_.user.empty()) mosquitto_username_pw_set(m_, url_.user.c_str(), url_.password.c_str());
    if (url_.tls) {
      const char* ca = o.cafile.empty() ? nullptr : o.cafile.c_str();
      if (mosquitto_tls_set(m_, ca, ca ? nullptr : "/etc/ssl/certs", nullptr, nullptr, nullptr) != MOSQ_ERR_SUCCESS)
        fail("--mqtt-cafile ", o.cafile, ": cannot use these CA certificates");
    }
    mosquitto_connect_callback_set(m_, [](mosquitto* m, void* self, int rc) { static_cast<MqttSink*>(self)->on_connect(m, rc); });
    mosquitto_disconnect_callback_set(m_, [](mosquitto*, void* self, int) { static_cast<MqttSink*>(self)->set_connected(false); });
    mosquitto_publish_callback_set(m_, [](mosquitto*, void* self, int mid) { static_cast<MqttSink*>(self)->on_puback(mid); });
    mosquitto_reconnect_delay_set(m_, 1, 10, true);
    mosquitto_connect_async(m_, url_.host.c_str(), url_.port, 10);  // a refused connect is retried by the loop
    if (mosquitto_loop_start(m_) != MOSQ_ERR_SUCCESS) {
      mosquitto_destroy(m_);
      fail("--mqtt: cannot start the client thread");
    }
  }
  ~MqttSink() override {
    if (connected()) {  // a clean goodbye: the will is only for a lost connection
      int mid = 0;
      mosquitto_publish(m_, &mid, status_topic_.c_str(), 7, "offline", 1, true);
      wait_for({mid}, 2);
    }
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, true);
    mosquitto_destroy(m_);
  }
  std::string name() const override { return "mqtt"; }
  std::string where() const override {
    return std::string(url_.tls ? "mqtts://" : "mqtt://") + url_.host + ":" + std::to_string(url_.port) + "/" + url_.topic;
  }
  size_t deliver(const std::vector<OutboxItem>& items) override {
    if (!connected()) fail(where(), ": not connected to the broker");
    std::vector<int> mids;
    for (const auto& it : items) {
      int mid = 0;
      const int rc = mosquitto_publish(m_, &mid, url_.topic.c_str(), static_cast<int>(it.body.size()), it.body.data(), 1, false);
      if (rc != MOSQ_ERR_SUCCESS) break;
      mids.push_back(mid);
    }
    if (mids.empty()) fail(where(), ": publish failed (not connected)");
    return wait_for(mids, ack_timeout_s_);
  }

 private:
  void on_connect(mosquitto* m, int rc) {
    if (rc != 0) return;  // refused (bad credentials, ...): the loop retries
    mosquitto_publish(m, nullptr, status_topic_.c_str(), 6, "online", 1, true);
    set_connected(true);
  }
  void set_connected(bool c) {
    std::lock_guard<std::mutex> lock(mutex_);
    connected_ = c;
    changed_.notify_all();
  }
  bool connected() {
    std::lock_guard<std::mutex> lock(mutex_);
    return connected_;
  }
  void on_puback(int mid) {
    std::lock_guard<std::mutex> lock(mutex_);
    acked_.insert(mid);
    changed_.notify_all();
  }
  // How many of `mids`, from the first, were acknowledged within the timeout.
  size_t wait_for(const std::vector<int>& mids, int timeout_s) {
    std::unique_lock<std::mutex> lock(mutex_);
    auto prefix = [&] {
      size_t n = 0;
      while (n < mids.size() && acked_.count(mids[n])) ++n;
      return n;
    };
    changed_.wait_for(lock, std::chrono::seconds(timeout_s), [&] { return prefix() == mids.size() || !connected_; });
    const size_t n = prefix();
    for (int mid : mids) acked_.erase(mid);
    return n;
  }

  MqttUrl url_;
  int ack_timeout_s_;
  std::string status_topic_;
  mosquitto* m_ = nullptr;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool connected_ = false;
  std::set<int> acked_;
};

class WebhookSink : public Sink {
 public:
  WebhookSink(const std::string& url, int timeout_s) : url_(url), timeout_s_(timeout_s) {
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0)
      fail("--webhook ", url, ": expected an http:// or https:// URL");
  }
  std::string name() const override { return "webhook"; }
  std::string where() const override { return url_; }
  size_t deliver(const std::vector<OutboxItem>& items) override {
    size_t done = 0;
    for (const auto& it : items) {
      const long status = post(it.body);
      if (status >= 200 && status < 300) {
        ++done;
        continue;
      }
      if (done == 0) fail(url_, ": answered HTTP ", status);
      break;
    }
    return done;
  }

 private:
  // The HTTP status of one POST; throws when the server cannot be reached or times out.
  long post(const std::string& body) {
    std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
    if (!curl) fail(url_, ": cannot create an HTTP client");
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> headers(
        curl_slist_append(nullptr, "Content-Type: application/json"), curl_slist_free_all);
    curl_easy_setopt(curl.get(), CURLOPT_URL, url_.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers.get());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
    curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT, static_cast<long>(timeout_s_));
    curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, +[](char*, size_t s, size_t n, void*) { return s * n; });
    const CURLcode rc = curl_easy_perform(curl.get());
    if (rc != CURLE_OK) fail(url_, ": ", curl_easy_strerror(rc));
    long status = 0;
    curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
    return status;
  }
  std::string url_;
  int timeout_s_;
};

class FolderSink : public Sink {
 public:
  explicit FolderSink(const FolderOptions& o) : o_(o) {}
  std::string name() const override { return "folders"; }
  std::string where() const override { return "ok: " + o_.ok_dir + ", ng: " + o_.ng_dir; }
  size_t deliver(const std::vector<OutboxItem>& items) override {
    for (const auto& it : items) {
      const auto j = nlohmann::json::parse(it.body);
      // A frame was kept as a PNG until filed; a file is filed from the hot folder.
      const bool frame = j.contains("frame_file");
      const std::string path = frame ? j["frame_file"].get<std::string>() : j.value("path", "");
      // Only a scored image that was not flagged is OK; everything else goes to review.
      const bool ok = !j.contains("error") && j.contains("anomalous") && !j["anomalous"].get<bool>();
      const std::string dir = ok ? o_.ok_dir : o_.ng_dir;
      std::error_code ec;
      if (!dir.empty() && fs::exists(path, ec)) {
        fs::create_directories(dir, ec);
        const std::string name = frame ? "frame.png" : fs::path(path).filename().string();
        const fs::path to = fs::path(dir) / (std::to_string(it.seq) + "_" + name);
        fs::copy_file(path, to, fs::copy_options::overwrite_existing, ec);
        if (ec) fail(dir, ": cannot copy ", path, " (", ec.message(), ")");
      }
      if (j.contains("overlay_file")) {  // an NG image's map, kept until filed beside it
        const std::string overlay = j["overlay_file"];
        const std::string stem = frame ? "frame" : fs::path(path).stem().string();
        if (fs::exists(overlay, ec)) {
          fs::copy_file(overlay, fs::path(o_.ng_dir) / (std::to_string(it.seq) + "_" + stem + ".overlay.png"),
                        fs::copy_options::overwrite_existing, ec);
          if (ec) fail(o_.ng_dir, ": cannot copy ", overlay, " (", ec.message(), ")");
          fs::remove(overlay, ec);
        }
      }
      if (frame) fs::remove(path, ec);
      else finish_file(path, o_.done_action, o_.done_dir);
    }
    return items.size();
  }

 private:
  FolderOptions o_;
};

}  // namespace

std::unique_ptr<Sink> jsonl_sink(const std::string& path) { return std::make_unique<AppendFileSink>(path, false); }
std::unique_ptr<Sink> csv_sink(const std::string& path) { return std::make_unique<AppendFileSink>(path, true); }
std::unique_ptr<Sink> stdout_sink() { return std::make_unique<StdoutSink>(); }
std::unique_ptr<Sink> mqtt_sink(const MqttOptions& options) { return std::make_unique<MqttSink>(options); }
std::unique_ptr<Sink> webhook_sink(const std::string& url, int timeout_s) {
  return std::make_unique<WebhookSink>(url, timeout_s);
}
std::unique_ptr<Sink> folder_sink(const FolderOptions& options) { return std::make_unique<FolderSink>(options); }

void finish_file(const std::string& path, const std::string& done_action, const std::string& done_dir) {
  std::error_code ec;
  if (done_action == "delete") {
    fs::remove(path, ec);
  } else if (done_action == "move" && fs::exists(path, ec)) {
    fs::create_directories(done_dir, ec);
    fs::rename(path, fs::path(done_dir) / fs::path(path).filename(), ec);
    if (ec) fail("--done-dir ", done_dir, ": cannot move ", path, " (", ec.message(), ")");
  }
}

}  // namespace gad::station
