// `gad serve` end to end: the real binary on a loopback port, a real HTTP client. Register ->
// score -> restart -> identical scores; kill -9 during registrations keeps every acknowledged set;
// 50 malformed requests get the right 4xx and the server stays up; a full queue answers 429;
// SIGTERM drains in-flight requests.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "image/image.h"
#include "util/base64.h"
#include "serve/http.h"
#include "serve/store.h"
#include "serve_process.h"
#include "support.h"

namespace gad {
namespace {

using json = nlohmann::json;

using test::ServerProcess;
using test::elpv;
using test::post_json;
using test::refset_form;
using test::register_set;
using test::scores_of;
using test::slurp;

TEST(Serve, RegisterScoreRestartGivesIdenticalScoresAndSigtermDrains) {
  const std::string db = test::temp_dir("serve-restart") + "/refs.sqlite";
  const json two_images = {{"images", {base64_encode(slurp(elpv(10))), base64_encode(slurp(elpv(11)))}}};
  std::string id;
  std::vector<double> first_raw, first_json;
  {
    ServerProcess server(db);
    ASSERT_GT(server.port(), 0);
    auto c = server.client();
    auto health = c.Get("/healthz");
    ASSERT_TRUE(health);
    EXPECT_EQ(health->status, 200);
    auto api = c.Get("/openapi.json");
    ASSERT_TRUE(api);
    EXPECT_EQ(json::parse(api->body)["openapi"], "3.0.3");

    id = register_set(c, "solar_cell", {1, 2, 3});
    ASSERT_EQ(id.size(), 32u);
    auto list = c.Get("/v1/refsets");
    ASSERT_TRUE(list);
    auto sets = json::parse(list->body)["refsets"];
    ASSERT_EQ(sets.size(), 1u);
    EXPECT_EQ(sets[0]["id"], id);
    EXPECT_EQ(sets[0]["k"], 3);
    EXPECT_EQ(sets[0]["class"], "solar_cell");
    auto one = c.Get(("/v1/refsets/" + id).c_str());
    ASSERT_TRUE(one);
    EXPECT_EQ(one->status, 200);

    auto raw = c.Post(("/v1/refsets/" + id + "/score").c_str(), slurp(elpv(10)), "image/png");
    ASSERT_TRUE(raw);
    ASSERT_EQ(raw->status, 200) << raw->body;
    first_raw = scores_of(json::parse(raw->body));
    json both = post_json(c, "/v1/refsets/" + id + "/score?map=1", two_images);
    first_json = scores_of(both);
    ASSERT_EQ(first_json.size(), 2u);
    // The map: a PNG of the image's size.
    std::string png = *base64_decode(both["results"][0]["map_png"].get<std::string>());
    Image map = decode_image_bytes(reinterpret_cast<const uint8_t*>(png.data()), png.size(), "map");
    EXPECT_EQ(map.width, both["results"][0]["width"].get<int>());
    EXPECT_EQ(map.height, both["results"][0]["height"].get<int>());
    EXPECT_EQ(map.channels, 1);

    auto metrics = c.Get("/metrics");
    ASSERT_TRUE(metrics);
    for (const char* m : {"gad_requests_total{route=\"/v1/refsets/{id}/score\",method=\"POST\",code=\"200\"} 2",
                          "gad_request_duration_seconds_bucket{route=\"/v1/refsets/{id}/score\",le=\"+Inf\"} 2",
                          "gad_queue_depth 0", "gad_model_info{", "gad_refsets 1"})
      EXPECT_NE(metrics->body.find(m), std::string::npos) << m << "\n" << metrics->body;
  }  // the server is killed (SIGKILL) here
  // Restart on the same database (a slow batch window so the requests are in flight at SIGTERM).
  {
    ServerProcess server(db, {"--batch-wait-ms", "300"});
    ASSERT_GT(server.port(), 0);
    auto c = server.client();
    auto raw = c.Post(("/v1/refsets/" + id + "/score").c_str(), slurp(elpv(10)), "image/png");
    ASSERT_TRUE(raw);
    ASSERT_EQ(raw->status, 200) << raw->body;
    EXPECT_EQ(scores_of(json::parse(raw->body)), first_raw);  // bit-identical
    EXPECT_EQ(scores_of(post_json(c, "/v1/refsets/" + id + "/score", two_images)), first_json);

    std::vector<int> status(4, 0);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
      threads.emplace_back([&, i] {
        auto cc = server.client();
        auto r = cc.Post(("/v1/refsets/" + id + "/score").c_str(), slurp(elpv(20 + i)), "image/png");
        status[i] = r ? r->status : -1;
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    server.signal(SIGTERM);
    for (auto& t : threads) t.join();
    EXPECT_EQ(server.wait(), 0) << server.log();
    for (int i = 0; i < 4; ++i) EXPECT_EQ(status[i], 200) << "request " << i;
  }
  // Delete, then the id is gone.
  {
    ServerProcess server(db);
    auto c = server.client();
    auto del = c.Delete(("/v1/refsets/" + id).c_str());
    ASSERT_TRUE(del);
    EXPECT_EQ(del->status, 200);
    auto gone = c.Get(("/v1/refsets/" + id).c_str());
    ASSERT_TRUE(gone);
    EXPECT_EQ(gone->status, 404);
    auto score = c.Post(("/v1/refsets/" + id + "/score").c_str(), slurp(elpv(10)), "image/png");
    ASSERT_TRUE(score);
    EXPECT_EQ(score->status, 404);
  }
}

TEST(Serve, KillNineDuringRegistrationsKeepsEveryAcknowledgedSet) {
  const std::string db = test::temp_dir("serve-kill9") + "/refs.sqlite";
  std::map<std::string, int> acked;  // id -> K
  std::mt19937 rng(7);
  for (int round = 0; round < 4; ++round) {
    ServerProcess server(db);
    ASSERT_GT(server.port(), 0) << "round " << round;
    std::mutex m;
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int t = 0; t < 2; ++t)
      clients.emplace_back([&, t] {
        auto c = server.client();
        for (int i = 0; !stop; ++i) {
          int k = 1 + (i + t) % 3;
          std::vector<int> imgs;
          for (int j = 0; j < k; ++j) imgs.push_back(1 + (i * 3 + j + t * 7) % 50);
          auto r = c.Post("/v1/refsets", refset_form("cell", imgs));
          if (!r) break;  // killed
          if (r->status == 201) {
            std::lock_guard<std::mutex> lock(m);
            acked[json::parse(r->body)["id"].get<std::string>()] = k;
          }
        }
      });
    std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 700));
    server.signal(SIGKILL);
    stop = true;
    for (auto& t : clients) t.join();
    EXPECT_EQ(server.wait(), 128 + SIGKILL);

    serve::SqliteStore store(db);
    EXPECT_EQ(store.integrity_check(), "ok") << "round " << round;
    for (const auto& [id, k] : acked) {
      auto row = store.get(id);
      ASSERT_TRUE(row) << "acknowledged set " << id << " lost in round " << round;
      EXPECT_EQ(row->k, k);
      EXPECT_GT(row->bytes, 0);
    }
  }
  ASSERT_GT(acked.size(), 4u);
  // Every stored set is complete: a fresh server scores against the first and last acknowledged.
  ServerProcess server(db);
  auto c = server.client();
  for (const auto& id : {acked.begin()->first, acked.rbegin()->first}) {
    auto r = c.Post(("/v1/refsets/" + id + "/score").c_str(), slurp(elpv(60)), "image/png");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
}

TEST(Serve, FiftyMalformedRequestsGetTheRight4xxAndTheServerStaysUp) {
  const std::string db = test::temp_dir("serve-bad") + "/refs.sqlite";
  const std::string token = "s3cret";
  ServerProcess server(db, {"--token", token, "--max-body", "1MB", "--max-k", "4", "--max-images", "4"});
  ASSERT_GT(server.port(), 0);
  auto c = server.client(token);
  const std::string id = register_set(c, "cell", {1});
  ASSERT_FALSE(id.empty());
  const ServerProcess* sp = &server;  // lambdas below capture the pointer, never a copy
  const std::string score = "/v1/refsets/" + id + "/score";
  const std::string png = slurp(elpv(5));
  const std::string b64 = base64_encode(png);

  struct Case {
    std::string what;
    int want;
    std::function<httplib::Result()> send;
  };
  std::vector<Case> cases;
  auto add = [&](const std::string& what, int want, std::function<httplib::Result()> send) {
    cases.push_back({what, want, std::move(send)});
  };
  auto raw_post = [&](const std::string& path, const std::string& body, const std::string& type,
                      httplib::Headers headers = {}) {
    return [=] {
      auto cc = sp->client(token);
      return cc.Post(path.c_str(), headers, body, type.c_str());
    };
  };
  // Authentication (8). The probes answer without the token (checked after the cases).
  const std::string export_path = "/v1/refsets/" + id + "/export";
  for (const std::string path : {export_path, std::string("/v1/refsets"), std::string("/metrics"), std::string("/openapi.json")})
    add("no token " + path, 401, [=] { return sp->client().Get(path.c_str()); });
  add("wrong token", 401, [=] { return sp->client("nope").Get("/v1/refsets"); });
  add("basic auth", 401, [=] {
    auto cc = sp->client();
    cc.set_basic_auth("a", "b");
    return cc.Get("/v1/refsets");
  });
  add("no token on score", 401, [=] { return sp->client().Post(score.c_str(), png, "image/png"); });
  add("no token on register", 401, [=] { return sp->client().Post("/v1/refsets", refset_form("cell", {1})); });
  // Content types (5).
  add("register text/plain", 415, raw_post("/v1/refsets", "hello", "text/plain"));
  add("register image/png", 415, raw_post("/v1/refsets", png, "image/png"));
  add("score text/plain", 415, raw_post(score, png, "text/plain"));
  add("score no content type", 415, raw_post(score, png, ""));
  add("register x-www-form-urlencoded", 415, raw_post("/v1/refsets", "class=a", "application/x-www-form-urlencoded"));
  // Multipart structure (4).
  const std::string boundary = "XyZb0undary";
  const std::string part = "--" + boundary + "\r\nContent-Disposition: form-data; name=\"class\"\r\n\r\ncell\r\n--" +
                           boundary + "\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n" +
                           "Content-Type: image/png\r\n\r\n" + png + "\r\n--" + boundary + "--\r\n";
  add("truncated multipart", 400,
      raw_post("/v1/refsets", part.substr(0, part.size() / 2), "multipart/form-data; boundary=" + boundary));
  add("multipart without boundary", 400, raw_post("/v1/refsets", part, "multipart/form-data"));
  add("multipart wrong boundary", 400, raw_post("/v1/refsets", part, "multipart/form-data; boundary=other"));
  add("truncated multipart score", 400, raw_post(score, part.substr(0, 100), "multipart/form-data; boundary=" + boundary));
  // Headers and sizes (4).
  add("huge header", 400, [=] {
    auto cc = sp->client(token);
    return cc.Get("/healthz", {{"X-Huge", std::string(64 * 1024, 'a')}});
  });
  add("many headers", 431, [=] {
    auto cc = sp->client(token);
    httplib::Headers h;
    for (int i = 0; i < 200; ++i) h.emplace("X-H" + std::to_string(i), std::string(100, 'b'));
    return cc.Get("/healthz", h);
  });
  add("body over --max-body", 413, raw_post(score, std::string(2 << 20, 'x'), "image/png"));
  add("multipart over --max-body", 413, [=] {
    auto cc = sp->client(token);
    return cc.Post("/v1/refsets", httplib::MultipartFormDataItems{{"class", "cell", "", ""},
                                                                  {"images", std::string(3 << 20, 'z'), "big.png", "image/png"}});
  });
  // Images (12).
  add("register non-image", 400, [=] {
    auto cc = sp->client(token);
    return cc.Post("/v1/refsets", httplib::MultipartFormDataItems{{"class", "cell", "", ""},
                                                                  {"images", "not an image at all", "x.png", "image/png"}});
  });
  add("register truncated png", 400, [=] {
    auto cc = sp->client(token);
    return cc.Post("/v1/refsets", httplib::MultipartFormDataItems{{"class", "cell", "", ""},
                                                                  {"images", png.substr(0, 60), "x.png", "image/png"}});
  });
  add("register zero images", 400, [=] {
    auto cc = sp->client(token);
    return cc.Post("/v1/refsets", httplib::MultipartFormDataItems{{"class", "cell", "", ""}});
  });
  add("register K too large", 400, [=] { return sp->client(token).Post("/v1/refsets", refset_form("cell", {1, 2, 3, 4, 5})); });
  add("register no class", 400, [=] {
    auto cc = sp->client(token);
    return cc.Post("/v1/refsets", httplib::MultipartFormDataItems{{"images", png, "a.png", "image/png"}});
  });
  add("register empty class", 400, [=] { return sp->client(token).Post("/v1/refsets", refset_form("", {1})); });
  add("score non-image", 400, raw_post(score, "GIF89a garbage", "image/gif"));
  add("score empty body", 400, raw_post(score, "", "image/png"));
  add("score truncated png", 400, raw_post(score, png.substr(0, png.size() / 2), "image/png"));
  add("score zero images (multipart)", 400, [=] {
    auto cc = sp->client(token);
    return cc.Post(score.c_str(), httplib::MultipartFormDataItems{{"note", "x", "", ""}});
  });
  add("score too many images", 400, raw_post(score, json{{"images", {b64, b64, b64, b64, b64}}}.dump(), "application/json"));
  add("score jpeg header only", 400, raw_post(score, std::string("\xff\xd8\xff\xe0", 4), "image/jpeg"));
  // JSON bodies (8).
  add("register malformed JSON", 400, raw_post("/v1/refsets", "{\"class\": ", "application/json"));
  add("register JSON array body", 400, raw_post("/v1/refsets", "[1,2]", "application/json"));
  add("register JSON images not array", 400, raw_post("/v1/refsets", json{{"class", "a"}, {"images", "x"}}.dump(), "application/json"));
  add("register JSON bad base64", 400, raw_post("/v1/refsets", json{{"class", "a"}, {"images", {"!!!!"}}}.dump(), "application/json"));
  add("register JSON server path", 400,
      raw_post("/v1/refsets", json{{"class", "a"}, {"images", {"file:///etc/hosts"}}}.dump(), "application/json"));
  add("register JSON zero images", 400, raw_post("/v1/refsets", json{{"class", "a"}, {"images", json::array()}}.dump(), "application/json"));
  add("register JSON class not string", 400, raw_post("/v1/refsets", json{{"class", 3}, {"images", {b64}}}.dump(), "application/json"));
  add("score JSON number images", 400, raw_post(score, json{{"images", {1, 2}}}.dump(), "application/json"));
  // Ids and routes (9).
  for (const std::string bad : {"nothex", "0123456789abcdef0123456789abcdef", "..%2F..%2Fetc%2Fpasswd", "ABCDEF0123456789ABCDEF0123456789"}) {
    add("get bad id " + bad, 404, [=] { return sp->client(token).Get(("/v1/refsets/" + bad).c_str()); });
  }
  add("score unknown id", 404, raw_post("/v1/refsets/0123456789abcdef0123456789abcdef/score", png, "image/png"));
  add("score bad id", 404, raw_post("/v1/refsets/xyz/score", png, "image/png"));
  add("delete unknown id", 404, [=] { return sp->client(token).Delete("/v1/refsets/0123456789abcdef0123456789abcdef"); });
  add("unknown endpoint", 404, [=] { return sp->client(token).Get("/v2/nothing"); });
  add("path outside the API", 404, [=] { return sp->client(token).Get("/../../etc/passwd"); });

  ASSERT_EQ(cases.size(), 50u);
  for (const auto& k : cases) {
    auto r = k.send();
    ASSERT_TRUE(r) << k.what << ": no response (" << httplib::to_string(r.error()) << ")";
    EXPECT_EQ(r->status, k.want) << k.what << ": " << r->body;
    if (r->status != 404 || k.what.rfind("unknown endpoint", 0) != 0) {
      auto body = json::parse(r->body, nullptr, false);
      EXPECT_TRUE(body.is_object() && body.contains("error")) << k.what << ": " << r->body;
    }
    ASSERT_TRUE(server.alive()) << "after " << k.what << ": " << server.log();
  }
  for (const char* probe : {"/healthz", "/readyz"}) {
    auto open = server.client().Get(probe);
    ASSERT_TRUE(open) << probe;
    EXPECT_EQ(open->status, 200) << probe << " without the token: " << open->body;
  }
  auto again = c.Post(score.c_str(), png, "image/png");
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200) << again->body;
}

TEST(Serve, FullQueueAnswers429WithRetryAfter) {
  const std::string db = test::temp_dir("serve-429") + "/refs.sqlite";
  ServerProcess server(db, {"--queue", "2", "--batch-wait-ms", "300"});
  ASSERT_GT(server.port(), 0);
  auto c = server.client();
  const std::string id = register_set(c, "cell", {1});
  ASSERT_FALSE(id.empty());
  const json body = {{"images", {base64_encode(slurp(elpv(7))), base64_encode(slurp(elpv(8)))}}};
  std::mutex m;
  std::multiset<int> statuses;
  bool retry_after = true;
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      auto cc = server.client();
      auto r = cc.Post(("/v1/refsets/" + id + "/score").c_str(), body.dump(), "application/json");
      std::lock_guard<std::mutex> lock(m);
      statuses.insert(r ? r->status : -1);
      if (r && r->status == 429) retry_after = retry_after && r->get_header_value("Retry-After") == "1";
    });
  for (auto& t : threads) t.join();
  EXPECT_GE(statuses.count(200), 1u);
  EXPECT_GE(statuses.count(429), 1u);
  EXPECT_EQ(statuses.count(200) + statuses.count(429), 8u);
  EXPECT_TRUE(retry_after);
  auto health = c.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

}  // namespace
}  // namespace gad

