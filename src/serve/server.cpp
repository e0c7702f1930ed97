#include "serve/server.h"

#include "serve/http.h"
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <ctime>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "engine/score_json.h"
#include "maps/anomaly_map.h"
#include "image/image.h"
#include "util/base64.h"
#include "serve/store.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad::serve {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// An error with an HTTP status, thrown by request parsing and turned into {"error": ...}.
struct HttpError : std::runtime_error {
  int status;
  HttpError(int s, const std::string& m) : std::runtime_error(m), status(s) {}
};

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump() + "\n", "application/json");
}

void send_error(httplib::Response& res, int status, const std::string& message) {
  send_json(res, status, json{{"error", message}});
}

std::string random_id() {
  static std::mutex m;
  static std::random_device rd;
  std::lock_guard<std::mutex> lock(m);
  static const char* hex = "0123456789abcdef";
  std::string id;
  for (int i = 0; i < 4; ++i) {
    uint32_t v = rd();
    for (int j = 0; j < 8; ++j) id += hex[(v >> (4 * j)) & 15];
  }
  return id;
}

bool valid_id(const std::string& id) {
  if (id.size() != 32) return false;
  for (char c : id)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string utc_now_iso() {
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t t = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Media type of the request without parameters, lower case.
std::string media_type(const httplib::Request& req) {
  std::string ct = lower(req.get_header_value("Content-Type"));
  auto semi = ct.find(';');
  if (semi != std::string::npos) ct = ct.substr(0, semi);
  while (!ct.empty() && ct.back() == ' ') ct.pop_back();
  return ct;
}

// ---------------------------------------------------------------------------------------------
// Metrics (Prometheus text format).

class Metrics {
 public:
  static constexpr double kBuckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  static constexpr size_t kNB = sizeof(kBuckets) / sizeof(kBuckets[0]);

  void observe(const std::string& route, const std::string& method, int status, double seconds) {
    std::lock_guard<std::mutex> lock(m_);
    requests_[route + "\",method=\"" + method + "\",code=\"" + std::to_string(status)]++;
    auto& h = hist_[route];
    if (h.counts.empty()) h.counts.assign(kNB, 0);
    for (size_t i = 0; i < kNB; ++i)
      if (seconds <= kBuckets[i]) h.counts[i]++;
    h.count++;
    h.sum += seconds;
  }
  void batch(size_t images) {
    batches_++;
    images_ += images;
  }

  std::string render(int64_t queue_depth, int queue_capacity, int64_t refsets, const std::string& model,
                     const std::string& fingerprint, int workers) {
    std::ostringstream o;
    std::lock_guard<std::mutex> lock(m_);
    o << "# HELP gad_requests_total HTTP requests by route, method and status.\n# TYPE gad_requests_total counter\n";
    for (const auto& [k, v] : requests_) o << "gad_requests_total{route=\"" << k << "\"} " << v << "\n";
    o << "# HELP gad_request_duration_seconds HTTP request latency.\n# TYPE gad_request_duration_seconds histogram\n";
    for (const auto& [route, h] : hist_) {
      for (size_t i = 0; i < kNB; ++i)
        o << "gad_request_duration_seconds_bucket{route=\"" << route << "\",le=\"" << kBuckets[i] << "\"} " << h.counts[i]
          << "\n";
      o << "gad_request_duration_seconds_bucket{route=\"" << route << "\",le=\"+Inf\"} " << h.count << "\n";
      o << "gad_request_duration_seconds_sum{route=\"" << route << "\"} " << h.sum << "\n";
      o << "gad_request_duration_seconds_count{route=\"" << route << "\"} " << h.count << "\n";
    }
    o << "# HELP gad_queue_depth Images queued or being scored.\n# TYPE gad_queue_depth gauge\ngad_queue_depth "
      << queue_depth << "\n";
    o << "# HELP gad_queue_capacity Queue limit (beyond it: 429).\n# TYPE gad_queue_capacity gauge\ngad_queue_capacity "
      << queue_capacity << "\n";
    o << "# HELP gad_batches_total Model forward passes.\n# TYPE gad_batches_total counter\ngad_batches_total "
      << batches_.load() << "\n";
    o << "# HELP gad_images_scored_total Images scored.\n# TYPE gad_images_scored_total counter\ngad_images_scored_total "
      << images_.load() << "\n";
    o << "# HELP gad_refsets Stored reference sets.\n# TYPE gad_refsets gauge\ngad_refsets " << refsets << "\n";
    auto esc = [](std::string s) {
      std::string out;
      for (char c : s) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') { out += "\\n"; continue; }
        out += c;
      }
      return out;
    };
    o << "# HELP gad_model_info The model being served.\n# TYPE gad_model_info gauge\ngad_model_info{model=\""
      << esc(model) << "\",fingerprint=\"" << esc(fingerprint) << "\",workers=\"" << workers << "\"} 1\n";
    return o.str();
  }

 private:
  struct Hist {
    std::vector<uint64_t> counts;
    uint64_t count = 0;
    double sum = 0;
  };
  std::mutex m_;
  std::map<std::string, uint64_t> requests_;
  std::map<std::string, Hist> hist_;
  std::atomic<uint64_t> batches_{0}, images_{0};
};

std::string route_label(const std::string& path) {
  static const std::regex score_re(R"(/v1/refsets/[^/]+/score)"), one_re(R"(/v1/refsets/[^/]+)");
  if (path == "/healthz" || path == "/metrics" || path == "/openapi.json" || path == "/v1/refsets") return path;
  if (std::regex_match(path, score_re)) return "/v1/refsets/{id}/score";
  if (std::regex_match(path, one_re)) return "/v1/refsets/{id}";
  return "other";
}

// ---------------------------------------------------------------------------------------------
// The model queue: score items (one image each) and build tasks, drained by worker threads.

struct ScoreItem {
  std::string refset_id;
  std::shared_ptr<const Image> image;
  std::promise<ScoreRecord> result;
};

struct BuildResult {
  std::shared_ptr<const RefHandle> handle;
  std::string blob;
};

struct BuildTask {
  std::vector<Image> images;
  std::vector<ImageSource> sources;
  std::string class_name;
  std::promise<BuildResult> result;
};

class ModelQueue {
 public:
  ModelQueue(const ServeOptions& o, RefStore& store, Metrics& metrics) : opts_(o), store_(store), metrics_(metrics) {}

  void start(std::vector<std::unique_ptr<Engine>> engines) {
    engines_ = std::move(engines);
    for (auto& e : engines_) threads_.emplace_back([this, eng = e.get()] { work(*eng); });
  }

  // Stops after the queue is empty (every admitted item gets its answer).
  void stop() {
    {
      std::lock_guard<std::mutex> lock(m_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  int64_t depth() const { return depth_.load(); }

  // Admission: false when `n` more images would exceed the queue limit.
  bool admit(int n) {
    int64_t cur = depth_.load();
    do {
      if (cur + n > opts_.queue) return false;
    } while (!depth_.compare_exchange_weak(cur, cur + n));
    return true;
  }
  void release(int n) { depth_ -= n; }

  std::future<ScoreRecord> score(const std::string& id, std::shared_ptr<const Image> image) {
    auto item = std::make_unique<ScoreItem>();
    item->refset_id = id;
    item->image = std::move(image);
    auto f = item->result.get_future();
    {
      std::lock_guard<std::mutex> lock(m_);
      items_.push_back(std::move(item));
    }
    cv_.notify_one();
    return f;
  }

  std::future<BuildResult> build(std::vector<Image> images, std::vector<ImageSource> sources, const std::string& cls) {
    auto t = std::make_unique<BuildTask>();
    t->images = std::move(images);
    t->sources = std::move(sources);
    t->class_name = cls;
    auto f = t->result.get_future();
    {
      std::lock_guard<std::mutex> lock(m_);
      builds_.push_back(std::move(t));
    }
    cv_.notify_one();
    return f;
  }

  void cache_put(const std::string& id, std::shared_ptr<const RefHandle> h) {
    std::lock_guard<std::mutex> lock(cache_m_);
    cache_[id] = std::move(h);
  }
  void cache_erase(const std::string& id) {
    std::lock_guard<std::mutex> lock(cache_m_);
    cache_.erase(id);
  }

 private:
  std::shared_ptr<const RefHandle> resolve(Engine& engine, const std::string& id) {
    {
      std::lock_guard<std::mutex> lock(cache_m_);
      auto it = cache_.find(id);
      if (it != cache_.end()) return it->second;
    }
    auto blob = store_.blob(id);
    if (!blob) throw HttpError(404, "unknown reference set '" + id + "'");
    auto h = engine.references_from_bytes(*blob);
    cache_put(id, h);
    return h;
  }

  void work(Engine& engine) {
    for (;;) {
      std::unique_ptr<BuildTask> build;
      std::vector<std::unique_ptr<ScoreItem>> batch;
      {
        std::unique_lock<std::mutex> lock(m_);
        cv_.wait(lock, [&] { return stopping_ || !items_.empty() || !builds_.empty(); });
        if (items_.empty() && builds_.empty()) return;  // stopping and drained
        if (!builds_.empty() && (items_.empty() || build_turn_)) {
          build = std::move(builds_.front());
          builds_.pop_front();
          build_turn_ = false;
        } else {
          build_turn_ = true;
          batch.push_back(std::move(items_.front()));
          items_.pop_front();
          const std::string id = batch[0]->refset_id;
          auto deadline = Clock::now() + std::chrono::microseconds(static_cast<int64_t>(opts_.batch_wait_ms * 1000));
          // Moves queued items of the same set into the batch, up to the batch size.
          auto gather = [&] {
            for (auto it = items_.begin(); it != items_.end() && static_cast<int>(batch.size()) < opts_.batch;) {
              if ((*it)->refset_id == id) {
                batch.push_back(std::move(*it));
                it = items_.erase(it);
              } else {
                ++it;
              }
            }
          };
          for (;;) {
            gather();
            if (static_cast<int>(batch.size()) >= opts_.batch || stopping_) break;
            if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
              gather();  // the wait is over: take what arrived meanwhile
              break;
            }
          }
        }
      }
      if (build) {
        try {
          BuildResult r;
          r.handle = engine.build_reference_handle(build->images, build->sources, build->class_name);
          r.blob = engine.serialize_references(*r.handle);
          build->result.set_value(std::move(r));
        } catch (...) {
          build->result.set_exception(std::current_exception());
        }
        continue;
      }
      try {
        auto handle = resolve(engine, batch[0]->refset_id);
        std::vector<Image> images;
        images.reserve(batch.size());
        for (auto& it : batch) images.push_back(*it->image);
        auto records = engine.score_images(*handle, images, {}, opts_.batch);
        metrics_.batch(batch.size());
        for (size_t i = 0; i < batch.size(); ++i) batch[i]->result.set_value(std::move(records[i]));
      } catch (...) {
        auto e = std::current_exception();
        for (auto& it : batch) it->result.set_exception(e);
      }
    }
  }

  const ServeOptions& opts_;
  RefStore& store_;
  Metrics& metrics_;
  std::vector<std::unique_ptr<Engine>> engines_;
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<ScoreItem>> items_;
  std::deque<std::unique_ptr<BuildTask>> builds_;
  bool stopping_ = false, build_turn_ = false;
  std::atomic<int64_t> depth_{0};
  std::mutex cache_m_;
  std::unordered_map<std::string, std::shared_ptr<const RefHandle>> cache_;
};

// Admits `n` images into the model queue (429 with Retry-After when it is full) and releases the
// slots when the request is done, whatever happens.
struct Admission {
  ModelQueue& q;
  int n;
  Admission(ModelQueue& queue, int count, httplib::Response& res) : q(queue), n(count) {
    if (!q.admit(n)) {
      res.set_header("Retry-After", "1");
      throw HttpError(429, "server busy: model queue is full, retry later");
    }
  }
  ~Admission() { q.release(n); }
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;
};

// ---------------------------------------------------------------------------------------------
// Request parsing.

struct Upload {
  std::string name, bytes;
};

struct Decoded {
  std::vector<Image> images;
  std::vector<ImageSource> sources;
};

Decoded decode_uploads(const std::vector<Upload>& uploads) {
  Decoded d;
  for (size_t i = 0; i < uploads.size(); ++i) {
    const auto& u = uploads[i];
    const std::string name = "image " + std::to_string(i) + (u.name.empty() ? "" : " ('" + u.name + "')");
    try {
      d.images.push_back(
          decode_image_bytes(reinterpret_cast<const uint8_t*>(u.bytes.data()), u.bytes.size(), name));
    } catch (const Error& e) {
      throw HttpError(400, e.what());
    }
    d.sources.push_back({u.name.empty() ? "upload:" + std::to_string(i) : "upload:" + u.name,
                         sha256_hex(reinterpret_cast<const uint8_t*>(u.bytes.data()), u.bytes.size())});
  }
  return d;
}

json parse_json_body(const httplib::Request& req) {
  try {
    return json::parse(req.body);
  } catch (const std::exception& e) {
    throw HttpError(400, std::string("malformed JSON body: ") + e.what());
  }
}

std::vector<Upload> json_images(const json& body) {
  if (!body.is_object()) throw HttpError(400, "JSON body must be an object");
  if (!body.contains("images")) throw HttpError(400, "JSON body: missing \"images\" (array of base64 strings)");
  const auto& arr = body["images"];
  if (!arr.is_array()) throw HttpError(400, "JSON body: \"images\" must be an array of base64 strings");
  std::vector<Upload> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    const json* data = &arr[i];
    std::string name;
    if (arr[i].is_object()) {  // {"name": ..., "data": base64}
      if (!arr[i].contains("data") || !arr[i]["data"].is_string())
        throw HttpError(400, "JSON body: images[" + std::to_string(i) + "] needs a base64 \"data\" string");
      data = &arr[i]["data"];
      if (arr[i].contains("name") && arr[i]["name"].is_string()) name = arr[i]["name"].get<std::string>();
    } else if (!arr[i].is_string()) {
      throw HttpError(400, "JSON body: images[" + std::to_string(i) + "] is not a base64 string");
    }
    auto bytes = base64_decode(data->get<std::string>());
    if (!bytes) throw HttpError(400, "JSON body: images[" + std::to_string(i) + "] is not valid base64");
    out.push_back({name, std::move(*bytes)});
  }
  return out;
}

std::vector<Upload> multipart_images(const httplib::Request& req) {
  std::vector<Upload> out;
  for (const auto& [field, file] : req.files) {
    if (field == "class") continue;
    if (field != "images" && field != "image" && file.filename.empty()) continue;  // other text fields
    out.push_back({file.filename, file.content});
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

const json& openapi_document() {
  static const json doc = json::parse(R"JSON({
  "openapi": "3.0.3",
  "info": {"title": "gad serve", "version": ")JSON" GAD_VERSION R"JSON(",
    "description": "Generalist anomaly detection (InCTRL) as a service. Register a reference set (K normal images + class name) once, then score images against it. Errors are {\"error\": message}. With --token every request needs 'Authorization: Bearer <token>'. 'anomalous' is not returned: it needs a calibrated threshold, which gad does not have yet."},
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "schemas": {
      "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
      "RefSet": {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "class": {"type": "string"}, "k": {"type": "integer"},
        "created": {"type": "string", "format": "date-time"}, "fingerprint": {"type": "string"}, "bytes": {"type": "integer"}}},
      "ImagesJson": {"type": "object", "properties": {
        "class": {"type": "string", "description": "class name (registration only)"},
        "images": {"type": "array", "items": {"oneOf": [{"type": "string", "format": "byte"},
          {"type": "object", "properties": {"name": {"type": "string"}, "data": {"type": "string", "format": "byte"}}}]}}}},
      "ImagesMultipart": {"type": "object", "properties": {
        "class": {"type": "string"}, "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}},
      "Score": {"type": "object", "properties": {
        "index": {"type": "integer"}, "name": {"type": "string"}, "score": {"type": "number"}, "s_patch": {"type": "number"},
        "s_img": {"type": "number"}, "s_text": {"type": "number"}, "s_hol": {"type": "number"}, "ms": {"type": "number"},
        "width": {"type": "integer"}, "height": {"type": "integer"},
        "map_png": {"type": "string", "format": "byte", "description": "with ?map=1: residual map upsampled to the image size, 8-bit gray PNG (0..1 -> 0..255), base64"}}}
    },
    "responses": {
      "Error": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    }
  },
  "security": [{"bearer": []}],
  "paths": {
    "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text/plain; version=0.0.4"}}}},
    "/openapi.json": {"get": {"summary": "this document", "responses": {"200": {"description": "OpenAPI 3 document"}}}},
    "/v1/refsets": {
      "get": {"summary": "list reference sets", "responses": {"200": {"description": "{refsets: [RefSet]}"}}},
      "post": {"summary": "register a reference set (K images + class name); stored in one transaction",
        "requestBody": {"required": true, "content": {
          "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImagesMultipart"}},
          "application/json": {"schema": {"$ref": "#/components/schemas/ImagesJson"}}}},
        "responses": {"201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RefSet"}}}},
          "400": {"$ref": "#/components/responses/Error"}, "401": {"$ref": "#/components/responses/Error"},
          "413": {"$ref": "#/components/responses/Error"}, "415": {"$ref": "#/components/responses/Error"},
          "429": {"$ref": "#/components/responses/Error"}}}},
    "/v1/refsets/{id}": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
      "get": {"summary": "one reference set", "responses": {"200": {"description": "RefSet"}, "404": {"$ref": "#/components/responses/Error"}}},
      "delete": {"summary": "delete a reference set", "responses": {"200": {"description": "{deleted: id}"}, "404": {"$ref": "#/components/responses/Error"}}}},
    "/v1/refsets/{id}/score": {
      "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "map", "in": "query", "schema": {"type": "integer", "enum": [0, 1]}}],
      "post": {"summary": "score one or several images",
        "requestBody": {"required": true, "content": {
          "multipart/form-data": {"schema": {"$ref": "#/components/schemas/ImagesMultipart"}},
          "application/json": {"schema": {"$ref": "#/components/schemas/ImagesJson"}},
          "image/*": {"schema": {"type": "string", "format": "binary"}},
          "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "{refset, results: [Score]}"},
          "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
          "409": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"},
          "415": {"$ref": "#/components/responses/Error"},
          "429": {"description": "queue full; Retry-After header", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}
  }
})JSON");
  return doc;
}

