// `gad watch` (the station line) as a user runs it: the real binary on a hot folder, a real
// mosquitto broker and an HTTP receiver on 127.0.0.1, kill -9, SIGHUP, SIGTERM. Every wait is
// bounded; scores must equal `gad score`'s to 1e-6 (the same code path; the bound absorbs printing).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <opencv2/videoio.hpp>

#include "child_process.h"
#include "serve/http.h"
#include "station/outbox.h"
#include "support.h"

namespace gad::test {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string kModel = shared("fixtures/lite/mobilenet_v2/model.json");
const std::string kTiles = std::string(GAD_SOURCE_DIR) + "/examples/tiles";

std::string slurp_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<std::string> test_images() {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(kTiles + "/test"))
    if (e.is_regular_file()) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t n = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return pred();
}

// The JSON objects of a JSON-lines file (a line torn by kill -9 is skipped and counted).
std::vector<json> read_jsonl(const std::string& path, int* torn = nullptr) {
  std::vector<json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    try {
      out.push_back(json::parse(line));
    } catch (const std::exception&) {
      if (torn) ++*torn;
    }
  }
  return out;
}

// `gad score` on the same images and set: path -> score.
std::map<std::string, double> cli_scores(const std::string& set, const std::vector<std::string>& images) {
  std::string args = "score --model " + shell_quote(kModel) + " --precision fp32 --no-threshold --refs " + shell_quote(set);
  for (const auto& i : images) args += " " + shell_quote(i);
  const CliResult r = run_cli(args);
  EXPECT_EQ(r.status, 0) << r.err;
  std::map<std::string, double> out;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    const json j = json::parse(line);
    out[j["path"].get<std::string>()] = j["score"].get<double>();
  }
  return out;
}

// A calibrated set of the tiles, made once.
const std::string& tiles_set() {
  static const std::string path = [] {
    const std::string dir = temp_dir("watch-set");
    const std::string set = dir + "/tiles.gadref";
    const std::string model = "--model " + shell_quote(kModel) + " --precision fp32";
    EXPECT_EQ(run_cli("refs build " + model + " --class tile " + shell_quote(kTiles + "/train/good") + " -o " + set).status, 0);
    EXPECT_EQ(run_cli("refs calibrate " + model + " --refs " + set + " --normals " + shell_quote(kTiles + "/validation/good") +
                      " --far 0.1").status, 0);
    return set;
  }();
  return path;
}