namespace gad {
namespace {

// POST /v1/zero-shot: the uploads score each other exactly as the library scores the files; a
// broken upload is its own error; too few images are a 400 naming the minimum.
TEST(Serve, ZeroShotRouteEqualsTheLibrary) {
  test::ServerProcess server(test::temp_dir("serve-zero-shot") + "/refs.sqlite");
  auto c = server.client();
  std::vector<std::string> files;
  json body = {{"images", json::array()}};
  for (int i = 1; i <= 8; ++i) {
    files.push_back(test::elpv(i));
    body["images"].push_back(base64_encode(test::slurp(test::elpv(i))));
  }
  json got = test::post_json(c, "/v1/zero-shot", body);
  ModelOptions o;
  o.model = test::kLiteModel;
  o.precision = Precision::FP32;
  o.scorer = Scorer::MuSc;
  const auto want = Detector(o).score_zero_shot(files);
  ASSERT_EQ(got["results"].size(), 8u) << got.dump();
  for (size_t i = 0; i < 8; ++i) {
    // Another process on the same machine: within 1e-6 (the thread pools may split convolutions
    // differently), as every batched response equals its unbatched score.
    EXPECT_NEAR(got["results"][i]["score"].get<double>(), want[i].score, 1e-6);
    EXPECT_EQ(got["results"][i]["anomalous"].get<bool>(), *want[i].anomalous());
    EXPECT_EQ(got["results"][i]["verdict_rule"], "robust-z>3.5");
  }
  body["images"].push_back(base64_encode(test::slurp(test::elpv(9)).substr(0, 200)));  // a header, then cut
  got = test::post_json(c, "/v1/zero-shot", body);
  ASSERT_EQ(got["results"].size(), 9u) << got.dump();
  EXPECT_TRUE(got["results"][8].contains("error"));
  EXPECT_FALSE(got["results"][8].contains("score"));
  EXPECT_FALSE(got["results"][8].contains("anomalous"));
  const json few = {{"images", {body["images"][0], body["images"][1]}}};
  auto r = c.Post("/v1/zero-shot", few.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("at least 5"), std::string::npos) << r->body;
  r = c.Post("/v1/zero-shot?z=-1", body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
}

// A server started with --scorer winclip answers the zero-shot route with WinCLIP's text score for
// ?class=NAME, equal to the library's (another process: 1e-6); without a class it is a 400.
TEST(Serve, ZeroShotWinclipTakesTheClassName) {
  const std::string model = test::inctrl_fixture("tiny_model/model.safetensors"), config = test::inctrl_fixture("tiny_model/config.json");
  test::ServerProcess server(test::temp_dir("serve-winclip") + "/refs.sqlite",
                             {"--model", model, "--config", config, "--scorer", "winclip"});
  auto c = server.client();
  std::vector<std::string> files;
  json body = {{"images", json::array()}};
  for (int i = 1; i <= 3; ++i) {
    files.push_back(test::elpv(i));
    body["images"].push_back(base64_encode(test::slurp(test::elpv(i))));
  }
  const json got = test::post_json(c, "/v1/zero-shot?class=solar_cell", body);
  EXPECT_EQ(got["scorer"], "winclip");
  ModelOptions o;
  o.model = model;
  o.config = config;
  o.precision = Precision::FP32;
  o.scorer = Scorer::WinCLIP;
  ScoreOptions so;
  so.class_name = "solar_cell";
  const auto want = Detector(o).score_zero_shot(files, so);
  ASSERT_EQ(got["results"].size(), 3u) << got.dump();
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(got["results"][i]["score"].get<double>(), want[i].score, 1e-6);
  auto r = c.Post("/v1/zero-shot", body.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_NE(r->body.find("class name"), std::string::npos) << r->body;
}

}  // namespace
}  // namespace gad
