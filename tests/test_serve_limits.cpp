// `gad serve` under faults, hostile input and memory pressure (the real binary on 127.0.0.1):
// a taken port fails fast with one line; SIGTERM/SIGINT exit 0 (and a drain that runs past
// --drain-timeout exits 1); pixel bombs are refused from their headers without the memory;
// 100 sets through an 8 MB cache keep RSS flat and every score exact; calibration over HTTP
// matches `gad refs calibrate`; 48 stalled clients do not delay a normal request; hostile bodies
// on every route get a 4xx and the server stays up.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "serve/store.h"
#include "serve_process.h"
#include "util/base64.h"

namespace gad {
namespace {

using test::json;
using test::run_gad;
using test::ServerProcess;
using test::slurp;

// The ELPV sample images that exist, sorted (their numbers have gaps).
const std::vector<std::string>& elpv_files() {
  static const std::vector<std::string> files = [] {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(test::shared("data/elpv_sample/images")))
      out.push_back(e.path().string());
    std::sort(out.begin(), out.end());
    return out;
  }();
  return files;
}

httplib::MultipartFormDataItems image_form(const std::vector<std::string>& paths, const std::string& cls = "") {
  httplib::MultipartFormDataItems items;
  if (!cls.empty()) items.push_back({"class", cls, "", ""});
  for (const auto& p : paths)
    items.push_back({"images", slurp(p), std::filesystem::path(p).filename().string(), "image/png"});
  return items;
}

std::vector<std::string> slice(size_t from, size_t count) {
  const auto& all = elpv_files();
  return std::vector<std::string>(all.begin() + from, all.begin() + from + count);
}

std::string register_paths(httplib::Client& c, const std::vector<std::string>& paths) {
  auto r = c.Post("/v1/refsets", image_form(paths, "solar_cell"));
  EXPECT_TRUE(r) << "no answer: " << httplib::to_string(r.error());
  if (!r) return "";
  EXPECT_EQ(r->status, 201) << r->body;
  return r->status == 201 ? json::parse(r->body)["id"].get<std::string>() : "";
}

json score_raw(httplib::Client& c, const std::string& id, const std::string& bytes, int want = 200) {
  auto r = c.Post(("/v1/refsets/" + id + "/score").c_str(), bytes, "image/png");
  EXPECT_TRUE(r);
  if (!r) return json();
  EXPECT_EQ(r->status, want) << r->body;
  return json::parse(r->body, nullptr, false);
}

// A server (extra flags) with one registered set of the first `k` sample images.
struct ServerWithSet {
  ServerProcess server;
  httplib::Client client;
  std::string id;
  ServerWithSet(const std::string& name, const std::vector<std::string>& extra, size_t k)
      : server(test::temp_dir(name) + "/refs.sqlite", extra),
        client(server.client()),
        id(server.port() > 0 ? register_paths(client, slice(0, k)) : "") {}
};

// A listening TCP socket on a free loopback port, as another program would hold it.
struct PortHolder {
  int fd = -1, port = 0;
  PortHolder(bool reuseaddr, bool reuseport) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    if (reuseaddr) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &yes, sizeof yes);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    EXPECT_EQ(listen(fd, 16), 0);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~PortHolder() { close(fd); }
};

// A raw client connection (for half-sent requests).
int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const std::string& bytes) {
  return send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}
std::string le16(uint32_t v) { return {static_cast<char>(v), static_cast<char>(v >> 8)}; }
std::string le32(uint32_t v) { return le16(v & 0xFFFF) + le16(v >> 16); }