class Watch {
 public:
  Watch(const std::string& dir, const std::vector<std::string>& extra) : dir_(dir) { start(extra); }
  void start(const std::vector<std::string>& extra) {
    std::vector<std::string> args = {GAD_CLI, "watch", "--model", kModel, "--precision", "fp32", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    child_.start(args, dir_ + "/stdout", dir_ + "/stderr");
  }
  std::string log() const { return slurp_file(dir_ + "/stderr"); }
  bool wait_for_log(const std::string& text, std::chrono::seconds timeout = 60s) {
    return eventually([&] { return log().find(text) != std::string::npos; }, timeout);
  }
  ChildProcess& process() { return child_; }

 private:
  std::string dir_;
  ChildProcess child_;
};

void copy_slowly(const std::string& from, const std::string& to) {
  const std::string bytes = slurp_file(from);
  std::ofstream out(to, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
  out.flush();
  std::this_thread::sleep_for(1500ms);  // a watcher that scored on creation or modification would see half a PNG
  out.write(bytes.data() + bytes.size() / 2, static_cast<std::streamsize>(bytes.size() - bytes.size() / 2));
}

TEST(Watch, ScoresOnlyCompleteFilesLikeGadScoreAndStopsCleanly) {
  const std::string dir = temp_dir("watch-folder"), in = dir + "/in", jsonl = dir + "/results.jsonl";
  fs::create_directories(in);
  const auto images = test_images();
  fs::copy_file(images[0], in + "/before_start.png");  // there before the line starts
  const int metrics_port = free_port();
  Watch w(dir, {in, "--refs", tiles_set(), "--jsonl", jsonl, "--csv", dir + "/results.csv", "--line", "a",
                "--metrics-port", std::to_string(metrics_port), "--log-every", "1"});
  ASSERT_TRUE(w.wait_for_log("watching")) << w.log();
  copy_slowly(images[1], in + "/slow.png");
  fs::copy_file(images[2], dir + "/renamed.tmp");
  fs::rename(dir + "/renamed.tmp", in + "/renamed.png");
  std::ofstream(in + "/corrupt.png") << "not a png";
  std::ofstream(in + "/notes.txt") << "not an image";
  ASSERT_TRUE(eventually([&] { return read_jsonl(jsonl).size() >= 4; }, 60s)) << w.log();
  // Prometheus metrics and the periodic summary line say the same.
  httplib::Client c("127.0.0.1", metrics_port);
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m && m->status == 200);
  EXPECT_NE(m->body.find("gad_watch_results_total{line=\"a\",result=\"error\"} 1"), std::string::npos) << m->body;
  EXPECT_NE(m->body.find("gad_watch_latency_seconds_count{line=\"a\"} 4"), std::string::npos) << m->body;
  EXPECT_TRUE(w.wait_for_log("errors) in", 10s)) << w.log();
  w.process().signal(SIGTERM);
  EXPECT_EQ(w.process().wait(), 0) << w.log();

  const auto results = read_jsonl(jsonl);
  ASSERT_EQ(results.size(), 4u) << w.log();
  const auto expected = cli_scores(tiles_set(), {images[0], images[1], images[2]});
  const std::map<std::string, std::string> origin = {
      {in + "/before_start.png", images[0]}, {in + "/slow.png", images[1]}, {in + "/renamed.png", images[2]}};
  std::set<int64_t> seqs;
  for (const auto& r : results) {
    EXPECT_EQ(r["line"], "a");
    seqs.insert(r["seq"].get<int64_t>());
    const std::string path = r["path"];
    if (path == in + "/corrupt.png") {
      EXPECT_TRUE(r.contains("error") && !r.contains("score") && !r.contains("anomalous")) << r;
      continue;
    }
    ASSERT_TRUE(origin.count(path)) << r;
    ASSERT_TRUE(r.contains("score") && r.contains("anomalous")) << r;  // scored whole: never an error for slow.png
    EXPECT_NEAR(r["score"].get<double>(), expected.at(origin.at(path)), 1e-6) << path;
  }
  EXPECT_EQ(seqs, (std::set<int64_t>{1, 2, 3, 4}));
  EXPECT_NE(w.log().find("stopped; 0 results wait"), std::string::npos) << w.log();
  // The CSV sink, read back by Python's csv module: the same results; no score or verdict where none.
  const auto rows = python_csv_rows(dir + "/results.csv");
  ASSERT_EQ(rows.size(), 5u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"line", "seq", "path", "score", "anomalous", "error", "time"}));
  for (size_t i = 1; i < rows.size(); ++i) {
    const json& r = results[i - 1];
    EXPECT_EQ(rows[i][2], r["path"].get<std::string>());
    if (r.contains("error")) {
      EXPECT_TRUE(rows[i][3].empty() && rows[i][4].empty() && !rows[i][5].empty());
    } else {
      EXPECT_NEAR(std::stod(rows[i][3]), r["score"].get<double>(), 1e-12);
      EXPECT_EQ(rows[i][4], r["anomalous"].get<bool>() ? "true" : "false");
    }
  }
}

TEST(Watch, KillNineMidBurstThenRestartLosesNoFile) {
  const std::string dir = temp_dir("watch-kill"), in = dir + "/in", jsonl = dir + "/results.jsonl";
  fs::create_directories(in);
  const auto images = test_images();
  std::vector<std::string> args = {in, "--refs", tiles_set(), "--jsonl", jsonl, "--batch", "16"};
  Watch w(dir, args);
  ASSERT_TRUE(w.wait_for_log("watching")) << w.log();
  std::set<std::string> written;
  for (int i = 0; i < 1000; ++i) {  // a burst: copies of the test tiles under new names
    char name[32];
    std::snprintf(name, sizeof name, "/part%04d.png", i);
    fs::copy_file(images[i % images.size()], dir + "/staging.png", fs::copy_options::overwrite_existing);
    fs::rename(dir + "/staging.png", in + name);
    written.insert(in + name);
  }
  ASSERT_TRUE(eventually([&] { return read_jsonl(jsonl).size() >= 100; }, 120s)) << w.log();
  w.process().signal(SIGKILL);
  w.process().wait();
  const size_t before_restart = read_jsonl(jsonl).size();
  EXPECT_LT(before_restart, written.size()) << "the kill came too late to test anything";
  w.start(args);
  ASSERT_TRUE(eventually(
      [&] {
        std::set<std::string> seen;
        for (const auto& r : read_jsonl(jsonl)) seen.insert(r["path"].get<std::string>());
        return seen.size() == written.size();
      },
      240s))
      << w.log();
  w.process().signal(SIGTERM);
  EXPECT_EQ(w.process().wait(), 0);
  int torn = 0;
  std::map<int64_t, std::string> by_seq;
  for (const auto& r : read_jsonl(jsonl, &torn)) {
    const int64_t seq = r["seq"];
    EXPECT_TRUE(!by_seq.count(seq) || by_seq[seq] == r["path"]) << "seq " << seq << " names two files";
    by_seq[seq] = r["path"];
    EXPECT_TRUE(written.count(r["path"].get<std::string>()));
    EXPECT_TRUE(r.contains("score")) << r;
  }
  EXPECT_LE(torn, 1);  // at most the line being written when the process was killed
}

