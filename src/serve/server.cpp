#include "serve/server.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <ctime>
#include <deque>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <string_view>
#include <thread>

#include "engine/score_json.h"
#include "image/header.h"
#include "image/image.h"
#include "maps/anomaly_map.h"
#include "serve/http.h"
#include "serve/connection_guard.h"
#include "serve/http_error.h"
#include "serve/metrics.h"
#include "serve/model_queue.h"
#include "serve/openapi.h"
#include "serve/ref_cache.h"
#include "serve/store.h"
#include "serve/uploads.h"
#include "util/base64.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad::serve {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

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

json row_json(const RefRow& r) {
  return json{{"id", r.id},           {"class", r.class_name},        {"k", r.k},
              {"created", r.created}, {"fingerprint", r.fingerprint}, {"bytes", r.bytes},
              {"version", r.version}};
}

// Why HOST:PORT cannot be listened on ("" when it can), checked with the socket options the server
// uses: SO_REUSEADDR (restarts do not wait for TIME_WAIT) but not SO_REUSEPORT, so a port another
// socket listens on — with or without SO_REUSEADDR — is refused instead of silently shared.
std::string listen_problem(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
  if (rc != 0) return std::string("cannot resolve the address (") + gai_strerror(rc) + ")";
  std::string problem = "no usable address";
  for (addrinfo* ai = found; ai; ai = ai->ai_next) {
    const int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      problem = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    int yes = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0)
      problem = std::strerror(errno);
    else if (::listen(fd, 1) != 0)
      problem = std::strerror(errno);
    else
      problem.clear();
    close(fd);
    if (problem.empty()) break;
  }
  freeaddrinfo(found);
  if (problem == std::strerror(EADDRINUSE)) problem += " (another socket holds this port)";
  return problem;
}

// A quarter of the memory this process may use: physical RAM, or the cgroup limit when lower.
size_t default_cache_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  uint64_t total = pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 4ull << 30;
  std::ifstream cgroup("/sys/fs/cgroup/memory.max");
  uint64_t limit = 0;
  if (cgroup >> limit && limit > 0 && limit < total) total = limit;
  return static_cast<size_t>(total / 4);
}

// Admits `n` images into the model queue (429 with Retry-After when it is full) and releases the
// slots when the request is done, whatever happens.
struct Admission {
  ModelQueue& q;
  int n;
  Admission(ModelQueue& queue, int count, httplib::Response& res) : q(queue), n(count) {
    if (!q.admit(n)) {
      res.set_header("Retry-After", "1");
      throw HttpError(429, "queue_full", "server busy: model queue is full, retry later");
    }
  }
  ~Admission() { q.release(n); }
  Admission(const Admission&) = delete;
  Admission& operator=(const Admission&) = delete;
};

struct BuiltSet {
  References handle;
  std::string blob;
};

constexpr size_t kMaxHeaderBytes = 16 * 1024;

// Per connection thread: when the current request started and why it was refused (for /metrics).
thread_local Clock::time_point t_request_start;
thread_local bool t_request_started = false;
thread_local std::string t_reject_reason;
thread_local std::string t_request_id;

// A client's (or proxy's) X-Request-Id when it is short plain text, else a fresh one: either way
// echoed in the response and the log line, so one request can be followed through nginx and
// replicas.
std::string request_id_of(const httplib::Request& req) {
  std::string id = req.get_header_value("X-Request-Id");
  bool ok = !id.empty() && id.size() <= 128;
  for (char c : id)
    ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' || c == ':');
  return ok ? id : random_id();
}

const char* httplib_reason(int status) {
  switch (status) {
    case 400:
      return "malformed_request";
    case 404:
      return "no_such_endpoint";
    case 413:
      return "body_too_large";
    case 414:
      return "uri_too_long";
    case 415:
      return "unsupported_media_type";
    default:
      return "http_error";
  }
}

}  // namespace

