#include "serve/server.h"

#include <netdb.h>
#include <netinet/in.h>
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
#include "util/time_text.h"

namespace gad::serve {
namespace {

using json = nlohmann::ordered_json;
using Clock = std::chrono::steady_clock;

// Messages quote what clients sent (ids from the URL, file names, bytes of a corrupt upload),
// which need not be UTF-8: invalid bytes become U+FFFD instead of an exception that would abort
// the server from its error handler.
void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n", "application/json");
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

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

json row_json(const RefRow& r) {
  return json{{"id", r.id},           {"class", r.class_name},        {"k", r.k},
              {"created", r.created}, {"fingerprint", r.fingerprint}, {"bytes", r.bytes},
              {"version", r.version}};
}

// A set's row and, when it is calibrated, its threshold (the fields POST .../calibrate answers)
// and every calibration, oldest first ("thresholds").
json refset_json(const RefRow& r, const std::vector<Threshold>& history) {
  json j = row_json(r);
  if (history.empty()) return j;
  j.update(threshold_json(history.back()));
  j["thresholds"] = json::array();
  for (const auto& t : history) j["thresholds"].push_back(threshold_json(t));
  return j;
}

// Whether every address `host` names is a loopback one (127.0.0.0/8, ::1), so that only this
// machine can connect. A wildcard (0.0.0.0, ::) or a name that does not resolve is not.
bool loopback_only(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &found) != 0) return false;
  bool loopback = found != nullptr;
  for (addrinfo* ai = found; ai; ai = ai->ai_next) {
    if (ai->ai_family == AF_INET) {
      const auto* a = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      loopback = loopback && (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (ai->ai_family == AF_INET6) {
      const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr)->sin6_addr;
      loopback = loopback && (IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127));
    } else {
      loopback = false;
    }
  }
  freeaddrinfo(found);
  return loopback;
}

constexpr size_t kMaxIdempotencyKey = 200;

// The Idempotency-Key header: "" when absent, else 1-200 bytes of printable ASCII (400 otherwise).
std::string idempotency_key(const httplib::Request& req) {
  if (!req.has_header("Idempotency-Key")) return "";
  const std::string key = req.get_header_value("Idempotency-Key");
  if (key.empty() || key.size() > kMaxIdempotencyKey)
    throw HttpError(400, "bad_idempotency_key",
                    "Idempotency-Key: must be 1 to " + std::to_string(kMaxIdempotencyKey) + " bytes (got " +
                        std::to_string(key.size()) + ")");
  for (char c : key)
    if (c < 0x20 || c > 0x7e) throw HttpError(400, "bad_idempotency_key", "Idempotency-Key: printable ASCII only");
  return key;
}