// A mosquitto broker on a free loopback port, with persistence so a subscriber's queued messages
// survive the broker's own restart.
class Broker {
 public:
  // With `user`, clients must give that user and `password` (a mosquitto password file).
  explicit Broker(const std::string& dir, const std::string& user = "", const std::string& password = "")
      : dir_(dir), port_(free_port()) {
    std::ofstream conf(dir + "/mosquitto.conf");
    conf << "listener " << port_ << " 127.0.0.1\npersistence true\npersistence_location " << dir << "/\n";
    if (user.empty()) {
      conf << "allow_anonymous true\n";
    } else {
      EXPECT_EQ(std::system(("mosquitto_passwd -b -c " + dir + "/passwd " + user + " " + password).c_str()), 0);
      conf << "allow_anonymous false\npassword_file " << dir << "/passwd\n";
    }
    conf.close();
    start();
  }
  void start() {
    child_.start({"/usr/sbin/mosquitto", "-c", dir_ + "/mosquitto.conf"}, dir_ + "/broker.out", dir_ + "/broker.err");
    EXPECT_TRUE(eventually([&] { return port_open(port_); }, 10s)) << slurp_file(dir_ + "/broker.err");
  }
  void stop() {
    child_.signal(SIGTERM);
    child_.wait();
  }
  int port() const { return port_; }

 private:
  std::string dir_;
  int port_;
  ChildProcess child_;
};

// A QoS 1 subscriber with a persistent session: what it receives, in arrival order.
class Subscriber {
 public:
  Subscriber(int port, const std::string& topic, const std::string& user = "", const std::string& password = "")
      : topic_(topic) {
    mosquitto_lib_init();
    m_ = mosquitto_new("gad-test-subscriber", false, this);
    if (!user.empty()) mosquitto_username_pw_set(m_, user.c_str(), password.c_str());
    mosquitto_connect_callback_set(m_, [](mosquitto* m, void* self, int rc) {
      if (rc == 0) mosquitto_subscribe(m, nullptr, static_cast<Subscriber*>(self)->topic_.c_str(), 1);
    });
    mosquitto_message_callback_set(m_, [](mosquitto*, void* self, const mosquitto_message* msg) {
      auto* s = static_cast<Subscriber*>(self);
      std::lock_guard<std::mutex> lock(s->mutex_);
      s->messages_.push_back({msg->topic, std::string(static_cast<const char*>(msg->payload), msg->payloadlen)});
    });
    mosquitto_reconnect_delay_set(m_, 1, 1, false);
    mosquitto_connect(m_, "127.0.0.1", port, 5);
    mosquitto_loop_start(m_);
  }
  ~Subscriber() {
    mosquitto_disconnect(m_);
    mosquitto_loop_stop(m_, true);
    mosquitto_destroy(m_);
  }
  std::vector<std::pair<std::string, std::string>> messages() {
    std::lock_guard<std::mutex> lock(mutex_);
    return messages_;
  }
  // The seqs of result messages on `topic`, in arrival order, duplicates kept.
  std::vector<int64_t> seqs(const std::string& topic) {
    std::vector<int64_t> out;
    for (const auto& [t, body] : messages())
      if (t == topic) out.push_back(json::parse(body)["seq"].get<int64_t>());
    return out;
  }