size_t parse_size(const std::string& text, const std::string& option) {
  std::string s;
  for (char c : text)
    if (c != ' ') s += c;
  size_t pos = 0;
  double v = 0;
  try {
    v = std::stod(s, &pos);
  } catch (...) {
    fail(option, ": cannot read '", text, "' (e.g. 20MB)");
  }
  std::string unit = lower(s.substr(pos));
  double mult = 1;
  if (unit == "" || unit == "b")
    mult = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib")
    mult = 1024;
  else if (unit == "m" || unit == "mb" || unit == "mib")
    mult = 1024.0 * 1024;
  else if (unit == "g" || unit == "gb" || unit == "gib")
    mult = 1024.0 * 1024 * 1024;
  else
    fail(option, ": unknown unit '", unit, "' in '", text, "' (use B, KB, MB or GB)");
  if (!(v > 0) || !std::isfinite(v) || v * mult > 1e18)
    fail(option, ": must be positive and finite (got '", text, "')");
  return static_cast<size_t>(v * mult);
}

struct Server::Impl {
  ServeOptions o;
  Log log;
  std::unique_ptr<RefStore> store;
  RefCache cache;
  Metrics metrics;
  ModelQueue queue;
  httplib::Server svr;
  int port = 0;
  int listen_fd = -1;

  std::atomic<bool> ready{false};  // set (release) after model_desc and fingerprint
  std::string model_desc, fingerprint;

  std::thread http;
  std::mutex http_m;
  std::condition_variable http_cv;
  bool http_done = false, stop_sent = false;
  std::atomic<bool> draining{false}, http_failed{false};
  std::unique_ptr<ConnectionGuard> guard;  // last: joined before the members it reports to

  Impl(const ServeOptions& options, Log l)
      : o(options),
        log(std::move(l)),
        store(open_store(o.db)),
        cache(o.cache_bytes ? o.cache_bytes : default_cache_bytes()),
        queue(QueueOptions{o.batch, o.batch_wait_ms, o.queue, o.engine.max_pixels}, *store, cache) {
    configure();
    bind();
    routes();
  }

  ~Impl() {
    stop_http();
    queue.stop();
  }

  void configure() {
    const int threads = o.http_threads;
    svr.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
    svr.set_payload_max_length(o.max_body);
    svr.set_keep_alive_max_count(100);
    svr.set_keep_alive_timeout(o.keep_alive_s);
    svr.set_read_timeout(o.read_timeout_s, 0);
    svr.set_write_timeout(o.read_timeout_s, 0);
    svr.set_socket_options([this](socket_t fd) {
      int yes = 1;
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      listen_fd = fd;
    });
  }

  void bind() {
    const std::string where = o.host + ":" + std::to_string(o.port);
    if (o.port == 0) {
      port = svr.bind_to_any_port(o.host);
      if (port < 0) fail("cannot listen on ", o.host, " (any port): ", listen_problem(o.host, 0));
    } else {
      const std::string problem = listen_problem(o.host, o.port);
      if (!problem.empty()) fail("cannot listen on ", where, ": ", problem);
      if (!svr.bind_to_port(o.host, o.port))
        fail("cannot listen on ", where, ": bind failed (", std::strerror(errno), ")");
      port = o.port;
    }
    // httplib listens with a backlog of 5: connection bursts beyond it would wait for SYN retries.
    if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  }

  void start() {
    // Requests larger than the 16 KB header check plus the largest body could ever be, or whose
    // headers take longer than two read timeouts. The byte count is the kernel's for the whole
    // connection, and under load a body can arrive before httplib has read the headers, so the
    // body's allowance must be in it (a 64 KB cap dropped ordinary uploads on a busy machine).
    guard = std::make_unique<ConnectionGuard>(port, 4 * kMaxHeaderBytes + o.max_body, std::max(2.0, 2.0 * o.read_timeout_s),
                                              [this](const char* reason) { metrics.rejected(reason); });
    guard->start();
    http = std::thread([this] {
      bool ok = false;
      try {
        ok = svr.listen_after_bind();
      } catch (const std::exception& e) {
        log(std::string("HTTP server error: ") + e.what());
      }
      if (!ok && !draining) http_failed = true;
      std::lock_guard<std::mutex> lock(http_m);
      http_done = true;
      http_cv.notify_all();
    });
  }

  void load_model() {
    std::vector<std::unique_ptr<Detector>> engines;
    for (int i = 0; i < o.workers; ++i) engines.push_back(std::make_unique<Detector>(o.engine));
    model_desc = engines[0]->describe();
    fingerprint = engines[0]->fingerprint();
    queue.start(std::move(engines));
    ready.store(true, std::memory_order_release);
  }