std::string sha256_of(const std::string& bytes) {
  return sha256_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// What a retry must repeat for its key to replay the first answer: the route and the uploads'
// content. Not the raw body: clients draw a new multipart boundary on every try.
std::string request_digest(const std::string& route, const std::vector<std::string>& fields) {
  std::string canonical = route;
  for (const auto& f : fields) canonical += "\n" + std::to_string(f.size()) + ":" + f;
  return sha256_of(canonical);
}

// The first line of a library message about an upload, less the temporary file it names (the
// library reads a .gadref through one): "<temporary>.gadref: made with another model ..."
// becomes "made with another model ...". Clients see neither server paths nor stack traces.
std::string upload_problem(const std::string& message) {
  std::string m = message.substr(0, message.find('\n'));
  const std::string marker = ".gadref: ";
  const auto at = m.find(marker);
  return at == std::string::npos ? m : m.substr(at + marker.size());
}

// An uploaded .gadref read by `engine`, which checks it against the model's fingerprint. What is
// wrong with the file is the client's: 400 naming the problem.
References read_refset_file(Detector& engine, const std::string& bytes) {
  try {
    return engine.references_from_bytes(bytes);
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::Io) throw;  // writing the temporary file failed: ours (500)
    throw HttpError(400, "bad_refset", "uploaded .gadref: " + upload_problem(e.what()));
  } catch (const std::exception& e) {  // a tensor check that a corrupt file trips
    throw HttpError(400, "bad_refset", "uploaded .gadref: unreadable (" + upload_problem(e.what()) + ")");
  }
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

  std::atomic<bool> ready{false};  // set (release) after model_desc, fingerprint and needs_class
  std::string model_desc, fingerprint;
  bool needs_class = true;  // new sets need a class name (InCTRL's text prior); AnomalyDINO's do not

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
    needs_class = engines[0]->needs_class_name();
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

  // Scores uploads [begin, end) against set `id` (admitted as one unit); records in upload order.
  // `version`: the set's row as this request read it (an older cached copy is reloaded).
  std::vector<ScoreRecord> score_range(const std::string& id, int64_t version, const Uploads& u, size_t begin,
                                       size_t end, httplib::Response& res) {
    Admission admission(queue, static_cast<int>(end - begin), res);
    std::vector<std::future<ScoreRecord>> futures;
    for (size_t i = begin; i < end; ++i)
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

  std::vector<ScoreRecord> score_all(const std::string& id, int64_t version, const Uploads& u, httplib::Response& res) {
    return score_range(id, version, u, 0, u.images.size(), res);
  }

  // The scores of a calibration's normals. More than the queue holds are scored in chunks of
  // half the queue, each admitted in turn (a 429 when one finds no room; nothing is stored), so
  // that --max-images, not --queue, bounds a calibration and score requests keep some room.
  // Scores of uploaded normals, all of which must have been scored (a threshold from the images
  // that happened to decode would not be the one asked for); `map_top` gets their largest patch
  // residual (the overlay scale).
  std::vector<double> calibration_scores(const std::string& id, int64_t version, const Uploads& u,
                                         httplib::Response& res, double& map_top) {
    const size_t n = u.images.size(), capacity = static_cast<size_t>(o.queue);
    const size_t chunk = n <= capacity ? n : std::max<size_t>(1, capacity / 2);
    std::vector<double> scores;
    for (size_t begin = 0; begin < n; begin += chunk) {
      const auto records = score_range(id, version, u, begin, std::min(n, begin + chunk), res);
      for (size_t i = 0; i < records.size(); ++i) {
        const ScoreRecord& r = records[i];
        if (!r.ok())
          throw HttpError(422, "normal_not_scored", "normal " + r.error);
        scores.push_back(r.score);
        for (float v : r.residual_map) map_top = std::max(map_top, static_cast<double>(v));
      }
    }
    return scores;
  }

  // The calibrations of a stored set, oldest first. They live in the set's bytes, not in its
  // row: read from the cached set, else loaded (and cached) on a worker. Unknown while the model
  // loads, for a set of another model, or for bytes that no longer load.
  std::vector<Threshold> thresholds_of(const RefRow& row) {
    if (!ready.load(std::memory_order_acquire) || row.fingerprint != fingerprint) return {};
    try {
      References set = cache.get(row.id, row.version);
      if (!set)
        set = queue.run<References>([&](Detector& engine) { return queue.resolve(engine, row.id, row.version); }).get();
      return set.threshold_history();
    } catch (const Error&) {
      return {};
    }
  }

  // A keyed request whose key is taken: the first answer again when it is the same request (200,
  // Idempotent-Replayed: true, the set as it is now), else 409.
  void replay(const IdempotencyRecord& taken, const std::string& digest, httplib::Response& res) {
    if (taken.request_sha256 != digest)
      throw HttpError(409, "idempotency_conflict",
                      "Idempotency-Key '" + taken.key + "' was already used with another request (it made reference set " +
                          taken.refset_id + ")");
    const RefRow row = lookup(taken.refset_id);
    res.set_header("Idempotent-Replayed", "true");
    res.set_header("Location", "/v1/refsets/" + row.id);
    send_json(res, 200, refset_json(row, thresholds_of(row)));
  }

  // Stores a new set (`row` with class and k), with the request's key when it has one, and
  // answers 201; when a concurrent try with the same key committed first, answers as its retry.
  void store_new_set(RefRow row, const BuiltSet& built, const std::string& key, const std::string& digest,
                     httplib::Response& res) {
    row.id = random_id();
    row.created = utc_now_iso_ms();
    row.fingerprint = fingerprint;
    row.bytes = static_cast<int64_t>(built.blob.size());
    if (key.empty())
      store->insert(row, built.blob);  // committed before we answer
    else if (auto taken = store->insert_keyed(row, built.blob, {key, digest, row.id}))
      return replay(*taken, digest, res);
    cache.put(row.id, built.handle, built.handle.memory_bytes(), cache.generation(), row.version);
    res.set_header("Location", "/v1/refsets/" + row.id);
    send_json(res, 201, refset_json(row, built.handle.threshold_history()));
  }

  void post_refset(const httplib::Request& req, httplib::Response& res) {
    require_ready(res);
    const std::string key = idempotency_key(req);
    Uploads u = read_uploads(req, Route::Register);
    // As in the CLI: only a scorer with a text prior (InCTRL) uses the class; AnomalyDINO's needs none.
    if (u.class_name.empty() && needs_class)
      throw HttpError(400, "no_class", "missing class name (field \"class\"; this model's scorer needs one)");
    if (u.class_name.size() > 200) throw HttpError(400, "bad_class", "class name too long (at most 200 bytes)");
    check_images(u, std::min(o.max_k, o.queue), "reference images", o.engine.max_pixels);
    std::vector<ImageSource> sources;
    for (size_t i = 0; i < u.images.size(); ++i) {
      const auto& img = u.images[i];
      sources.push_back({img.name.empty() ? "upload:" + std::to_string(i) : "upload:" + img.name,
                         sha256_hex(reinterpret_cast<const uint8_t*>(img.bytes.data()), img.bytes.size())});
    }
    std::vector<std::string> fields = {u.class_name};
    for (const auto& s : sources) fields.insert(fields.end(), {s.name, s.sha256});
    const std::string digest = request_digest("POST /v1/refsets", fields);
    if (!key.empty())
      if (auto taken = store->find_key(key)) return replay(*taken, digest, res);
    const int k = static_cast<int>(u.images.size());
    Admission admission(queue, k, res);
    BuiltSet built = queue
                         .run<BuiltSet>([&](Detector& engine) {
                           std::vector<PixelTensor> pixels;  // one full-resolution image at a time
                           for (size_t i = 0; i < u.images.size(); ++i)
                             for (auto& v : queue.prepare_reference(engine, u.images[i].bytes, image_name(i, u.images[i]), i))
                               pixels.push_back(std::move(v));
                           auto handle = build_references(engine, pixels, sources, u.class_name);
                           return BuiltSet{handle, handle.to_bytes()};
                         })
                         .get();
    RefRow row;
    row.class_name = u.class_name;
    row.k = k;
    store_new_set(row, built, key, digest, res);
  }

  // A .gadref file (from GET .../export of any server on the same model, or `gad refs build`)
  // registered as a new set. The file is read as the set's bytes are on every load, which checks
  // the model fingerprint; it is stored as this build writes it.
  void post_import(const httplib::Request& req, httplib::Response& res) {
    require_ready(res);
    const std::string key = idempotency_key(req);
    const std::string& file = read_refset_upload(req);
    const std::string digest = request_digest("POST /v1/refsets/import", {sha256_of(file)});
    if (!key.empty())
      if (auto taken = store->find_key(key)) return replay(*taken, digest, res);
    Admission admission(queue, 1, res);
    BuiltSet built = queue
                         .run<BuiltSet>([&](Detector& engine) {
                           References set = read_refset_file(engine, file);
                           return BuiltSet{set, set.to_bytes()};
                         })
                         .get();
    if (built.handle.k() > o.max_k)
      throw HttpError(400, "too_many_images",
                      "uploaded .gadref: K = " + std::to_string(built.handle.k()) + " reference images, more than --max-k (" +
                          std::to_string(o.max_k) + ")");
    RefRow row;
    row.class_name = built.handle.class_name();
    row.k = built.handle.k();
    store_new_set(row, built, key, digest, res);
  }

  // The set's .gadref: the stored bytes, References::to_bytes() of the set (threshold included).
  void get_export(const httplib::Request& req, httplib::Response& res) {
    const RefRow row = lookup(req.matches[1]);
    auto blob = store->load(row.id);
    if (!blob) throw HttpError(404, "unknown_refset", "unknown reference set '" + row.id + "'");
    res.status = 200;
    res.set_header("Content-Disposition", "attachment; filename=\"" + row.id + ".gadref\"");
    res.set_header("Content-Type", "application/octet-stream");
    res.body = std::move(blob->bytes);  // no copy: a set can be megabytes
  }

  // One JSON object per upload, in order: index, name, the score (or error), the image's size and,
  // when asked, the map as a PNG.
  static json results_json(const std::vector<ScoreRecord>& records, const Uploads& u, bool want_map) {
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
    return results;
  }

  void post_score(const httplib::Request& req, httplib::Response& res) {
    require_ready(res);
    const std::string id = req.matches[1];
    const RefRow row = lookup_for_model(id);  // every request reads the row: changes by other replicas show at once
    Uploads u = read_uploads(req, Route::Score);
    check_images(u, std::min(o.max_images, o.queue), "images to score", o.engine.max_pixels);
    const bool want_map = req.get_param_value("map") == "1" || req.get_param_value("map") == "true";
    std::vector<ScoreRecord> records = score_all(id, row.version, u, res);
    send_json(res, 200, json{{"refset", id}, {"results", results_json(records, u, want_map)}});
  }

  // Zero-shot: MuSc (the uploaded images score each other) or, on a server started with --scorer
  // winclip, WinCLIP's text prompts for ?class=NAME; on one worker, decoded one at a time; at most
  // --max-images (and the queue), each answered with its score or its own error.
  void post_zero_shot(const httplib::Request& req, httplib::Response& res) {
    require_ready(res);
    Uploads u = read_uploads(req, Route::Score);
    check_images(u, std::min(o.max_images, o.queue), "images to score", o.engine.max_pixels);
    ScoreOptions options;
    if (req.has_param("z")) {
      char* end = nullptr;
      const std::string z = req.get_param_value("z");
      options.zero_shot_z = std::strtod(z.c_str(), &end);
      if (z.empty() || *end || !(options.zero_shot_z > 0 && options.zero_shot_z < 1e6))
        throw HttpError(400, "bad_parameter", "z: must be a positive number (got '" + z + "')");
    }
    options.class_name = req.get_param_value("class");
    const bool want_map = req.get_param_value("map") == "1" || req.get_param_value("map") == "true";
    Admission admission(queue, static_cast<int>(u.images.size()), res);
    std::vector<ScoreRecord> records;
    std::string scorer;
    try {
      records = queue
                    .run<std::vector<ScoreRecord>>([&](Detector& engine) {
                      scorer = engine.scorer_summary().rfind("winclip", 0) == 0 ? "winclip" : "musc";
                      return score_zero_shot(
                          engine, u.images.size(), [&](size_t i) { return image_name(i, u.images[i]); },
                          [&](size_t i) {  // a bad upload is that image's error, not the request's
                            const auto& bytes = u.images[i].bytes;
                            return decode_image_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                                      image_name(i, u.images[i]), o.engine.max_pixels);
                          },
                          options);
                    })
                    .get();
    } catch (const Error& e) {  // too few images, bad options: the request's error
      throw HttpError(e.kind() == ErrorKind::ResourceLimit ? 413 : 400, "zero_shot_refused", e.what());
    }
    send_json(res, 200, json{{"scorer", scorer}, {"results", results_json(records, u, want_map)}});
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
    check_images(u, o.max_images, "normal images", o.engine.max_pixels);
    const bool allow_few = req.get_param_value("allow_few") == "1" || req.get_param_value("allow_few") == "true";
    double map_top = 0;
    const std::vector<double> scores = calibration_scores(id, row.version, u, res, map_top);
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

  // Routes that answer without the token: the probes (Kubernetes and load balancers send none;
  // they reveal only liveness and readiness), and /metrics with --metrics-public.
  bool open_route(const std::string& path) const {
    return path == "/healthz" || path == "/readyz" || (o.metrics_public && path == "/metrics");
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
      if (!expected_auth.empty() && !open_route(req.path) && req.get_header_value("Authorization") != expected_auth) {
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
    svr.Post("/v1/refsets/import", [this](const httplib::Request& req, httplib::Response& res) { post_import(req, res); });
    svr.Get(R"(/v1/refsets/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      const RefRow row = lookup(req.matches[1]);
      send_json(res, 200, refset_json(row, thresholds_of(row)));
    });
    svr.Get(R"(/v1/refsets/([^/]+)/export)",
            [this](const httplib::Request& req, httplib::Response& res) { get_export(req, res); });
    svr.Delete(R"(/v1/refsets/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
      const std::string id = req.matches[1];
      lookup(id);
      if (!store->remove(id)) throw HttpError(404, "unknown_refset", "unknown reference set '" + id + "'");
      cache.erase(id);
      send_json(res, 200, json{{"deleted", id}});
    });
    svr.Post("/v1/zero-shot", [this](const httplib::Request& req, httplib::Response& res) { post_zero_shot(req, res); });
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
  if (!options.token.empty())
    impl_->log(std::string("bearer token required, except on /healthz and /readyz") +
               (options.metrics_public ? " and /metrics" : ""));
  else if (!loopback_only(options.host))
    impl_->log("warning: " + options.host +
               " is reachable from other machines and no token is set: anyone who can connect may register, score "
               "and delete reference sets (give --token-file or GAD_TOKEN)");
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