std::string png_chunk(const std::string& type, const std::string& data) {
  const std::string body = type + data;
  return be32(static_cast<uint32_t>(data.size())) + body +
         be32(static_cast<uint32_t>(
             crc32(0, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

// A valid-looking PNG of a few hundred bytes whose IHDR declares width x height RGB pixels: the
// IDAT holds a little compressed data, as a decompression bomb would.
std::string png_bomb(uint32_t width, uint32_t height) {
  std::string raw(64 * 1024, '\0');
  uLongf n = compressBound(raw.size());
  std::string z(n, '\0');
  compress(reinterpret_cast<Bytef*>(&z[0]), &n, reinterpret_cast<const Bytef*>(raw.data()), raw.size());
  z.resize(n);
  return std::string("\x89PNG\r\n\x1a\n", 8) +
         png_chunk("IHDR", be32(width) + be32(height) + std::string("\x08\x02\0\0\0", 5)) + png_chunk("IDAT", z) +
         png_chunk("IEND", "");
}

// SOI, a JFIF APP0 segment, then a baseline frame header declaring width x height, 3 components.
std::string jpeg_bomb(uint16_t width, uint16_t height) {
  const std::string app0("\xFF\xE0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", 18);
  return std::string("\xFF\xD8", 2) + app0 + std::string("\xFF\xC0\x00\x11\x08", 5) + be32(height).substr(2) +
         be32(width).substr(2) + std::string("\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01", 10) + std::string(200, '\0');
}

std::string bmp_bomb(uint32_t width, uint32_t height) {
  return "BM" + le32(54 + 64) + le32(0) + le32(54) + le32(40) + le32(width) + le32(height) + le16(1) + le16(24) +
         le32(0) + le32(0) + le32(0) + le32(0) + le32(0) + le32(0) + std::string(64, '\x7f');
}

std::string tiff_bomb(uint32_t width, uint32_t height) {
  auto entry = [](uint16_t tag, uint32_t value) { return le16(tag) + le16(4) + le32(1) + le32(value); };
  return std::string("II*\0", 4) + le32(8) + le16(2) + entry(256, width) + entry(257, height) + le32(0) +
         std::string(64, '\0');
}

double metric(const std::string& text, const std::string& name) {
  const auto at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + name.size() + 2));
}

// The bind comes before the model loads: the one error line is all it prints (no model line), and
// it exits instead of waiting (run_gad kills it after 20 s; a start-up failure takes ~1 s).
TEST(ServeLifecycle, TakenPortFailsBeforeLoadingWithOneLineNamingThePort) {
  const std::string db = test::temp_dir("serve-port") + "/refs.sqlite";
  struct Holder {
    const char* what;
    bool reuseaddr, reuseport;
  };
  for (const Holder& h : {Holder{"plain listener", false, false}, Holder{"SO_REUSEADDR listener", true, false},
                          Holder{"SO_REUSEADDR + SO_REUSEPORT listener", true, true}}) {
    PortHolder holder(h.reuseaddr, h.reuseport);
    auto r = run_gad({"serve", "--model", test::kLiteModel, "--db", db, "--port", std::to_string(holder.port)}, 20);
    EXPECT_NE(r.code, 0) << h.what;
    EXPECT_LT(r.code, 128) << h.what << ": killed or aborted: " << r.err;
    EXPECT_LT(r.seconds, 15.0) << h.what << ": did not exit on its own";
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << h.what << ": " << r.err;
    EXPECT_NE(r.err.find("127.0.0.1:" + std::to_string(holder.port)), std::string::npos) << h.what << ": " << r.err;
    EXPECT_NE(r.err.find("in use"), std::string::npos) << h.what << ": " << r.err;
  }
}

TEST(ServeLifecycle, SigtermAndSigintWhenIdleExitZero) {
  const std::string db = test::temp_dir("serve-idle") + "/refs.sqlite";
  for (int sig : {SIGTERM, SIGINT}) {
    ServerProcess server(db);
    ASSERT_GT(server.port(), 0);
    auto health = server.client().Get("/healthz");  // one keep-alive connection, then idle
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    const auto t0 = std::chrono::steady_clock::now();
    server.signal(sig);
    EXPECT_EQ(server.wait(), 0) << server.log();
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 8.0);
    EXPECT_NE(server.log().find("stopped cleanly"), std::string::npos) << server.log();
  }
}

TEST(ServeLifecycle, HealthzSaysReadyOnlyOnceTheModelIsLoaded) {
  // The model file is a FIFO: loading blocks until the test writes the real model.json into it.
  const std::string dir = test::temp_dir("serve-loading");
  const std::string model_dir = std::filesystem::path(test::kLiteModel).parent_path().string();
  std::filesystem::create_symlink(model_dir + "/group1-shard1of1", dir + "/group1-shard1of1");
  ASSERT_EQ(mkfifo((dir + "/model.json").c_str(), 0600), 0);
  ServerProcess server(dir + "/refs.sqlite", {"--model", dir + "/model.json"}, /*wait_ready=*/false);
  ASSERT_GT(server.port(), 0);
  auto c = server.client();
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 503);
  EXPECT_EQ(json::parse(health->body)["status"], "loading");
  auto reg = c.Post("/v1/refsets", image_form(slice(0, 1), "cell"));
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->status, 503) << reg->body;
  EXPECT_EQ(reg->get_header_value("Retry-After"), "1");
  std::ofstream(dir + "/model.json", std::ios::binary) << slurp(test::kLiteModel);  // unblocks the load
  int status = 0;
  for (int i = 0; i < 600 && status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto h = c.Get("/healthz");
    status = h ? h->status : -1;
  }
  EXPECT_EQ(status, 200) << server.log();
  EXPECT_FALSE(register_paths(c, slice(0, 1)).empty());
}