  // Asks the HTTP loop to stop once it is running (a stop before it runs would be lost).
  void request_stop() {
    if (!stop_sent && svr.is_running()) {
      svr.stop();
      stop_sent = true;
    }
  }

  bool wait_http(std::chrono::milliseconds wait) {
    if (!http.joinable()) return true;
    const auto deadline = Clock::now() + wait;
    std::unique_lock<std::mutex> lock(http_m);
    while (!http_done) {
      request_stop();
      if (Clock::now() >= deadline) return false;
      http_cv.wait_for(lock, std::chrono::milliseconds(10));
    }
    lock.unlock();
    http.join();
    return true;
  }

  void stop_http() {
    draining = true;
    while (!wait_http(std::chrono::seconds(1))) {
    }
  }

  // ---- request handling --------------------------------------------------------------------

  void require_ready(httplib::Response& res) const {
    if (ready.load(std::memory_order_acquire)) return;
    res.set_header("Retry-After", "1");
    throw HttpError(503, "loading", "the model is still loading; retry shortly (GET /healthz says when it is ready)");
  }

  RefRow lookup(const std::string& id) {
    if (!valid_id(id))
      throw HttpError(404, "unknown_refset",
                      "unknown reference set '" + id.substr(0, 64) + "' (ids are 32 hex digits)");
    auto row = store->get(id);
    if (!row) throw HttpError(404, "unknown_refset", "unknown reference set '" + id + "'");
    return *row;
  }

  RefRow lookup_for_model(const std::string& id) {
    RefRow row = lookup(id);
    if (row.fingerprint != fingerprint)
      throw HttpError(409, "other_model",
                      "reference set '" + id + "' was made with another model (fingerprint " + row.fingerprint + ")");
    return row;
  }

  // Scores every upload against set `id` (admitted as one unit); records in upload order.
  // `version`: the set's row as this request read it (an older cached copy is reloaded).
  std::vector<ScoreRecord> score_all(const std::string& id, int64_t version, const Uploads& u, httplib::Response& res) {
    Admission admission(queue, static_cast<int>(u.images.size()), res);
    std::vector<std::future<ScoreRecord>> futures;
    for (size_t i = 0; i < u.images.size(); ++i)
      futures.push_back(queue.score(id, version, u.images[i].bytes, image_name(i, u.images[i])));
    std::vector<ScoreRecord> records;
    std::exception_ptr first_error;
    for (auto& f : futures) {  // wait for all, even after an error: the items view our uploads
      try {
        records.push_back(f.get());
      } catch (...) {
        if (!first_error) first_error = std::current_exception();
      }
    }
    if (first_error) std::rethrow_exception(first_error);
    return records;
  }

  void post_refset(const httplib::Request& req, httplib::Response& res) {
    require_ready(res);
    Uploads u = read_uploads(req, Route::Register);
    if (u.class_name.empty()) throw HttpError(400, "no_class", "missing class name (field \"class\")");
    if (u.class_name.size() > 200) throw HttpError(400, "bad_class", "class name too long (at most 200 bytes)");
    check_images(u, std::min(o.max_k, o.queue), "reference images", o.engine.max_pixels);
    std::vector<ImageSource> sources;
    for (size_t i = 0; i < u.images.size(); ++i) {
      const auto& img = u.images[i];
      sources.push_back({img.name.empty() ? "upload:" + std::to_string(i) : "upload:" + img.name,
                         sha256_hex(reinterpret_cast<const uint8_t*>(img.bytes.data()), img.bytes.size())});
    }
    const int k = static_cast<int>(u.images.size());
    Admission admission(queue, k, res);
    BuiltSet built = queue
                         .run<BuiltSet>([&](Detector& engine) {
                           std::vector<PixelTensor> pixels;  // one full-resolution image at a time
                           for (size_t i = 0; i < u.images.size(); ++i)
                             for (auto& v : queue.prepare_reference(engine, u.images[i].bytes, image_name(i, u.images[i])))
                               pixels.push_back(std::move(v));
                           auto handle = build_references(engine, pixels, sources, u.class_name);
                           return BuiltSet{handle, handle.to_bytes()};
                         })
                         .get();
    RefRow row;
    row.id = random_id();
    row.class_name = u.class_name;
    row.k = k;
    row.created = utc_now_iso();
    row.fingerprint = fingerprint;
    row.bytes = static_cast<int64_t>(built.blob.size());
    store->insert(row, built.blob);  // committed before we answer
    cache.put(row.id, built.handle, built.handle.memory_bytes(), cache.generation(), row.version);
    res.set_header("Location", "/v1/refsets/" + row.id);
    send_json(res, 201, row_json(row));
  }

