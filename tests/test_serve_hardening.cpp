// `gad serve` fail-safe behaviour (the real binary on 127.0.0.1): the probes answer without the
// token; the token comes from a file or GAD_TOKEN, once; an open address without a token is
// warned about; GET of a set shows its threshold; a calibration may exceed the queue; sets move
// between servers as .gadref files (corrupt ones and another model's are a 4xx); registration
// and import honour Idempotency-Key; AnomalyDINO sets need no class name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <thread>

#include "serve_process.h"

namespace gad {
namespace {

using test::json;
using test::run_gad;
using test::ServerProcess;
using test::slurp;

// An environment variable for the scope; servers started meanwhile inherit it.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) { setenv(name, value.c_str(), 1); }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

int status_of(const httplib::Result& r) { return r ? r->status : -1; }

json get_json(httplib::Client& c, const std::string& path, int want = 200) {
  auto r = c.Get(path.c_str());
  EXPECT_EQ(status_of(r), want) << path << ": " << (r ? r->body : httplib::to_string(r.error()));
  return r ? json::parse(r->body, nullptr, false) : json();
}

// The server's log once it holds `text` (or after 10 s).
std::string log_with(const ServerProcess& server, const std::string& text) {
  std::string log = server.log();
  for (int i = 0; i < 500 && log.find(text) == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    log = server.log();
  }
  return log;
}

// `n` small PNGs of seeded noise (different per index), as calibration normals.
httplib::MultipartFormDataItems noise_form(int n, int first_seed) {
  httplib::MultipartFormDataItems items;
  for (int i = 0; i < n; ++i) {
    cv::Mat img(64, 64, CV_8UC3);
    cv::RNG rng(static_cast<uint64_t>(first_seed + i));
    rng.fill(img, cv::RNG::UNIFORM, 90, 160);
    std::vector<uchar> png;
    cv::imencode(".png", img, png);
    items.push_back({"images", std::string(png.begin(), png.end()), "noise" + std::to_string(i) + ".png", "image/png"});
  }
  return items;
}

std::vector<double> scores_of_form(httplib::Client& c, const std::string& id, const httplib::MultipartFormDataItems& f) {
  auto r = c.Post(("/v1/refsets/" + id + "/score").c_str(), f);
  EXPECT_EQ(status_of(r), 200) << (r ? r->body : "");
  return r ? test::scores_of(json::parse(r->body)) : std::vector<double>{};
}

TEST(ServeHardening, ProbesAnswerWithoutTheTokenFromAFileOrTheEnvironment) {
  const std::string dir = test::temp_dir("hard-probes");
  const std::string file = dir + "/token";
  std::ofstream(file) << "  from-a-file \t\nthe second line is not read\n";
  {
    ServerProcess server(dir + "/a.sqlite", {"--token-file", file});
    ASSERT_GT(server.port(), 0);
    auto anon = server.client();
    EXPECT_EQ(status_of(anon.Get("/healthz")), 200);
    EXPECT_EQ(status_of(anon.Get("/readyz")), 200);
    EXPECT_EQ(status_of(anon.Get("/metrics")), 401);  // public only with --metrics-public
    EXPECT_EQ(status_of(anon.Get("/v1/refsets")), 401);
    EXPECT_EQ(status_of(server.client("the second line is not read").Get("/v1/refsets")), 401);
    auto c = server.client("from-a-file");
    EXPECT_EQ(status_of(c.Get("/v1/refsets")), 200);
    EXPECT_EQ(status_of(c.Get("/metrics")), 200);
  }
  ScopedEnv env("GAD_TOKEN", "from-the-environment");
  ServerProcess server(dir + "/b.sqlite", {"--metrics-public"});
  ASSERT_GT(server.port(), 0);
  auto anon = server.client();
  EXPECT_EQ(status_of(anon.Get("/healthz")), 200);
  EXPECT_EQ(status_of(anon.Get("/metrics")), 200);
  EXPECT_EQ(status_of(anon.Get("/v1/refsets")), 401);
  EXPECT_EQ(status_of(anon.Post("/v1/refsets", test::refset_form("cell", {1}))), 401);
  EXPECT_EQ(status_of(server.client("from-the-environment").Get("/v1/refsets")), 200);
}

// Each mistake fails before the model loads, with one line naming the sources or the file.
TEST(ServeHardening, TokenGivenTwiceOrFromABadFileIsAOneLineError) {
  const std::string dir = test::temp_dir("hard-token-errors");
  std::ofstream(dir + "/good") << "t0ken\n";
  std::ofstream(dir + "/blank") << " \t\nsecond\n";
  struct Case {
    std::vector<std::string> args;
    bool env;
    std::vector<std::string> named;
  };
  const std::vector<Case> cases = {
      {{"--token", "a", "--token-file", dir + "/good"}, false, {"--token", "--token-file"}},
      {{"--token", "a"}, true, {"--token", "GAD_TOKEN"}},
      {{"--token-file", dir + "/good"}, true, {"--token-file", "GAD_TOKEN"}},
      {{"--token-file", dir + "/missing"}, false, {dir + "/missing", "cannot open"}},
      {{"--token-file", dir + "/blank"}, false, {dir + "/blank", "no token"}},
      {{"--token-file", dir}, false, {dir, "cannot read"}},
      {{"--token", ""}, false, {"--token", "empty"}},
      {{}, true, {"GAD_TOKEN", "empty"}},  // set but empty: refused rather than serving without a token
  };
  for (const auto& k : cases) {
    std::vector<std::string> args = {"serve", "--model", test::kLiteModel, "--db", dir + "/x.sqlite", "--port", "0"};
    args.insert(args.end(), k.args.begin(), k.args.end());
    std::unique_ptr<ScopedEnv> env;
    if (k.env) env = std::make_unique<ScopedEnv>("GAD_TOKEN", k.args.empty() ? "" : "e");
    const auto r = run_gad(args, 20);
    const std::string what = k.named[0] + " " + k.named[1];
    EXPECT_EQ(r.code, 1) << what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
    for (const auto& name : k.named) EXPECT_NE(r.err.find(name), std::string::npos) << name << " in: " << r.err;
  }
}

TEST(ServeHardening, AnOpenAddressWithoutATokenIsWarnedAboutOnce) {
  const std::string dir = test::temp_dir("hard-warning");
  {
    ServerProcess open(dir + "/a.sqlite", {"--host", "0.0.0.0"}, /*wait_ready=*/false);
    ASSERT_GT(open.port(), 0);
    const std::string log = log_with(open, "gad: warning:");
    const auto at = log.find("gad: warning:");
    ASSERT_NE(at, std::string::npos) << log;
    EXPECT_EQ(log.find("gad: warning:", at + 1), std::string::npos) << log;
    EXPECT_NE(log.substr(at, log.find('\n', at) - at).find("0.0.0.0"), std::string::npos) << log;
  }
  {
    ServerProcess loopback(dir + "/b.sqlite", {"--host", "localhost"});
    ASSERT_GT(loopback.port(), 0);
    EXPECT_EQ(loopback.log().find("gad: warning:"), std::string::npos) << loopback.log();
  }
  ScopedEnv env("GAD_TOKEN", "x");
  ServerProcess guarded(dir + "/c.sqlite", {"--host", "0.0.0.0"});
  ASSERT_GT(guarded.port(), 0);
  EXPECT_EQ(guarded.log().find("gad: warning:"), std::string::npos) << guarded.log();
}

// GET shows the threshold once calibrated; the export, imported on a fresh server and store
// (raw body or multipart), scores identically and keeps the threshold; broken files are a 400.
TEST(ServeHardening, ExportImportRoundTripKeepsScoresAndThreshold) {
  const std::string dir = test::temp_dir("hard-export");
  ServerProcess first(dir + "/first.sqlite");
  ASSERT_GT(first.port(), 0);
  auto c = first.client();
  const std::string id = test::register_set(c, "solar_cell", {1, 2, 3});
  ASSERT_FALSE(id.empty());
  EXPECT_FALSE(get_json(c, "/v1/refsets/" + id).contains("threshold"));
  auto normals = test::refset_form("", {20, 21, 22, 23, 24, 25, 26, 27});
  normals.erase(normals.begin());  // the empty class field
  normals.push_back({"far", "0.25", "", ""});
  auto cal = c.Post(("/v1/refsets/" + id + "/calibrate").c_str(), normals);
  ASSERT_EQ(status_of(cal), 200) << (cal ? cal->body : "");
  const json threshold = json::parse(cal->body);
  const json shown = get_json(c, "/v1/refsets/" + id);
  for (const char* field : {"threshold", "far", "method", "n", "time", "setup"})
    EXPECT_EQ(shown[field], threshold[field]) << field;
  EXPECT_EQ(shown["version"], 2);
  // A second calibration joins the history; a one-image one is refused (too few for 0.05).
  auto second_cal = c.Post(("/v1/refsets/" + id + "/calibrate").c_str(), normals);
  ASSERT_EQ(status_of(second_cal), 200) << (second_cal ? second_cal->body : "");
  auto one = test::refset_form("", {28});
  one.erase(one.begin());
  auto refused = c.Post(("/v1/refsets/" + id + "/calibrate").c_str(), one);
  EXPECT_EQ(status_of(refused), 400) << (refused ? refused->body : "");
  const json history = get_json(c, "/v1/refsets/" + id)["thresholds"];
  ASSERT_EQ(history.size(), 2u) << history;
  EXPECT_EQ(history[0]["threshold"], threshold["threshold"]);
  const std::string query = slurp(test::elpv(10));
  auto want = c.Post(("/v1/refsets/" + id + "/score").c_str(), query, "image/png");
  ASSERT_EQ(status_of(want), 200);

  auto exported = c.Get(("/v1/refsets/" + id + "/export").c_str());
  ASSERT_EQ(status_of(exported), 200);
  EXPECT_EQ(exported->get_header_value("Content-Type"), "application/octet-stream");
  EXPECT_EQ(exported->get_header_value("Content-Disposition"), "attachment; filename=\"" + id + ".gadref\"");
  const std::string file = exported->body;

  ServerProcess second(dir + "/second.sqlite");
  ASSERT_GT(second.port(), 0);
  auto c2 = second.client();
  auto imported = c2.Post("/v1/refsets/import", file, "application/octet-stream");
  ASSERT_EQ(status_of(imported), 201) << (imported ? imported->body : "");
  const json set = json::parse(imported->body);
  const std::string id2 = set["id"];
  EXPECT_EQ(imported->get_header_value("Location"), "/v1/refsets/" + id2);
  EXPECT_EQ(set["class"], "solar_cell");
  EXPECT_EQ(set["k"], 3);
  EXPECT_EQ(set["threshold"], threshold["threshold"]);
  auto got = c2.Post(("/v1/refsets/" + id2 + "/score").c_str(), query, "image/png");
  ASSERT_EQ(status_of(got), 200);
  const json got_result = json::parse(got->body)["results"][0], want_result = json::parse(want->body)["results"][0];
  EXPECT_EQ(got_result["score"], want_result["score"]);  // bit-identical
  EXPECT_EQ(got_result["anomalous"], want_result["anomalous"]);
  EXPECT_TRUE(got_result.contains("anomalous"));
  EXPECT_EQ(get_json(c2, "/v1/refsets/" + id2)["threshold"], threshold["threshold"]);
  auto again = c2.Get(("/v1/refsets/" + id2 + "/export").c_str());
  ASSERT_EQ(status_of(again), 200);
  EXPECT_TRUE(again->body == file) << "the re-exported set differs from the original";
  auto multipart = c2.Post("/v1/refsets/import", httplib::MultipartFormDataItems{{"file", file, "set.gadref", ""}});
  ASSERT_EQ(status_of(multipart), 201) << (multipart ? multipart->body : "");
  EXPECT_NE(json::parse(multipart->body)["id"], id2);

  std::string flipped = file;  // bytes of the JSON header (after the 8-byte length)
  for (size_t i = 8; i < 40; ++i) flipped[i] = static_cast<char>(flipped[i] ^ 0x5a);
  std::string high = file;  // the same bytes turned into non-UTF-8 ones, which the error quotes
  for (size_t i = 8; i < 40; ++i) high[i] = static_cast<char>(high[i] ^ 0xff);
  std::string length = file;
  length[0] = static_cast<char>(length[0] ^ 0x40);
  struct Case {
    std::string what, body, type;
    int want;
  };
  const std::vector<Case> cases = {
      {"truncated", file.substr(0, file.size() / 2), "application/octet-stream", 400},
      {"header bytes flipped", flipped, "application/octet-stream", 400},
      {"header bytes made non-UTF-8", high, "application/octet-stream", 400},
      {"header length flipped", length, "application/octet-stream", 400},
      {"a PNG", query, "application/octet-stream", 400},
      {"empty", "", "application/octet-stream", 400},
      {"text/plain", file, "text/plain", 415},
  };
  for (const auto& k : cases) {
    auto r = c2.Post("/v1/refsets/import", k.body, k.type.c_str());
    ASSERT_TRUE(r) << k.what;
    EXPECT_EQ(r->status, k.want) << k.what << ": " << r->body;
    const std::string error = json::parse(r->body, nullptr, false).value("error", "");
    EXPECT_FALSE(error.empty()) << k.what << ": " << r->body;
    EXPECT_EQ(error.find('\n'), std::string::npos) << k.what << ": " << error;
    EXPECT_EQ(error.find("gad-ref-"), std::string::npos) << k.what << " names a temporary file: " << error;
    std::printf("import of %s: %d %s\n", k.what.c_str(), r->status, error.c_str());
  }
  EXPECT_EQ(status_of(c2.Get("/v1/refsets/%FF%FE")), 404);  // a non-UTF-8 id, quoted in the error
  ASSERT_TRUE(second.alive()) << second.log();
  auto no_file = c2.Post("/v1/refsets/import", httplib::MultipartFormDataItems{{"other", file, "set.gadref", ""}});
  EXPECT_EQ(status_of(no_file), 400);
  EXPECT_EQ(get_json(c2, "/v1/refsets")["refsets"].size(), 2u);
  EXPECT_EQ(status_of(c2.Get("/v1/refsets/0123456789abcdef0123456789abcdef/export")), 404);
  const json paths = get_json(c2, "/openapi.json")["paths"];
  EXPECT_TRUE(paths.contains("/v1/refsets/import") && paths.contains("/v1/refsets/{id}/export")) << paths.dump();
}

// AnomalyDINO (the DINOv2 default) uses no class: registration goes without one, as in the
// CLI. A set made with the lite model is refused with a message naming the other model.
TEST(ServeHardening, AnomalyDinoSetsNeedNoClassAndAnotherModelsFileIsRefused) {
  const std::string dir = test::temp_dir("hard-dino");
  std::string lite_file;
  {
    ServerProcess lite(dir + "/lite.sqlite");
    auto c = lite.client();
    const std::string id = test::register_set(c, "cell", {1});
    ASSERT_FALSE(id.empty());
    auto r = c.Get(("/v1/refsets/" + id + "/export").c_str());
    ASSERT_EQ(status_of(r), 200);
    lite_file = r->body;
  }
  ServerProcess dino(dir + "/dino.sqlite",
                     {"--model", test::shared("fixtures/dinov2/tiny/model.pth"), "--resolution", "224"});
  ASSERT_GT(dino.port(), 0);
  auto c = dino.client();
  auto made = c.Post("/v1/refsets", httplib::MultipartFormDataItems{{"images", slurp(test::elpv(1)), "a.png", "image/png"}});
  ASSERT_EQ(status_of(made), 201) << (made ? made->body : "");
  const std::string id = json::parse(made->body)["id"];
  auto score = c.Post(("/v1/refsets/" + id + "/score").c_str(), slurp(test::elpv(2)), "image/png");
  EXPECT_EQ(status_of(score), 200) << (score ? score->body : "");
  auto other = c.Post("/v1/refsets/import", lite_file, "application/octet-stream");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 400) << other->body;
  EXPECT_NE(other->body.find("made with another model"), std::string::npos) << other->body;
}

TEST(ServeHardening, IdempotencyKeyReplaysTheFirstRegistrationAndSurvivesARestart) {
  const std::string dir = test::temp_dir("hard-idempotency");
  const std::string db = dir + "/refs.sqlite";
  std::string id;
  {
    ServerProcess server(db);
    ASSERT_GT(server.port(), 0);
    auto c = server.client();
    auto post = [&](const std::string& key, const std::string& cls, const std::vector<int>& images) {
      return c.Post("/v1/refsets", {{"Idempotency-Key", key}}, test::refset_form(cls, images));
    };
    auto first = post("order-17", "cell", {1, 2});
    ASSERT_EQ(status_of(first), 201) << (first ? first->body : "");
    id = json::parse(first->body)["id"];
    auto retry = post("order-17", "cell", {1, 2});  // a new multipart boundary, the same request
    ASSERT_EQ(status_of(retry), 200) << (retry ? retry->body : "");
    EXPECT_EQ(json::parse(retry->body)["id"], id);
    EXPECT_EQ(retry->get_header_value("Idempotent-Replayed"), "true");
    EXPECT_EQ(retry->get_header_value("Location"), "/v1/refsets/" + id);
    EXPECT_EQ(status_of(post("order-17", "cell", {1, 3})), 409);
    EXPECT_EQ(status_of(post("order-17", "other", {1, 2})), 409);
    EXPECT_EQ(status_of(post(std::string(201, 'k'), "cell", {1})), 400);
    EXPECT_EQ(status_of(post(std::string(200, 'k'), "cell", {1})), 201);
    EXPECT_EQ(get_json(c, "/v1/refsets")["refsets"].size(), 2u);

    // Concurrent tries with one key: one set; one 201, the others answer as its retries.
    std::mutex m;
    std::vector<int> statuses;
    std::set<std::string> ids;
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        auto cc = server.client();
        auto r = cc.Post("/v1/refsets", {{"Idempotency-Key", "race"}}, test::refset_form("cell", {4}));
        std::lock_guard<std::mutex> lock(m);
        statuses.push_back(status_of(r));
        if (r && r->status / 100 == 2) ids.insert(json::parse(r->body)["id"].get<std::string>());
      });
    for (auto& t : threads) t.join();
    EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 201), 1);
    EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 200), 3);
    EXPECT_EQ(ids.size(), 1u);
    EXPECT_EQ(get_json(c, "/v1/refsets")["refsets"].size(), 3u);

    // Import takes keys too (the digest covers the file's bytes).
    auto file = c.Get(("/v1/refsets/" + id + "/export").c_str());
    ASSERT_EQ(status_of(file), 200);
    auto import = [&](const std::string& body) {
      return c.Post("/v1/refsets/import", {{"Idempotency-Key", "import-1"}}, body, "application/octet-stream");
    };
    auto imported = import(file->body);
    ASSERT_EQ(status_of(imported), 201);
    auto imported_again = import(file->body);
    ASSERT_EQ(status_of(imported_again), 200);
    EXPECT_EQ(json::parse(imported_again->body)["id"], json::parse(imported->body)["id"]);
    EXPECT_EQ(status_of(c.Post("/v1/refsets", {{"Idempotency-Key", "import-1"}}, test::refset_form("cell", {1, 2}))), 409);
  }
  ServerProcess restarted(db);  // keys live in the store
  auto c = restarted.client();
  auto post = [&] { return c.Post("/v1/refsets", {{"Idempotency-Key", "order-17"}}, test::refset_form("cell", {1, 2})); };
  auto after = post();
  ASSERT_EQ(status_of(after), 200);
  EXPECT_EQ(json::parse(after->body)["id"], id);
  ASSERT_EQ(status_of(c.Delete(("/v1/refsets/" + id).c_str())), 200);  // frees its key
  auto fresh = post();
  ASSERT_EQ(status_of(fresh), 201);
  EXPECT_NE(json::parse(fresh->body)["id"], id);
}

