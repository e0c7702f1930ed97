// `gad serve` replicas on one PostgreSQL store: any replica scores any set, changes through one
// are seen by the next request to another, nginx (deploy/nginx.conf) fails over when one dies,
// and the schema is created, migrated and guarded. Everything runs on 127.0.0.1 on free ports;
// no test measures time (the replica kill's gap is printed, not asserted).
#include <sqlite3.h>

#include <atomic>
#include <mutex>

#include "replica_processes.h"
#include "serve/store.h"

namespace gad::test {
namespace {

httplib::MultipartFormDataItems images_form(const std::vector<int>& images, const std::string& far = "") {
  httplib::MultipartFormDataItems items;
  if (!far.empty()) items.push_back({"far", far, "", ""});
  for (int i : images) items.push_back({"images", slurp(elpv(i)), "cell" + std::to_string(i) + ".png", "image/png"});
  return items;
}

json score(httplib::Client& c, const std::string& id, const std::vector<int>& images, int want = 200) {
  auto r = c.Post(("/v1/refsets/" + id + "/score").c_str(), images_form(images));
  EXPECT_TRUE(r);
  if (!r) return json();
  EXPECT_EQ(r->status, want) << r->body;
  return json::parse(r->body);
}

TEST(ServeReplicas, ShareOneStoreAndSeeEachOthersChanges) {
  PostgresCluster pg;
  pg.create_database("shared");
  const std::string sqlite_db = temp_dir("replicas-sqlite") + "/refs.sqlite";
  ServerProcess a(pg.uri("shared")), b(pg.uri("shared")), alone(sqlite_db);
  auto ca = a.client(), cb = b.client(), cs = alone.client();

  const std::vector<int> refs = {1, 2, 3, 4}, queries = {10, 11, 12};
  const std::string id = register_set(ca, "cell", refs);
  const std::string sqlite_id = register_set(cs, "cell", refs);
  ASSERT_FALSE(id.empty());
  ASSERT_FALSE(sqlite_id.empty());
  // B has never seen the set: it loads it from PostgreSQL and scores as one SQLite server does
  // (the same engine on the same set bytes; 1e-6 covers the 9 significant digits of the JSON).
  const auto via_b = scores_of(score(cb, id, queries)), via_sqlite = scores_of(score(cs, sqlite_id, queries));
  ASSERT_EQ(via_b.size(), queries.size());
  ASSERT_EQ(via_sqlite.size(), queries.size());
  for (size_t i = 0; i < queries.size(); ++i) EXPECT_NEAR(via_b[i], via_sqlite[i], 1e-6) << "image " << i;
  // A caches version 1 (it registered it) and scores without a threshold.
  EXPECT_FALSE(score(ca, id, {10})["results"][0].contains("anomalous"));

  // Calibrated through B: A's very next score carries "anomalous" (version 2 reloaded).
  auto cal = cb.Post(("/v1/refsets/" + id + "/calibrate").c_str(), images_form({20, 21, 22, 23, 24, 25, 26, 27}, "0.1"));
  ASSERT_TRUE(cal);
  ASSERT_EQ(cal->status, 200) << cal->body;
  const json after = score(ca, id, {10});
  ASSERT_TRUE(after["results"][0].contains("anomalous")) << after.dump();
  auto row = ca.Get(("/v1/refsets/" + id).c_str());
  ASSERT_TRUE(row);
  EXPECT_EQ(json::parse(row->body)["version"], 2);

  // Deleted through A: B's first request after the acknowledgment is a 404 (B still caches the set).
  auto del = ca.Delete(("/v1/refsets/" + id).c_str());
  ASSERT_TRUE(del);
  ASSERT_EQ(del->status, 200) << del->body;
  const auto t0 = std::chrono::steady_clock::now();
  score(cb, id, {10}, 404);
  std::printf("stale-read window: B answered 404 %.1f ms after A acknowledged the delete (first request)\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  std::fflush(stdout);
  auto gone = cb.Get(("/v1/refsets/" + id).c_str());
  ASSERT_TRUE(gone);
  EXPECT_EQ(gone->status, 404);
}

TEST(ServeReplicas, RequestIdsAndReadiness) {
  PostgresCluster pg;
  pg.create_database("ready");
  ServerProcess a(pg.uri("ready"), {"--verbose"});
  auto c = a.client();
  auto given = c.Get("/v1/refsets", {{"X-Request-Id", "line-7.cam-2:0042"}});
  ASSERT_TRUE(given);
  EXPECT_EQ(given->get_header_value("X-Request-Id"), "line-7.cam-2:0042");
  auto made = c.Get("/v1/refsets/0123456789abcdef0123456789abcdef", {{"X-Request-Id", "bad id with spaces"}});
  ASSERT_TRUE(made);
  EXPECT_EQ(made->status, 404);  // errors carry one too
  const std::string fresh = made->get_header_value("X-Request-Id");
  EXPECT_EQ(fresh.size(), 32u) << fresh;
  // The log line is written just after the response is sent.
  for (int i = 0; i < 250 && a.log().find("id=" + fresh) == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_NE(a.log().find("id=line-7.cam-2:0042"), std::string::npos) << a.log();
  EXPECT_NE(a.log().find("id=" + fresh), std::string::npos) << a.log();

  auto ready = c.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  EXPECT_EQ(json::parse(ready->body)["status"], "ready");
  // The store goes away: not ready (a balancer stops sending), still alive; back when it returns.
  pg.stop();
  auto down = c.Get("/readyz");
  ASSERT_TRUE(down);
  EXPECT_EQ(down->status, 503) << down->body;
  EXPECT_EQ(json::parse(down->body)["status"], "store_unavailable");
  auto list = c.Get("/v1/refsets");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 503) << list->body;
  auto alive = c.Get("/healthz");
  ASSERT_TRUE(alive);
  EXPECT_EQ(alive->status, 200);
  pg.start();
  auto back = c.Get("/readyz");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->status, 200) << back->body;
  const std::string id = register_set(c, "cell", {1, 2});
  EXPECT_FALSE(id.empty());
}

TEST(ServeReplicas, SchemaIsCreatedOnAnEmptyDatabaseAndANewerOneRefused) {
  PostgresCluster pg;
  pg.create_database("empty");
  EXPECT_EQ(pg.psql("empty", "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0");
  {
    ServerProcess first(pg.uri("empty"));
    auto c = first.client();
    EXPECT_FALSE(register_set(c, "cell", {1, 2}).empty());
  }
  EXPECT_EQ(pg.psql("empty", "SELECT version FROM gad_schema"), "1");
  EXPECT_EQ(pg.psql("empty", "SELECT version FROM refsets"), "1");
  {
    ServerProcess again(pg.uri("empty"));  // an up-to-date schema is left as it is
    auto c = again.client();
    auto list = c.Get("/v1/refsets");
    ASSERT_TRUE(list);
    EXPECT_EQ(json::parse(list->body)["refsets"].size(), 1u);
  }
  EXPECT_EQ(pg.psql("empty", "SELECT count(*) FROM gad_schema"), "1");
  ASSERT_EQ(pg.psql("empty", "UPDATE gad_schema SET version = 99"), "UPDATE 1");
  auto refused = run_gad({"serve", "--model", kLiteModel, "--db", pg.uri("empty"), "--port", "0"}, 120);
  EXPECT_EQ(refused.code, 1) << refused.err;
  EXPECT_NE(refused.err.find("database schema version 99 is newer than this gad knows (1)"), std::string::npos)
      << refused.err;
  auto unreachable = run_gad({"serve", "--model", kLiteModel, "--db", "postgresql://gad@127.0.0.1:" +
                                                                        std::to_string(free_port()) + "/none", "--port", "0"},
                             120);
  EXPECT_EQ(unreachable.code, 1) << unreachable.err;
  EXPECT_NE(unreachable.err.find("cannot connect to PostgreSQL"), std::string::npos) << unreachable.err;
}

void sqlite_exec(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  EXPECT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err), SQLITE_OK) << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

TEST(ServeReplicas, SqliteFileFromBeforeVersioningIsMigratedAndANewerOneRefused) {
  const std::string path = temp_dir("sqlite-migrate") + "/old.sqlite";
  sqlite_exec(path,
              "CREATE TABLE refsets(id TEXT PRIMARY KEY, class TEXT NOT NULL, k INTEGER NOT NULL, created TEXT NOT NULL, "
              "fingerprint TEXT NOT NULL, blob BLOB NOT NULL);"
              "INSERT INTO refsets VALUES('0123456789abcdef0123456789abcdef', 'cell', 2, '2026-01-01T00:00:00.000Z', "
              "'f00d', x'0102030405')");
  {
    serve::SqliteStore store(path);
    auto row = store.get("0123456789abcdef0123456789abcdef");
    ASSERT_TRUE(row);
    EXPECT_EQ(row->version, 1);
    EXPECT_EQ(row->bytes, 5);
    EXPECT_EQ(store.update_blob(row->id, "abc"), std::optional<int64_t>(2));
    EXPECT_EQ(store.load(row->id)->version, 2);
    EXPECT_EQ(store.load(row->id)->bytes, "abc");
    EXPECT_EQ(store.update_blob("ffffffffffffffffffffffffffffffff", "abc"), std::nullopt);
  }
  sqlite_exec(path, "PRAGMA user_version = 7");
  EXPECT_NE(error_of([&] { serve::SqliteStore store(path); }).find("database schema version 7 is newer than this gad knows"),
            std::string::npos);
}

// One client thread's requests through nginx: when each started, how it ended, who answered.
struct Outcome {
  std::chrono::steady_clock::time_point start, end;
  int status = 0;  // 0: no response
  std::string upstream, id;
};

TEST(ServeReplicas, NginxFailsOverWhenAReplicaIsKilled) {
  PostgresCluster pg;
  pg.create_database("failover");
  const int port_a = free_port(), port_b = free_port(), port_lb = free_port();
  auto a = std::make_unique<ServerProcess>(pg.uri("failover"), std::vector<std::string>{"--port", std::to_string(port_a)});
  ServerProcess b(pg.uri("failover"), {"--port", std::to_string(port_b)});
  NginxProcess lb(port_lb, port_a, port_b);
  auto client = [&] {
    httplib::Client c("127.0.0.1", port_lb);
    c.set_connection_timeout(5, 0);
    c.set_read_timeout(120, 0);
    return c;
  };
  auto c0 = client();
  const std::string id = register_set(c0, "cell", {1, 2});
  ASSERT_FALSE(id.empty());

  // Steady load: three threads scoring, one registering, until each has done enough after the kill.
  using Clock = std::chrono::steady_clock;
  std::atomic<bool> killed{false};
  std::atomic<int> before_kill{0};
  Clock::time_point kill_sent, kill_time;
  std::vector<std::vector<Outcome>> outcomes(4);
  auto load = [&](int thread) {
    auto c = client();
    const bool registering = thread == 3;
    int after = 0;
    for (int n = 0; n < 400 && after < (registering ? 4 : 8); ++n) {
      Outcome o;
      o.start = Clock::now();
      const bool started_after = killed.load();
      auto r = registering ? c.Post("/v1/refsets", refset_form("cell", {3, 4}))
                           : c.Post(("/v1/refsets/" + id + "/score").c_str(), images_form({10 + thread}));
      o.end = Clock::now();
      if (r) {
        o.status = r->status;
        o.upstream = r->get_header_value("X-Upstream");
        if (registering && r->status == 201) o.id = json::parse(r->body)["id"];
      }
      outcomes[thread].push_back(o);
      if (started_after) ++after;
      if (o.status / 100 == 2) ++before_kill;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back(load, t);
  for (int i = 0; i < 3000 && before_kill < 12; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  kill_sent = Clock::now();
  a->signal(SIGKILL);
  EXPECT_EQ(a->wait(), 128 + SIGKILL);  // its sockets are closed once it is reaped
  kill_time = Clock::now();
  killed = true;
  for (auto& t : threads) t.join();

  const std::string b_addr = "127.0.0.1:" + std::to_string(port_b);
  std::vector<std::string> acked;
  std::vector<Clock::time_point> answered;
  int failed_in_flight = 0;
  for (const auto& thread : outcomes)
    for (const auto& o : thread) {
      if (o.status / 100 == 2) answered.push_back(o.end);
      if (!o.id.empty()) acked.push_back(o.id);
      if (o.start >= kill_time) {
        // Every request sent after A died is answered, by B.
        EXPECT_EQ(o.status / 100, 2) << "status " << o.status;
        EXPECT_GE(o.upstream.size(), b_addr.size());
        EXPECT_EQ(o.upstream.substr(o.upstream.size() - std::min(o.upstream.size(), b_addr.size())), b_addr) << o.upstream;
      } else if (o.status / 100 != 2) {
        EXPECT_TRUE(o.end >= kill_sent && (o.status == 0 || o.status >= 500)) << "status " << o.status;
        ++failed_in_flight;  // in flight on A when it died
      }
    }
  EXPECT_LE(failed_in_flight, 4);  // at most one request per client thread was in flight
  // No acknowledged registration is lost: each one scores through B.
  ASSERT_FALSE(acked.empty());
  auto cb = b.client();
  for (const auto& set : acked) {
    auto r = cb.Get(("/v1/refsets/" + set).c_str());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << "acknowledged set " << set << " lost";
  }
  score(cb, acked.back(), {10});
  std::sort(answered.begin(), answered.end());
  double gap_ms = 0;
  for (size_t i = 1; i < answered.size(); ++i)
    if (answered[i] >= kill_sent && answered[i - 1] <= kill_sent + std::chrono::seconds(5))
      gap_ms = std::max(gap_ms, std::chrono::duration<double, std::milli>(answered[i] - answered[i - 1]).count());
  std::printf("failover: %zu requests, %d failed in flight on the killed replica, %zu registrations acknowledged; "
              "longest gap between answers after the kill: %.0f ms\n",
              answered.size() + failed_in_flight, failed_in_flight, acked.size(), gap_ms);
  std::fflush(stdout);  // before the next fork

  // A restarts on its port and serves again once nginx tries it (fail_timeout later).
  a = std::make_unique<ServerProcess>(pg.uri("failover"), std::vector<std::string>{"--port", std::to_string(port_a)});
  const std::string a_addr = "127.0.0.1:" + std::to_string(port_a);
  bool served_by_a = false;
  auto c = client();
  for (int i = 0; i < 300 && !served_by_a; ++i) {
    auto r = c.Get(("/v1/refsets/" + id).c_str());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    served_by_a = r->get_header_value("X-Upstream") == a_addr;
    if (!served_by_a) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(served_by_a) << "the restarted replica never answered through nginx";
}

}  // namespace
}  // namespace gad::test