  void post_score(const httplib::Request& req, httplib::Response& res) {
    require_ready(res);
    const std::string id = req.matches[1];
    const RefRow row = lookup_for_model(id);  // every request reads the row: changes by other replicas show at once
    Uploads u = read_uploads(req, Route::Score);
    check_images(u, std::min(o.max_images, o.queue), "images to score", o.engine.max_pixels);
    const bool want_map = req.get_param_value("map") == "1" || req.get_param_value("map") == "true";
    std::vector<ScoreRecord> records = score_all(id, row.version, u, res);
    json results = json::array();
    for (size_t i = 0; i < records.size(); ++i) {
      const auto& r = records[i];
      json j;
      j["index"] = i;
      if (!u.images[i].name.empty()) j["name"] = u.images[i].name;
      j.update(score_json(r));
      j["width"] = r.geometry.src_w;
      j["height"] = r.geometry.src_h;
      if (want_map && r.ok()) j["map_png"] = base64_encode(map_png8(map_to_image(r.residual_map, r.grid, r.geometry)));
      results.push_back(std::move(j));
    }
    send_json(res, 200, json{{"refset", id}, {"results", results}});
  }

  // The `gad refs calibrate --normals` rule on uploaded normals: score them, take the conformal
  // threshold, store the set with it (one transaction) and put the new version in the cache.
  void post_calibrate(const httplib::Request& req, httplib::Response& res) {
    require_ready(res);
    const std::string id = req.matches[1];
    const RefRow row = lookup_for_model(id);
    Uploads u = read_uploads(req, Route::Calibrate);
    if (!u.far && req.has_param("far")) u.far = req.get_param_value("far");
    const double far = u.far ? parse_far(*u.far) : 0.05;
    check_images(u, std::min(o.max_images, o.queue), "normal images", o.engine.max_pixels);
    const bool allow_few = req.get_param_value("allow_few") == "1" || req.get_param_value("allow_few") == "true";
    std::vector<double> scores;
    double map_top = 0;
    for (const auto& r : score_all(id, row.version, u, res)) {
      if (!r.ok()) throw HttpError(422, "normal_not_scored", "normal image " + r.path + ": " + r.error);
      scores.push_back(r.score);
      for (float v : r.residual_map) map_top = std::max(map_top, static_cast<double>(v));
    }
    std::string warning;
    BuiltSet built = queue
                         .run<BuiltSet>([&](Detector& engine) {
                           auto handle = engine.calibrate_scores(queue.resolve(engine, id, row.version), scores,
                                                                 "conformal-heldout", {far, allow_few}, &warning, map_top);
                           return BuiltSet{handle, handle.to_bytes()};
                         })
                         .get();
    const Threshold t = *built.handle.threshold();
    const auto version = store->update_blob(id, built.blob);
    if (!version) throw HttpError(404, "unknown_refset", "reference set '" + id + "' was deleted during calibration");
    cache.replace(id, built.handle, built.handle.memory_bytes(), *version);
    json body{{"refset", id}};
    body.update(threshold_json(t));
    if (!warning.empty()) body["warning"] = warning;
    send_json(res, 200, body);
  }

  ServerState state() {
    ServerState s;
    s.ready = ready.load(std::memory_order_acquire);
    s.queue_depth = queue.depth();
    s.queue_capacity = o.queue;
    try {
      s.refsets = store->count();
    } catch (const HttpError&) {  // the store is unreachable: /metrics still answers (and /readyz says so)
      s.refsets = -1;
    }
    s.batches = queue.batches();
    s.images_scored = queue.images_scored();
    s.cache = cache.stats();
    if (s.ready) {
      s.model = model_desc;
      s.fingerprint = fingerprint;
    }
    s.workers = o.workers;
    return s;
  }