 private:
  std::string topic_;
  mosquitto* m_ = nullptr;
  std::mutex mutex_;
  std::vector<std::pair<std::string, std::string>> messages_;
};

size_t distinct(const std::vector<int64_t>& v) { return std::set<int64_t>(v.begin(), v.end()).size(); }

TEST(Watch, MqttDeliversEveryResultInOrderAcrossABrokerOutage) {
  const std::string dir = temp_dir("watch-mqtt"), in = dir + "/in";
  fs::create_directories(in);
  Broker broker(dir);
  Subscriber sub(broker.port(), "gad/#");
  const auto images = test_images();
  Watch w(dir, {in, "--refs", tiles_set(), "--line", "l1", "--mqtt",
                "mqtt://127.0.0.1:" + std::to_string(broker.port()) + "/gad/l1"});
  ASSERT_TRUE(w.wait_for_log("watching")) << w.log();
  for (int i = 0; i < 3; ++i) fs::copy_file(images[i], in + "/a" + std::to_string(i) + ".png");
  ASSERT_TRUE(eventually([&] { return distinct(sub.seqs("gad/l1")) == 3; }, 60s)) << w.log();
  broker.stop();
  for (int i = 3; i < 6; ++i) fs::copy_file(images[i], in + "/a" + std::to_string(i) + ".png");
  std::this_thread::sleep_for(10s);  // the broker stays away for 10 s
  EXPECT_NE(w.log().find("not connected"), std::string::npos) << w.log();
  broker.start();
  ASSERT_TRUE(eventually([&] { return distinct(sub.seqs("gad/l1")) == 6; }, 60s)) << w.log();
  // In order: each seq first arrives after every smaller one (repeats of a seq may follow).
  std::vector<int64_t> first;
  for (int64_t s : sub.seqs("gad/l1"))
    if (std::find(first.begin(), first.end(), s) == first.end()) first.push_back(s);
  EXPECT_EQ(first, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  bool online = false;
  for (const auto& [t, body] : sub.messages()) online |= t == "gad/l1/status" && body == "online";
  EXPECT_TRUE(online);
  w.process().signal(SIGTERM);
  EXPECT_EQ(w.process().wait(), 0) << w.log();
  EXPECT_TRUE(eventually([&] { return !sub.messages().empty() && sub.messages().back().second == "offline"; }, 10s));
}

TEST(Watch, MqttWithUserAndPasswordAndAWrongPasswordIsRetried) {
  const std::string dir = temp_dir("watch-mqtt-auth"), in = dir + "/in";
  fs::create_directories(in);
  Broker broker(dir, "station", "s3cret");
  Subscriber sub(broker.port(), "plant/#", "station", "s3cret");
  const std::string where = "127.0.0.1:" + std::to_string(broker.port()) + "/plant/l1";
  Watch wrong(dir, {in, "--refs", tiles_set(), "--mqtt", "mqtt://station:nope123@" + where, "--outbox", dir + "/wrong.outbox"});
  fs::copy_file(test_images()[0], in + "/x.png");
  ASSERT_TRUE(wrong.wait_for_log("not connected")) << wrong.log();
  EXPECT_EQ(wrong.log().find("nope123"), std::string::npos) << "the password is logged: " << wrong.log();
  wrong.process().signal(SIGTERM);
  EXPECT_EQ(wrong.process().wait(), 0);
  EXPECT_TRUE(sub.seqs("plant/l1").empty());
  Watch right(dir, {in, "--refs", tiles_set(), "--mqtt", "mqtt://station:s3cret@" + where, "--outbox", dir + "/right.outbox"});
  ASSERT_TRUE(eventually([&] { return sub.seqs("plant/l1").size() == 1; }, 60s)) << right.log();
  right.process().signal(SIGTERM);
  EXPECT_EQ(right.process().wait(), 0);
}

TEST(Watch, WebhookAnswering500IsRetriedUntilDelivered) {
  const std::string dir = temp_dir("watch-hook"), in = dir + "/in";
  fs::create_directories(in);
  httplib::Server server;
  std::mutex mutex;
  std::vector<json> delivered;
  std::atomic<int> requests{0};
  server.Post("/hook", [&](const httplib::Request& req, httplib::Response& res) {
    if (++requests <= 3) {  // the first three attempts fail
      res.status = 500;
      return;
    }
    std::lock_guard<std::mutex> lock(mutex);
    delivered.push_back(json::parse(req.body));
    res.status = 200;
  });
  const int port = server.bind_to_any_port("127.0.0.1");
  std::thread serving([&] { server.listen_after_bind(); });
  const auto images = test_images();
  Watch w(dir, {in, "--refs", tiles_set(), "--webhook", "http://127.0.0.1:" + std::to_string(port) + "/hook"});
  ASSERT_TRUE(w.wait_for_log("watching")) << w.log();
  fs::copy_file(images[0], in + "/x.png");
  fs::copy_file(images[6], in + "/y.png");
  const bool done = eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mutex);
        std::set<int64_t> seqs;
        for (const auto& d : delivered) seqs.insert(d["seq"].get<int64_t>());
        return seqs.size() == 2;
      },
      60s);
  w.process().signal(SIGTERM);
  const int code = w.process().wait();
  server.stop();
  serving.join();
  ASSERT_TRUE(done) << w.log();
  EXPECT_EQ(code, 0);
  EXPECT_GE(requests.load(), 5);
  EXPECT_NE(w.log().find("answered HTTP 500"), std::string::npos) << w.log();
  EXPECT_NE(w.log().find("delivering again"), std::string::npos) << w.log();
}