json row_json(const RefRow& r) {
  return json{{"id", r.id}, {"class", r.class_name}, {"k", r.k}, {"created", r.created}, {"fingerprint", r.fingerprint},
              {"bytes", r.bytes}};
}

constexpr size_t kMaxHeaderBytes = 16 * 1024;

int g_signal_pipe[2] = {-1, -1};
extern "C" void on_stop_signal(int sig) {
  int saved = errno;
  ssize_t ignored = write(g_signal_pipe[1], &sig, sizeof sig);
  (void)ignored;
  errno = saved;
}
thread_local Clock::time_point t_request_start;
thread_local bool t_request_started = false;

}  // namespace

size_t parse_size(const std::string& text) {
  std::string s;
  for (char c : text)
    if (c != ' ') s += c;
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    fail("--max-body: cannot read '", text, "' (e.g. 20MB)");
  }
  std::string unit = lower(s.substr(pos));
  double mult = 1;
  if (unit == "" || unit == "b") mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") mult = 1024;
  else if (unit == "m" || unit == "mb" || unit == "mib") mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib") mult = 1024.0 * 1024 * 1024;
  else fail("--max-body: unknown unit '", unit, "' in '", text, "' (use B, KB, MB or GB)");
  if (!(v > 0) || !std::isfinite(v)) fail("--max-body: must be positive (got '", text, "')");
  return static_cast<size_t>(v * mult);
}