  void routes() {
    const std::string expected_auth = o.token.empty() ? "" : "Bearer " + o.token;
    svr.set_pre_routing_handler([this, expected_auth](const httplib::Request& req, httplib::Response& res) {
      t_request_start = Clock::now();
      t_request_started = true;
      t_request_id = request_id_of(req);
      res.set_header("X-Request-Id", t_request_id);
      if (guard) guard->headers_done(req.remote_addr, req.remote_port);
      size_t header_bytes = 0;
      for (const auto& [k, v] : req.headers) header_bytes += k.size() + v.size() + 4;
      if (header_bytes > kMaxHeaderBytes) {
        t_reject_reason = "headers_too_large";
        send_error(res, 431,
                   "request headers too large (" + std::to_string(header_bytes) + " bytes, at most " +
                       std::to_string(kMaxHeaderBytes) + ")");
        return httplib::Server::HandlerResponse::Handled;
      }
      if (!expected_auth.empty() && req.get_header_value("Authorization") != expected_auth) {
        t_reject_reason = "unauthorized";
        res.set_header("WWW-Authenticate", "Bearer");
        send_error(res, 401, "missing or wrong bearer token (Authorization: Bearer <token>)");
        return httplib::Server::HandlerResponse::Handled;
      }
      return httplib::Server::HandlerResponse::Unhandled;
    });
    svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
      if (!res.body.empty()) return;  // our own error, already explained
      t_reject_reason = httplib_reason(res.status);
      std::string msg;
      switch (res.status) {
        case 400:
          msg = "bad request (malformed HTTP, headers or multipart body)";
          break;
        case 404:
          msg = "no such endpoint";
          break;
        case 413:
          msg = "request body too large (see --max-body)";
          break;
        case 414:
          msg = "request URI too long";
          break;
        case 415:
          msg = "unsupported media type";
          break;
        default:
          msg = "HTTP error " + std::to_string(res.status);
      }
      send_error(res, res.status, msg);
    });
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      try {
        std::rethrow_exception(ep);
      } catch (const HttpError& e) {
        t_reject_reason = e.reason;
        send_error(res, e.status, e.what());
      } catch (const Error& e) {
        t_reject_reason = "bad_request";
        send_error(res, http_status(e.kind()), e.what());
      } catch (const std::exception& e) {
        t_reject_reason = "internal_error";
        send_error(res, 500, std::string("internal error: ") + e.what());
      } catch (...) {
        t_reject_reason = "internal_error";
        send_error(res, 500, "internal error");
      }
    });
    svr.set_logger([this](const httplib::Request& req, const httplib::Response& res) {
      const double seconds =
          t_request_started ? std::chrono::duration<double>(Clock::now() - t_request_start).count() : 0;
      t_request_started = false;
      metrics.observe(route_label(req.path), req.method, res.status, seconds);
      if (guard) guard->request_done(req.remote_addr, req.remote_port);
      if (res.status >= 400) metrics.rejected(t_reject_reason.empty() ? httplib_reason(res.status) : t_reject_reason);
      t_reject_reason.clear();
      if (o.verbose)
        std::fprintf(stderr, "gad: %s %s %d %.1f ms %zu B id=%s\n", req.method.c_str(), req.path.substr(0, 200).c_str(),
                     res.status, seconds * 1000, res.body.size(), t_request_id.empty() ? "-" : t_request_id.c_str());
      t_request_id.clear();
    });

    svr.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      if (!ready.load(std::memory_order_acquire)) {
        t_reject_reason = "loading";
        res.set_header("Retry-After", "1");
        send_json(res, 503, json{{"status", "loading"}});
        return;
      }
      send_json(res, 200, json{{"status", "ok"}, {"queue_depth", queue.depth()}});
    });
    // Readiness, for a load balancer or Kubernetes readinessProbe: the model is loaded, the store
    // answers and the server is not draining. /healthz stays the liveness check.
    svr.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
      const bool loaded = ready.load(std::memory_order_acquire);
      const std::string store_state = loaded ? store->ping() : "not checked";
      const char* status = draining ? "draining" : !loaded ? "loading" : store_state != "ok" ? "store_unavailable" : "ready";
      json body{{"status", status}, {"model", loaded}, {"store", store_state}};
      if (std::string(status) == "ready") return send_json(res, 200, body);
      t_reject_reason = status;
      res.set_header("Retry-After", "1");
      send_json(res, 503, body);
    });
    svr.Get("/openapi.json",
            [](const httplib::Request&, httplib::Response& res) { send_json(res, 200, openapi_document()); });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(metrics.render(state()), "text/plain; version=0.0.4");
    });
    svr.Get("/v1/refsets", [this](const httplib::Request&, httplib::Response& res) {
      json arr = json::array();
      for (const auto& r : store->list()) arr.push_back(row_json(r));
      send_json(res, 200, json{{"refsets", arr}});
    });
    svr.Post("/v1/refsets", [this](const httplib::Request& req, httplib::Response& res) { post_refset(req, res); });
    svr.Get(R"(/v1/refsets/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      send_json(res, 200, row_json(lookup(req.matches[1])));
    });
    svr.Delete(R"(/v1/refsets/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      lookup(id);
      if (!store->remove(id)) throw HttpError(404, "unknown_refset", "unknown reference set '" + id + "'");
      cache.erase(id);
      send_json(res, 200, json{{"deleted", id}});
    });
    svr.Post(R"(/v1/refsets/([^/]+)/score)",
             [this](const httplib::Request& req, httplib::Response& res) { post_score(req, res); });
    svr.Post(R"(/v1/refsets/([^/]+)/calibrate)",
             [this](const httplib::Request& req, httplib::Response& res) { post_calibrate(req, res); });
  }
};