TEST(ServeLifecycle, DrainPastTheTimeoutExitsOneAfterTheTimeout) {
  ServerWithSet served("serve-drain", {"--drain-timeout", "0.5", "--batch-wait-ms", "4000", "--batch", "8"}, 1);
  ASSERT_FALSE(served.id.empty());
  auto& server = served.server;
  const std::string& id = served.id;
  std::thread inflight([&] {
    auto cc = server.client();
    cc.Post(("/v1/refsets/" + id + "/score").c_str(), slurp(elpv_files()[5]), "image/png");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  server.signal(SIGTERM);
  EXPECT_EQ(server.wait(), 1) << server.log();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(s, 0.4);
  EXPECT_LT(s, 3.0);
  EXPECT_NE(server.log().find("drain timeout"), std::string::npos) << server.log();
  inflight.join();
}

TEST(ServeLimits, PixelBombsAreRefusedFromTheHeaderWithoutTheMemory) {
  ServerWithSet s("serve-bomb", {}, 2);
  ASSERT_FALSE(s.id.empty());
  auto& [server, c, id] = s;
  score_raw(c, id, slurp(elpv_files()[10]));  // warm: first batches allocate
  const std::string bomb = png_bomb(20000, 20000);
  ASSERT_LT(bomb.size(), 4096u);
  const double rss0 = server.rss_mb();
  struct Case {
    std::string what, body;
  };
  for (const Case& k : {Case{"PNG", bomb}, Case{"JPEG", jpeg_bomb(60000, 60000)}, Case{"BMP", bmp_bomb(30000, 30000)},
                        Case{"TIFF", tiff_bomb(20000, 20000)}}) {
    json err = score_raw(c, id, k.body, 413);
    EXPECT_NE(err.value("error", "").find("--max-pixels"), std::string::npos) << k.what << ": " << err;
  }
  auto reg = c.Post("/v1/refsets",
                    httplib::MultipartFormDataItems{{"class", "cell", "", ""}, {"images", bomb, "b.png", "image/png"}});
  ASSERT_TRUE(reg);
  EXPECT_EQ(reg->status, 413) << reg->body;
  auto js = c.Post(("/v1/refsets/" + id + "/score").c_str(), json{{"images", {base64_encode(bomb)}}}.dump(),
                   "application/json");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 413) << js->body;
  auto cal = c.Post(("/v1/refsets/" + id + "/calibrate").c_str(),
                    httplib::MultipartFormDataItems{{"images", bomb, "b.png", "image/png"}});
  ASSERT_TRUE(cal);
  EXPECT_EQ(cal->status, 413) << cal->body;
  EXPECT_LT(server.rss_mb() - rss0, 50.0) << "RSS " << rss0 << " -> " << server.rss_mb() << " MB";
  std::printf("RSS around 7 pixel bombs: %.1f -> %.1f MB\n", rss0, server.rss_mb());
  // The counter is bumped once the answer is on its way, so the last one may land a moment later.
  const std::string seven = "gad_rejected_requests_total{reason=\"too_many_pixels\"} 7";
  httplib::Result metrics = c.Get("/metrics");
  for (int i = 0; i < 40 && metrics && metrics->body.find(seven) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    metrics = c.Get("/metrics");
  }
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find(seven), std::string::npos) << metrics->body;
  EXPECT_EQ(score_raw(c, id, slurp(elpv_files()[10]))["results"].size(), 1u);  // still serving
}