TEST(Watch, SighupSwapsTheSetWithoutLosingImagesAndFoldersFileByVerdict) {
  const std::string dir = temp_dir("watch-hup"), in = dir + "/in", jsonl = dir + "/r.jsonl", set = dir + "/line.gadref";
  fs::create_directories(in);
  fs::copy_file(tiles_set(), set);
  // The second set: 3 references, calibrated on the same normals.
  const std::string other = dir + "/other.gadref", model = "--model " + shell_quote(kModel) + " --precision fp32";
  ASSERT_EQ(run_cli("refs build " + model + " --class tile --k 3 " + shell_quote(kTiles + "/train/good") + " -o " + other).status, 0);
  ASSERT_EQ(run_cli("refs calibrate " + model + " --refs " + other + " --normals " + shell_quote(kTiles + "/validation/good") +
                    " --far 0.1").status, 0);
  const auto images = test_images();
  Watch w(dir, {in, "--refs", set, "--jsonl", jsonl, "--ok-dir", dir + "/ok", "--ng-dir", dir + "/ng", "--done", "move",
                "--done-dir", dir + "/done"});
  ASSERT_TRUE(w.wait_for_log("watching")) << w.log();
  for (int i = 0; i < 6; ++i) fs::copy_file(images[i], in + "/first" + std::to_string(i) + ".png");
  ASSERT_TRUE(eventually([&] { return read_jsonl(jsonl).size() >= 3; }, 60s)) << w.log();
  fs::copy_file(other, set + ".new");
  fs::rename(set + ".new", set);
  w.process().signal(SIGHUP);
  ASSERT_TRUE(w.wait_for_log("reloaded")) << w.log();
  fs::copy_file(images[7], in + "/after.png");
  ASSERT_TRUE(eventually([&] { return read_jsonl(jsonl).size() == 7; }, 60s)) << w.log();
  // A set whose threshold needs other heads is refused on reload; the line keeps the set it has.
  const std::string headed = dir + "/headed.gadref";
  ASSERT_EQ(run_cli("refs build " + model + " --heads lite --class tile --k 3 " + shell_quote(kTiles + "/train/good") + " -o " +
                    headed).status, 0);
  ASSERT_EQ(run_cli("refs calibrate " + model + " --heads lite --refs " + headed + " --normals " +
                    shell_quote(kTiles + "/validation/good") + " --far 0.1").status, 0);
  fs::copy_file(headed, set + ".new");
  fs::rename(set + ".new", set);
  w.process().signal(SIGHUP);
  ASSERT_TRUE(w.wait_for_log("reload failed, keeping the set in use")) << w.log();
  EXPECT_NE(w.log().find("calibrated under another setup (heads"), std::string::npos) << w.log();
  fs::copy_file(images[8], in + "/kept.png");
  ASSERT_TRUE(eventually([&] { return read_jsonl(jsonl).size() == 8; }, 60s)) << w.log();
  EXPECT_NEAR(read_jsonl(jsonl).back()["score"].get<double>(), cli_scores(other, {images[8]}).at(images[8]), 1e-6);
  w.process().signal(SIGTERM);
  EXPECT_EQ(w.process().wait(), 0) << w.log();
  const auto after = read_jsonl(jsonl)[6];
  ASSERT_EQ(after["path"], in + "/after.png");
  EXPECT_NEAR(after["score"].get<double>(), cli_scores(other, {images[7]}).at(images[7]), 1e-6);
  // Every image filed by its verdict and moved out of the hot folder once filed.
  size_t filed = 0;
  for (const auto& r : read_jsonl(jsonl)) {
    const std::string name = std::to_string(r["seq"].get<int64_t>()) + "_" + fs::path(r["path"].get<std::string>()).filename().string();
    EXPECT_TRUE(fs::exists(dir + (r["anomalous"].get<bool>() ? "/ng/" : "/ok/") + name)) << name;
    const std::string overlay = dir + "/ng/" + std::to_string(r["seq"].get<int64_t>()) + "_" +
                                fs::path(r["path"].get<std::string>()).stem().string() + ".overlay.png";
    EXPECT_EQ(fs::exists(overlay), r["anomalous"].get<bool>()) << overlay;  // NG images come with their map
    EXPECT_TRUE(fs::exists(dir + "/done/" + fs::path(r["path"].get<std::string>()).filename().string()));
    ++filed;
  }
  EXPECT_EQ(filed, 8u);
  for (const auto& e : fs::directory_iterator(in)) EXPECT_TRUE(e.path().filename().string()[0] == '.') << e.path();
}