namespace {

void check_options(const ServeOptions& o) {
  if (o.workers < 1) fail("--workers: must be at least 1 (got ", o.workers, ")");
  if (o.queue < 1) fail("--queue: must be at least 1 (got ", o.queue, ")");
  if (o.max_k < 1) fail("--max-k: must be at least 1 (got ", o.max_k, ")");
  if (o.max_images < 1) fail("--max-images: must be at least 1 (got ", o.max_images, ")");
  if (o.batch < 1) fail("--batch: must be at least 1 (got ", o.batch, ")");
  if (!(o.batch_wait_ms >= 0 && o.batch_wait_ms <= 10000))
    fail("--batch-wait-ms: must be 0..10000 (got ", o.batch_wait_ms, ")");
  if (o.http_threads < 2) fail("--http-threads: must be at least 2 (got ", o.http_threads, ")");
  if (o.read_timeout_s < 1) fail("--read-timeout: must be at least 1 s (got ", o.read_timeout_s, ")");
  if (o.keep_alive_s < 1) fail("--keep-alive: must be at least 1 s (got ", o.keep_alive_s, ")");
  if (o.engine.max_pixels < 1) fail("--max-pixels: must be at least 1 (got ", o.engine.max_pixels, ")");
  if (o.port < 0 || o.port > 65535) fail("--port: must be 0..65535 (got ", o.port, ")");
  if (o.db.empty()) fail("--db: a database path is required");
}

}  // namespace

Server::Server(const ServeOptions& options, Log log) {
  check_options(options);
  impl_ = std::make_unique<Impl>(options, std::move(log));
  const auto cache = impl_->cache.stats();
  impl_->log("reference sets: " + impl_->store->describe() + " (" + std::to_string(impl_->store->count()) +
             " stored); in-memory cache up to " + std::to_string(cache.cap >> 20) + " MB" +
             (options.cache_bytes ? "" : " (a quarter of RAM; --cache-mb)"));
  impl_->log("listening on http://" + options.host + ":" + std::to_string(impl_->port));
}

Server::~Server() = default;

int Server::port() const { return impl_->port; }
void Server::start() { impl_->start(); }

void Server::load_model() {
  impl_->load_model();
  impl_->log(impl_->model_desc);
  impl_->log("ready");
}

bool Server::failed() const { return impl_->http_failed; }

void Server::begin_drain() {
  impl_->draining = true;
  std::lock_guard<std::mutex> lock(impl_->http_m);
  impl_->request_stop();
}

bool Server::wait_drained(std::chrono::milliseconds wait) {
  impl_->draining = true;
  if (!impl_->wait_http(wait)) return false;
  impl_->queue.stop();  // every handler has returned, so the queue is empty
  return true;
}

}  // namespace gad::serve