TEST(ServeLimits, CliRefusesImagesAboveMaxPixels) {
  auto r = run_gad({"score", "--model", test::kLiteModel, "--ref-images", elpv_files()[0], "--class", "cell",
                    "--max-pixels", "1000", elpv_files()[1]},
                   60);
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("300 x 300 pixels is more than the limit of 1000 (--max-pixels)"), std::string::npos) << r.err;
}

TEST(ServeMemory, HundredSetsThroughAnEightMegabyteCacheKeepRssFlatAndScoresExact) {
  const std::string db = test::temp_dir("serve-cache") + "/refs.sqlite";
  ServerProcess server(db, {"--cache-mb", "8"});
  ASSERT_GT(server.port(), 0);
  auto c = server.client();
  const std::string query = slurp(elpv_files()[150]);
  std::vector<std::string> ids;
  std::vector<double> first;
  double rss_warm = 0;
  for (size_t i = 0; i < 100; ++i) {
    // K = 3, each set a different window of the sample: every set scores the query differently.
    ids.push_back(register_paths(c, {elpv_files()[i], elpv_files()[i + 1], elpv_files()[(i * 7) % 100 + 100]}));
    ASSERT_FALSE(ids.back().empty()) << "set " << i << "; server log: " << server.log();
    first.push_back(score_raw(c, ids.back(), query)["results"][0]["score"].get<double>());
    if (i == 14) rss_warm = server.rss_mb();
  }
  for (size_t i = 0; i < ids.size(); ++i)  // the early sets were evicted long ago: reloaded from SQLite
    EXPECT_EQ(score_raw(c, ids[i], query)["results"][0]["score"].get<double>(), first[i]) << "set " << i;
  const double rss_end = server.rss_mb();
  EXPECT_LT(rss_end - rss_warm, 40.0) << "RSS after 15 sets " << rss_warm << " MB, after 100 sets and 200 scores "
                                      << rss_end;
  std::set<double> distinct(first.begin(), first.end());
  EXPECT_GT(distinct.size(), 90u);
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_GT(metric(metrics->body, "gad_cache_evictions_total"), 0) << metrics->body;
  EXPECT_LE(metric(metrics->body, "gad_cache_bytes"), 8.0 * 1024 * 1024) << metrics->body;
  EXPECT_GT(metric(metrics->body, "gad_cache_misses_total"), 50) << metrics->body;
  std::printf("RSS with --cache-mb 8: %.1f MB after 15 sets, %.1f MB after 100 sets and 200 scores\n", rss_warm,
              rss_end);
}