// --max-images, not --queue, bounds a calibration: 40 normals through a queue of 16 are scored
// in chunks, and the threshold is the rule's on the scores the score route gives them.
TEST(ServeHardening, CalibrationBeyondTheQueueIsScoredInChunks) {
  ServerProcess server(test::temp_dir("hard-calibrate") + "/refs.sqlite", {"--queue", "16", "--max-images", "48"});
  ASSERT_GT(server.port(), 0);
  auto c = server.client();
  const std::string id = test::register_set(c, "cell", {1, 2});
  ASSERT_FALSE(id.empty());
  auto normals = noise_form(40, 100);
  auto form = normals;
  form.push_back({"far", "0.1", "", ""});
  auto cal = c.Post(("/v1/refsets/" + id + "/calibrate").c_str(), form);
  ASSERT_EQ(status_of(cal), 200) << (cal ? cal->body : "");
  const json t = json::parse(cal->body);
  EXPECT_EQ(t["n"], 40);
  EXPECT_EQ(get_json(c, "/v1/refsets/" + id)["n"], 40);
  std::vector<double> scores;  // score requests stay within the queue: three of them
  for (size_t from = 0; from < normals.size(); from += 16) {
    const httplib::MultipartFormDataItems part(normals.begin() + from,
                                               normals.begin() + std::min(normals.size(), from + 16));
    for (double s : scores_of_form(c, id, part)) scores.push_back(s);
  }
  ASSERT_EQ(scores.size(), 40u);
  std::sort(scores.begin(), scores.end());
  const size_t rank = static_cast<size_t>(std::ceil(41 * 0.9));  // ceil((n + 1)(1 - far))-th smallest
  EXPECT_NEAR(t["threshold"].get<double>(), scores[rank - 1], 1e-6);
  auto too_many = c.Post(("/v1/refsets/" + id + "/calibrate").c_str(), noise_form(49, 0));
  EXPECT_EQ(status_of(too_many), 400);
  auto score_too_many = c.Post(("/v1/refsets/" + id + "/score").c_str(), noise_form(17, 0));
  EXPECT_EQ(status_of(score_too_many), 400);
}

}  // namespace
}  // namespace gad