int run_server(const ServeOptions& o, const std::function<void(const std::string&)>& log) {
  if (o.workers < 1) fail("--workers: must be at least 1 (got ", o.workers, ")");
  if (o.queue < 1) fail("--queue: must be at least 1 (got ", o.queue, ")");
  if (o.max_k < 1) fail("--max-k: must be at least 1 (got ", o.max_k, ")");
  if (o.batch < 1) fail("--batch: must be at least 1 (got ", o.batch, ")");
  if (o.port < 0 || o.port > 65535) fail("--port: must be 0..65535 (got ", o.port, ")");
  if (o.db.empty()) fail("--db: a database path is required");

  // SIGTERM/SIGINT: an async-signal-safe handler writes to a pipe (whichever thread gets the
  // signal, including threads the libraries started); a watcher thread stops the server.
  if (pipe(g_signal_pipe) != 0) fail("cannot create the signal pipe");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  RefStore store(o.db);
  Metrics metrics;

  std::vector<std::unique_ptr<Engine>> engines;
  EngineOptions eo = o.engine;
  if (eo.threads == 0 && o.workers > 1)
    eo.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / o.workers);
  for (int i = 0; i < o.workers; ++i) engines.push_back(std::make_unique<Engine>(eo));
  const std::string model_desc = engines[0]->describe();
  const std::string fingerprint = engines[0]->fingerprint();
  log(model_desc);
  log("reference sets: " + o.db + " (" + std::to_string(store.count()) + " stored)");

  ModelQueue queue(o, store, metrics);
  queue.start(std::move(engines));

  httplib::Server svr;
  const int http_threads = o.http_threads;
  svr.new_task_queue = [http_threads] { return new httplib::ThreadPool(static_cast<size_t>(http_threads)); };
  svr.set_payload_max_length(o.max_body);
  svr.set_keep_alive_max_count(1000);
  svr.set_read_timeout(10, 0);
  svr.set_write_timeout(10, 0);

  const std::string expected_auth = o.token.empty() ? "" : "Bearer " + o.token;
  svr.set_pre_routing_handler([&](const httplib::Request& req, httplib::Response& res) {
    t_request_start = Clock::now();
    t_request_started = true;
    size_t header_bytes = 0;
    for (const auto& [k, v] : req.headers) header_bytes += k.size() + v.size() + 4;
    if (header_bytes > kMaxHeaderBytes) {
      send_error(res, 431, "request headers too large (" + std::to_string(header_bytes) + " bytes, at most " +
                               std::to_string(kMaxHeaderBytes) + ")");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (!expected_auth.empty() && req.get_header_value("Authorization") != expected_auth) {
      res.set_header("WWW-Authenticate", "Bearer");
      send_error(res, 401, "missing or wrong bearer token (Authorization: Bearer <token>)");
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg;
    switch (res.status) {
      case 400: msg = "bad request (malformed HTTP, headers or multipart body)"; break;
      case 404: msg = "no such endpoint"; break;
      case 413: msg = "request body too large (see --max-body)"; break;
      case 414: msg = "request URI too long"; break;
      case 415: msg = "unsupported media type"; break;
      default: msg = "HTTP error " + std::to_string(res.status);
    }
    send_error(res, res.status, msg);
  });
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    try {
      std::rethrow_exception(ep);
    } catch (const HttpError& e) {
      send_error(res, e.status, e.what());
    } catch (const Error& e) {
      send_error(res, 400, e.what());
    } catch (const std::exception& e) {
      send_error(res, 500, std::string("internal error: ") + e.what());
    } catch (...) {
      send_error(res, 500, "internal error");
    }
  });
  const bool verbose = o.verbose;
  svr.set_logger([&metrics, verbose](const httplib::Request& req, const httplib::Response& res) {
    double seconds = t_request_started ? std::chrono::duration<double>(Clock::now() - t_request_start).count() : 0;
    t_request_started = false;
    metrics.observe(route_label(req.path), req.method, res.status, seconds);
    if (verbose)
      std::fprintf(stderr, "gad: %s %s %d %.1f ms %zu B\n", req.method.c_str(), req.path.c_str(), res.status,
                   seconds * 1000, res.body.size());
  });

  svr.Get("/healthz", [&](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, json{{"status", "ok"}, {"queue_depth", queue.depth()}});
  });
  svr.Get("/openapi.json", [&](const httplib::Request&, httplib::Response& res) { send_json(res, 200, openapi_document()); });
  svr.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(queue.depth(), o.queue, store.count(), model_desc, fingerprint, o.workers),
                    "text/plain; version=0.0.4");
  });

  svr.Get("/v1/refsets", [&](const httplib::Request&, httplib::Response& res) {
    json arr = json::array();
    for (const auto& r : store.list()) arr.push_back(row_json(r));
    send_json(res, 200, json{{"refsets", arr}});
  });

  svr.Post("/v1/refsets", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string mt = media_type(req);
    std::string cls;
    std::vector<Upload> uploads;
    if (req.is_multipart_form_data()) {
      if (req.has_file("class")) cls = req.get_file_value("class").content;
      uploads = multipart_images(req);
    } else if (mt == "application/json") {
      json body = parse_json_body(req);
      uploads = json_images(body);
      if (body.contains("class")) {
        if (!body["class"].is_string()) throw HttpError(400, "JSON body: \"class\" must be a string");
        cls = body["class"].get<std::string>();
      }
    } else {
      throw HttpError(415, "unsupported Content-Type '" + req.get_header_value("Content-Type") +
                               "': use multipart/form-data (fields class, images) or application/json");
    }
    if (cls.empty()) throw HttpError(400, "missing class name (field \"class\")");
    if (cls.size() > 200) throw HttpError(400, "class name too long (at most 200 bytes)");
    if (uploads.empty()) throw HttpError(400, "no reference images (K must be at least 1)");
    if (static_cast<int>(uploads.size()) > o.max_k)
      throw HttpError(400, "too many reference images: K = " + std::to_string(uploads.size()) + ", at most " +
                               std::to_string(o.max_k));
    Decoded d = decode_uploads(uploads);
    const int k = static_cast<int>(d.images.size());
    Admission adm(queue, k, res);
    BuildResult built = queue.build(std::move(d.images), std::move(d.sources), cls).get();
    RefRow row;
    row.id = random_id();
    row.class_name = cls;
    row.k = k;
    row.created = utc_now_iso();
    row.fingerprint = fingerprint;
    row.bytes = static_cast<int64_t>(built.blob.size());
    store.insert(row, built.blob);  // committed before we answer
    queue.cache_put(row.id, built.handle);
    res.set_header("Location", "/v1/refsets/" + row.id);
    send_json(res, 201, row_json(row));
  });

  auto lookup = [&](const std::string& id) -> RefRow {
    if (!valid_id(id)) throw HttpError(404, "unknown reference set '" + id.substr(0, 64) + "' (ids are 32 hex digits)");
    auto row = store.get(id);
    if (!row) throw HttpError(404, "unknown reference set '" + id + "'");
    return *row;
  };

  svr.Get(R"(/v1/refsets/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
    send_json(res, 200, row_json(lookup(req.matches[1])));
  });
  svr.Delete(R"(/v1/refsets/([^/]+))", [&](const httplib::Request& req, httplib::Response& res) {
    std::string id = req.matches[1];
    lookup(id);
    if (!store.remove(id)) throw HttpError(404, "unknown reference set '" + id + "'");
    queue.cache_erase(id);
    send_json(res, 200, json{{"deleted", id}});
  });

  svr.Post(R"(/v1/refsets/([^/]+)/score)", [&](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    RefRow row = lookup(id);
    if (row.fingerprint != fingerprint)
      throw HttpError(409, "reference set '" + id + "' was made with another model (fingerprint " + row.fingerprint + ")");
    const std::string mt = media_type(req);
    std::vector<Upload> uploads;
    if (req.is_multipart_form_data()) {
      uploads = multipart_images(req);
    } else if (mt == "application/json") {
      uploads = json_images(parse_json_body(req));
    } else if (mt.rfind("image/", 0) == 0 || mt == "application/octet-stream") {
      uploads.push_back({"", req.body});
    } else {
      throw HttpError(415, "unsupported Content-Type '" + req.get_header_value("Content-Type") +
                               "': use image/*, application/octet-stream, multipart/form-data or application/json");
    }
    if (uploads.empty()) throw HttpError(400, "no images to score");
    if (static_cast<int>(uploads.size()) > o.max_images)
      throw HttpError(400, "too many images: " + std::to_string(uploads.size()) + ", at most " +
                               std::to_string(o.max_images) + " per request");
    const bool want_map = req.get_param_value("map") == "1" || req.get_param_value("map") == "true";
    Decoded d = decode_uploads(uploads);
    const int n = static_cast<int>(d.images.size());
    Admission adm(queue, n, res);
    std::vector<std::shared_ptr<const Image>> images;
    std::vector<std::future<ScoreRecord>> futures;
    for (auto& img : d.images) {
      images.push_back(std::make_shared<const Image>(std::move(img)));
      futures.push_back(queue.score(id, images.back()));
    }
    json results = json::array();
    std::exception_ptr first_error;
    std::vector<ScoreRecord> records;
    for (auto& f : futures) {  // wait for all, even after an error: the items reference our images
      try {
        records.push_back(f.get());
      } catch (...) {
        if (!first_error) first_error = std::current_exception();
      }
    }
    if (first_error) std::rethrow_exception(first_error);
    for (size_t i = 0; i < records.size(); ++i) {
      const auto& r = records[i];
      json j;
      j["index"] = i;
      if (!uploads[i].name.empty()) j["name"] = uploads[i].name;
      j.update(score_json(r));
      j["width"] = images[i]->width;
      j["height"] = images[i]->height;
      if (want_map) j["map_png"] = base64_encode(map_png8(map_to_image(r.residual_map, r.grid, r.geometry)));
      results.push_back(std::move(j));
    }
    send_json(res, 200, json{{"refset", id}, {"results", results}});
  });

  // Watcher: the first SIGTERM/SIGINT stops accepting; in-flight requests finish.
  std::atomic<bool> signalled{false};
  std::thread([&svr, &signalled, log] {
    int sig = 0;
    while (read(g_signal_pipe[0], &sig, sizeof sig) < 0 && errno == EINTR) {
    }
    signalled = true;
    log(std::string("received ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + ": draining in-flight requests");
    // A signal that arrives before listening started must still stop the server.
    while (!svr.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    svr.stop();
  }).detach();

  int port = o.port;
  if (port == 0) {
    port = svr.bind_to_any_port(o.host);
    if (port < 0) fail("cannot bind ", o.host, " (any port)");
  } else if (!svr.bind_to_port(o.host, port)) {
    fail("cannot bind ", o.host, ":", port, " (in use, or not a local address)");
  }
  log("listening on http://" + o.host + ":" + std::to_string(port));
  bool ok = svr.listen_after_bind();  // returns after stop(), once every connection thread finished
  queue.stop();
  if (!ok && !signalled) fail("server stopped unexpectedly");
  log("stopped cleanly");
  return 0;
}

}  // namespace gad::serve