TEST(ServeCalibration, CalibrateEndpointStoresTheCliThresholdAndScoresSayAnomalous) {
  const std::string dir = test::temp_dir("serve-calibrate");
  const std::string db = dir + "/refs.sqlite";
  const std::vector<std::string> normals = slice(20, 24);
  std::string id;
  json answer;
  {
    ServerProcess server(db);
    ASSERT_GT(server.port(), 0);
    auto c = server.client();
    id = register_paths(c, slice(0, 4));
    ASSERT_FALSE(id.empty());
    json before = score_raw(c, id, slurp(elpv_files()[60]));
    EXPECT_FALSE(before["results"][0].contains("anomalous")) << before;
    auto form = image_form(normals);
    form.push_back({"far", "0.1", "", ""});
    auto r = c.Post(("/v1/refsets/" + id + "/calibrate").c_str(), form);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    answer = json::parse(r->body);
    EXPECT_EQ(answer["refset"], id);
    EXPECT_EQ(answer["far"], 0.1);
    EXPECT_EQ(answer["method"], "conformal-heldout");
    EXPECT_EQ(answer["n"], 24);
    const double threshold = answer["threshold"].get<double>();
    for (size_t i = 60; i < 64; ++i) {  // the next scores carry the decision
      json after = score_raw(c, id, slurp(elpv_files()[i]))["results"][0];
      ASSERT_TRUE(after.contains("anomalous")) << after;
      EXPECT_EQ(after["anomalous"].get<bool>(), after["score"].get<double>() > threshold);
    }
    // Errors: far outside (0, 1), no images, unknown set, JSON with far.
    auto bad_far = c.Post(("/v1/refsets/" + id + "/calibrate?far=1.5").c_str(), image_form(slice(20, 2)));
    ASSERT_TRUE(bad_far);
    EXPECT_EQ(bad_far->status, 400) << bad_far->body;
    auto none =
        c.Post(("/v1/refsets/" + id + "/calibrate").c_str(), httplib::MultipartFormDataItems{{"far", "0.1", "", ""}});
    ASSERT_TRUE(none);
    EXPECT_EQ(none->status, 400) << none->body;
    auto unknown = c.Post("/v1/refsets/0123456789abcdef0123456789abcdef/calibrate", image_form(slice(20, 2)));
    ASSERT_TRUE(unknown);
    EXPECT_EQ(unknown->status, 404) << unknown->body;
  }
  // The same rule as the CLI on the same set and images: the stored set, exported, recalibrated.
  serve::SqliteStore store(db);
  const std::string set_file = dir + "/set.gadref";
  std::ofstream(set_file, std::ios::binary) << *store.blob(id);
  std::vector<std::string> args = {
      "refs",  "calibrate", "--model", test::kLiteModel,    "--precision", "fp32", "--threads", "2", "--refs", set_file,
      "--far", "0.1",       "-o",      dir + "/cli.gadref"};
  for (const auto& n : normals) args.insert(args.end(), {"--normals", n});  // a list option: repeated, or commas
  auto run = run_gad(args, 120);
  ASSERT_EQ(run.code, 0) << run.err;
  json cli = json::parse(run.out);
  EXPECT_EQ(cli["threshold"].get<double>(), answer["threshold"].get<double>());  // bit-identical
  EXPECT_EQ(cli["far"], answer["far"]);
  EXPECT_EQ(cli["method"], answer["method"]);
  EXPECT_EQ(cli["n"], answer["n"]);
  // A restarted server reads the threshold from SQLite.
  ServerProcess again(db);
  auto c = again.client();
  EXPECT_TRUE(score_raw(c, id, slurp(elpv_files()[60]))["results"][0].contains("anomalous"));
}