TEST(Watch, BadOptionsFailWithOneLine) {
  const std::string dir = temp_dir("watch-bad");
  const std::string model = "--model " + shell_quote(kModel) + " --precision fp32 ";
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"watch " + model + dir + "/missing --refs " + tiles_set(), "no such folder, video file"},
      {"watch " + model + "--refs " + tiles_set(), "SOURCE"},
      {"watch " + model + dir + " --refs " + tiles_set() + " --when-full sometimes", "--when-full"},
      {"watch " + model + dir + " --refs " + tiles_set() + " --mqtt http://x/y", "--mqtt"},
      {"watch " + model + dir + " --refs " + tiles_set() + " --done move", "--done-dir"},
      {"watch " + model + dir + " --refs " + dir + "/none.gadref", "none.gadref"},
  };
  for (const auto& c : cases) {
    const CliResult r = run_cli(c.args);
    EXPECT_EQ(r.status, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

TEST(Watch, ConfigRunsSeveralLinesAndRefusesUnknownKeysByPath) {
  const std::string dir = temp_dir("watch-config");
  fs::create_directories(dir + "/a");
  fs::create_directories(dir + "/b");
  const json config = {{"outbox", dir + "/station.outbox"},
                       {"lines", {{{"name", "a"}, {"source", dir + "/a"}, {"refs", tiles_set()}, {"jsonl", dir + "/a.jsonl"}},
                                  {{"name", "b"}, {"source", dir + "/b"}, {"refs", tiles_set()}, {"jsonl", dir + "/b.jsonl"},
                                   {"batch", 2}}}}};
  std::ofstream(dir + "/station.json") << config.dump(2);
  const auto images = test_images();
  Watch w(dir, {"--station", dir + "/station.json"});
  ASSERT_TRUE(eventually([&] { return w.log().find("line b: watching") != std::string::npos &&
                                      w.log().find("line a: watching") != std::string::npos; }, 60s)) << w.log();
  for (int i = 0; i < 3; ++i) fs::copy_file(images[i], dir + "/a/" + std::to_string(i) + ".png");
  for (int i = 3; i < 5; ++i) fs::copy_file(images[i], dir + "/b/" + std::to_string(i) + ".png");
  ASSERT_TRUE(eventually([&] { return read_jsonl(dir + "/a.jsonl").size() == 3 && read_jsonl(dir + "/b.jsonl").size() == 2; }, 60s))
      << w.log();
  w.process().signal(SIGTERM);
  EXPECT_EQ(w.process().wait(), 0) << w.log();
  for (const auto& r : read_jsonl(dir + "/b.jsonl")) EXPECT_EQ(r["line"], "b");
  EXPECT_EQ(read_jsonl(dir + "/b.jsonl").back()["seq"], 2);  // numbered per line

  json bad = config;
  bad["lines"][1]["jsnol"] = "x";
  std::ofstream(dir + "/bad.json") << bad.dump();
  CliResult r = run_cli("watch --model " + shell_quote(kModel) + " --station " + dir + "/bad.json");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("lines[1].jsnol: unknown key"), std::string::npos) << r.err;
  bad = config;
  bad["lines"][0]["batch"] = "eight";
  std::ofstream(dir + "/bad.json") << bad.dump();
  r = run_cli("watch --model " + shell_quote(kModel) + " --station " + dir + "/bad.json");
  EXPECT_NE(r.err.find("lines[0].batch: expected an integer"), std::string::npos) << r.err;
}

TEST(Watch, VideoFileFramesAreScoredLikeTheirImages) {
  const std::string dir = temp_dir("watch-video"), video = dir + "/clip.avi";
  const auto images = test_images();
  {
    cv::VideoWriter writer(video, cv::VideoWriter::fourcc('M', 'J', 'P', 'G'), 10, cv::Size(128, 128));
    ASSERT_TRUE(writer.isOpened());
    for (int i = 0; i < 12; ++i) {
      cv::Mat m = cv::imread(images[i % images.size()], cv::IMREAD_COLOR), small;
      cv::resize(m, small, cv::Size(128, 128));
      writer.write(small);
    }
  }
  // Every 3rd frame: 0, 3, 6, 9; the file ends, the results are delivered, the line exits 0.
  Watch w(dir, {video, "--refs", tiles_set(), "--every", "3", "--jsonl", dir + "/r.jsonl", "--ok-dir", dir + "/ok",
                "--ng-dir", dir + "/ng", "--outbox", dir + "/v.outbox"});
  EXPECT_EQ(w.process().wait(120s), 0) << w.log();
  const auto results = read_jsonl(dir + "/r.jsonl");
  ASSERT_EQ(results.size(), 4u) << w.log();
  std::vector<std::string> filed;
  for (const auto& r : results) {
    EXPECT_EQ(r["path"].get<std::string>().rfind(video + "#frame=", 0), 0u) << r;
    const std::string name = std::to_string(r["seq"].get<int64_t>()) + "_frame.png";
    filed.push_back(dir + (r["anomalous"].get<bool>() ? "/ng/" : "/ok/") + name);
    ASSERT_TRUE(fs::exists(filed.back())) << filed.back();
  }
  EXPECT_EQ(results[3]["path"], video + "#frame=9");
  // The filed frame (lossless PNG) scores as the frame did.
  const auto expected = cli_scores(tiles_set(), filed);
  for (size_t i = 0; i < results.size(); ++i)
    EXPECT_NEAR(results[i]["score"].get<double>(), expected.at(filed[i]), 1e-6) << filed[i];
  EXPECT_FALSE(fs::exists(dir + "/frames") && !fs::is_empty(dir + "/frames"));  // spooled frames are gone once filed

  // Behind the source: a one-frame queue that drops the newest frame. The file is read far faster
  // than it is scored, so frames are dropped — and every frame is either scored or counted.
  Watch behind(dir, {video, "--refs", tiles_set(), "--queue", "1", "--when-behind", "drop-newest", "--batch", "1",
                     "--jsonl", dir + "/behind.jsonl", "--outbox", dir + "/b.outbox"});
  EXPECT_EQ(behind.process().wait(120s), 0) << behind.log();
  const std::string log = behind.log();
  const auto at = log.find(" frames dropped while behind");
  ASSERT_NE(at, std::string::npos) << log;
  const int dropped = std::stoi(log.substr(log.rfind(' ', at - 1) + 1));
  EXPECT_GT(dropped, 0);
  EXPECT_EQ(read_jsonl(dir + "/behind.jsonl").size() + dropped, 12u) << log;
}

TEST(Watch, AravisFakeCameraFramesAreScored) {
  const std::string dir = temp_dir("watch-camera");
  Watch w(dir, {"aravis:Fake_1", "--refs", tiles_set(), "--max-fps", "5", "--jsonl", dir + "/r.jsonl", "--outbox",
                dir + "/c.outbox"});
  ASSERT_TRUE(eventually([&] { return read_jsonl(dir + "/r.jsonl").size() >= 3; }, 60s)) << w.log();
  w.process().signal(SIGTERM);
  EXPECT_EQ(w.process().wait(), 0) << w.log();
  int64_t last = 0;
  for (const auto& r : read_jsonl(dir + "/r.jsonl")) {
    EXPECT_EQ(r["path"].get<std::string>().rfind("aravis:Fake_1#frame=", 0), 0u) << r;
    EXPECT_TRUE(r.contains("score") && std::isfinite(r["score"].get<double>())) << r;
    EXPECT_GT(r["seq"].get<int64_t>(), last);
    last = r["seq"];
  }
  // A camera that is not there (yet) is retried and reported, not fatal: the line is a station.
  Watch missing(dir, {"aravis:NoSuchCamera", "--refs", tiles_set(), "--jsonl", dir + "/m.jsonl", "--outbox", dir + "/m.outbox"});
  ASSERT_TRUE(missing.wait_for_log("aravis:NoSuchCamera: cannot open the camera")) << missing.log();
  EXPECT_NE(missing.log().find("retrying"), std::string::npos);
  EXPECT_TRUE(missing.process().alive());
  missing.process().signal(SIGTERM);
  EXPECT_EQ(missing.process().wait(), 0) << missing.log();
}

TEST(Watch, StreamThatIsDownIsRetriedAndReported) {
  const std::string dir = temp_dir("watch-stream");
  const std::string url = "http://127.0.0.1:" + std::to_string(free_port()) + "/mjpeg";
  Watch w(dir, {url, "--refs", tiles_set(), "--jsonl", dir + "/r.jsonl", "--outbox", dir + "/s.outbox"});
  ASSERT_TRUE(w.wait_for_log(url + ": cannot open the video")) << w.log();
  std::this_thread::sleep_for(2s);
  EXPECT_TRUE(w.process().alive());
  const std::string log = w.log();
  size_t failures = 0;
  for (size_t at = log.find("cannot open the video"); at != std::string::npos; at = log.find("cannot open the video", at + 1)) ++failures;
  EXPECT_EQ(failures, 1u) << log;  // one line per change of state, not one per retry
  EXPECT_EQ(log.find("[tcp @"), std::string::npos) << log;  // FFmpeg's own log stays quiet
  w.process().signal(SIGTERM);
  EXPECT_EQ(w.process().wait(), 0) << w.log();
}

TEST(Outbox, KeepsResultsUntilEverySinkAckedAndSequencesAcrossReopen) {
  const std::string path = temp_dir("outbox") + "/o.db";
  {
    station::Outbox o(path);
    EXPECT_TRUE(o.open_line("l"));
    EXPECT_FALSE(o.open_line("l"));
    const station::FileStamp f{"/x.png", 10, 20};
    EXPECT_FALSE(o.is_done("l", f));
    EXPECT_EQ(o.append("l", {"a", "b"}, f, [](int64_t s) { return "{\"seq\":" + std::to_string(s) + "}"; }), 1);
    EXPECT_TRUE(o.is_done("l", f));
    EXPECT_FALSE(o.is_done("l", {"/x.png", 11, 20}));  // written again: a new part
    EXPECT_EQ(o.append("l", {"a", "b"}, std::nullopt, [](int64_t s) { return std::to_string(s); }), 2);
    o.ack("l", "a", 1);
    EXPECT_EQ(o.backlog("l"), 2);
    EXPECT_EQ(o.pending("l", "a", 10).size(), 1u);
    EXPECT_EQ(o.pending("l", "b", 10).size(), 2u);
    o.ack("l", "b", 1);
    EXPECT_EQ(o.backlog("l"), 1);
  }
  station::Outbox o(path);  // reopened: what was pending still is, and numbering goes on
  o.open_line("l");
  ASSERT_EQ(o.pending("l", "b", 10).size(), 1u);
  EXPECT_EQ(o.pending("l", "b", 10)[0].seq, 2);
  EXPECT_EQ(o.append("l", {"a"}, std::nullopt, [](int64_t s) { return std::to_string(s); }), 3);
  EXPECT_EQ(o.drop_oldest("l", 1), 1);  // keeps the newest one
  EXPECT_EQ(o.backlog("l"), 1);
  EXPECT_EQ(o.pending("l", "a", 10)[0].seq, 3);
}

}  // namespace
}  // namespace gad::test