TEST(ServeSlowClients, FortyEightStalledClientsDoNotDelayANormalRequest) {
  ServerWithSet s("serve-stall", {"--read-timeout", "2", "--keep-alive", "1"}, 2);
  ASSERT_FALSE(s.id.empty());
  auto& [server, c, id] = s;
  const std::string png = slurp(elpv_files()[30]);
  score_raw(c, id, png);  // warm
  std::vector<int> stalled;
  for (int i = 0; i < 48; ++i) {
    int fd = connect_to(server.port());
    ASSERT_GE(fd, 0);
    const std::string head =
        "POST /v1/refsets/" + id + "/score HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n";
    // Half stop inside the headers, half inside a declared 400 KB body.
    ASSERT_TRUE(send_all(
        fd, i % 2 ? head.substr(0, head.size() / 2) : head + "Content-Length: 400000\r\n\r\n" + png.substr(0, 1000)));
    stalled.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto t0 = std::chrono::steady_clock::now();
  auto fresh = server.client();
  json r = score_raw(fresh, id, png);
  const double latency = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r["results"].size(), 1u);
  EXPECT_LT(latency, 1.0);
  std::printf("normal request with 48 stalled clients: %.1f ms\n", latency * 1000);
  // The server drops every stalled connection after --read-timeout (2 s): each read ends.
  int dropped = 0;
  for (int fd : stalled) {
    timeval tv{6, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char buf[4096];
    ssize_t n;
    while ((n = recv(fd, buf, sizeof buf, 0)) > 0) {
    }
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) ++dropped;
    close(fd);
  }
  EXPECT_EQ(dropped, 48);
  EXPECT_EQ(score_raw(c, id, png)["results"].size(), 1u);
}

TEST(ServeSlowClients, EndlessAndTricklingHeadersAreCutOff) {
  ServerWithSet s("serve-headers", {"--read-timeout", "1", "--max-body", "1MB"}, 1);  // headers + body cap: ~1 MB
  ASSERT_FALSE(s.id.empty());
  auto& [server, c, id] = s;
  const double rss0 = server.rss_mb();
  // Endless header lines, each under httplib's 8 KB line limit: the server stops reading and
  // closes the connection (the client sees the end of the stream), its memory barely moves.
  int fd = connect_to(server.port());
  timeval one_second{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &one_second, sizeof one_second);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &one_second, sizeof one_second);
  ASSERT_TRUE(send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n"));
  std::string lines;
  for (int i = 0; i < 100; ++i) lines += "X-Filler: " + std::string(1000, 'f') + "\r\n";
  auto t0 = std::chrono::steady_clock::now();
  size_t sent = 0;
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5) && send_all(fd, lines)) sent += lines.size();
  const double cut_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  char byte;
  EXPECT_EQ(recv(fd, &byte, 1, 0), 0) << "the server did not close the connection";
  close(fd);
  EXPECT_LT(cut_after, 5.0) << "the server still reads after " << sent / 1024 << " KB of headers";
  EXPECT_LT(server.rss_mb() - rss0, 50.0);
  // A header line every 300 ms: each read is within --read-timeout, the whole is not (2 s).
  fd = connect_to(server.port());
  ASSERT_TRUE(send_all(fd, "GET /healthz HTTP/1.1\r\n"));
  t0 = std::chrono::steady_clock::now();
  bool open = true;
  while (open && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(8)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    open = send_all(fd, "X-Slow: 1\r\n");
    char b;
    if (open && recv(fd, &b, 1, MSG_DONTWAIT | MSG_PEEK) == 0) open = false;
  }
  const double trickled = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  close(fd);
  EXPECT_FALSE(open);
  EXPECT_GT(trickled, 1.5);
  EXPECT_LT(trickled, 5.0);
  std::printf("endless headers cut after %.2f s (%zu KB sent), trickled headers after %.1f s; RSS %.1f -> %.1f MB\n",
              cut_after, sent / 1024, trickled, rss0, server.rss_mb());
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("reason=\"headers_too_large\"} 1"), std::string::npos) << metrics->body;
  EXPECT_NE(metrics->body.find("reason=\"headers_too_slow\"} 1"), std::string::npos) << metrics->body;
  EXPECT_EQ(score_raw(c, id, slurp(elpv_files()[3]))["results"].size(), 1u);
}

TEST(ServeLimits, HostileBodiesOnEveryRouteGet4xxAndTheServerStaysUp) {
  ServerWithSet s("serve-hostile", {"--max-body", "1MB", "--read-timeout", "2"}, 1);
  ASSERT_FALSE(s.id.empty());
  auto& [server, c, id] = s;
  const std::string png = slurp(elpv_files()[40]);
  const std::string boundary = "b0undaryXY";
  const std::string multipart_type = "multipart/form-data; boundary=" + boundary;
  auto part = [&](const std::string& content) {
    return "--" + boundary + "\r\nContent-Disposition: form-data; name=\"class\"\r\n\r\ncell\r\n--" + boundary +
           "\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\nContent-Type: "
           "image/png\r\n\r\n" +
           content + "\r\n--" + boundary + "--\r\n";
  };
  struct Case {
    std::string what, body, type;
    int want;
  };
  const std::vector<Case> cases = {
      {"malformed multipart", part(png).substr(0, 300), multipart_type, 400},
      {"multipart, no boundary", part(png), "multipart/form-data", 400},
      {"wrong content type", png, "text/plain", 415},
      {"non-image bytes", part("this is not an image, just text"), multipart_type, 400},
      {"truncated PNG", part(png.substr(0, png.size() / 3)), multipart_type, 400},
      {"PNG signature only", part(png.substr(0, 8)), multipart_type, 400},
      {"zero-byte image", part(""), multipart_type, 400},
      {"zero-byte multipart body", "", multipart_type, 400},
      {"zero-byte JSON body", "", "application/json", 400},
      {"JSON, images not base64", json{{"class", "c"}, {"images", {"%%%"}}}.dump(), "application/json", 400},
      {"JSON nested 200000 deep", std::string(200000, '['), "application/json", 400},
      {"JSON, far not a number", json{{"far", "x"}, {"images", {base64_encode(png)}}}.dump(), "application/json", 400},
      {"body over --max-body", std::string(2 << 20, 'x'), multipart_type, 413},
  };
  for (const std::string& route :
       {std::string("/v1/refsets"), "/v1/refsets/" + id + "/score", "/v1/refsets/" + id + "/calibrate"}) {
    for (const auto& k : cases) {
      if (k.what == "JSON, far not a number" && route.find("calibrate") == std::string::npos) continue;
      auto r = server.client().Post(route.c_str(), k.body, k.type.c_str());
      ASSERT_TRUE(r) << route << " " << k.what << ": no response";
      EXPECT_EQ(r->status, k.want) << route << " " << k.what << ": " << r->body;
      auto body = json::parse(r->body, nullptr, false);
      EXPECT_TRUE(body.is_object() && body.contains("error")) << route << " " << k.what << ": " << r->body;
      ASSERT_TRUE(server.alive()) << route << " " << k.what << ": " << server.log();
    }
    auto huge = server.client().Post(route.c_str(), {{"X-Huge", std::string(32 * 1024, 'h')}}, png, "image/png");
    ASSERT_TRUE(huge);
    EXPECT_EQ(huge->status / 100, 4) << route << " huge header: " << huge->body;
  }
  // A declared body beyond --max-body is refused without being stored: httplib discards what the
  // client sends and answers 413 at its end, or after --read-timeout (2 s) of silence.
  const auto t0 = std::chrono::steady_clock::now();
  int fd = connect_to(server.port());
  ASSERT_TRUE(send_all(fd,
                       "POST /v1/refsets HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: "
                       "1000000000000\r\n\r\n"));
  char buf[512] = {0};
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ASSERT_GT(recv(fd, buf, sizeof buf - 1, 0), 0);
  EXPECT_EQ(std::string(buf).substr(0, 12), "HTTP/1.1 413") << buf;
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 4.0);
  close(fd);
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(score_raw(c, id, png)["results"].size(), 1u);
}

}  // namespace
}  // namespace gad
