// `gad serve` replicas on one PostgreSQL store: any replica scores any set, changes through one
// are seen by the next request to another, nginx (deploy/nginx.conf) fails over when one dies,
// and the schema is created, migrated and guarded. Everything runs on 127.0.0.1 on free ports;
// no test measures time (the replica kill's gap is printed, not asserted).
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <set>

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
  auto cal = cb.Post(("/v1/refsets/" + id + "/calibrate").c_str(), images_form({20, 21, 22, 23, 24, 25, 26, 27, 28}, "0.1"));
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
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("gad_rejected_requests_total{reason=\"store_unavailable\"}"), std::string::npos)
      << metrics->body;
  pg.start();
  auto back = c.Get("/readyz");
  ASSERT_TRUE(back);
  EXPECT_EQ(back->status, 200) << back->body;
  const std::string id = register_set(c, "cell", {1, 2});
  EXPECT_FALSE(id.empty());
}

TEST(ServeReplicas, ReadyzOnTheEmbeddedSqliteStore) {
  ServerProcess server(temp_dir("readyz-sqlite") + "/refs.sqlite");
  auto c = server.client();
  auto ready = c.Get("/readyz");
  ASSERT_TRUE(ready);
  EXPECT_EQ(ready->status, 200) << ready->body;
  EXPECT_EQ(json::parse(ready->body)["store"], "ok");
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
  EXPECT_EQ(pg.psql("empty", "SELECT version FROM gad_schema"), "2");
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
  EXPECT_NE(refused.err.find("database schema version 99 is newer than this gad knows (2)"), std::string::npos)
      << refused.err;
  auto unreachable = run_gad({"serve", "--model", kLiteModel, "--db", "postgresql://gad@127.0.0.1:" +
                                                                        std::to_string(free_port()) + "/none", "--port", "0"},
                             120);
  EXPECT_EQ(unreachable.code, 1) << unreachable.err;
  EXPECT_NE(unreachable.err.find("cannot connect to PostgreSQL"), std::string::npos) << unreachable.err;
}

// A database left by a schema-1 gad is migrated (idempotency added, the set kept). Tries with one
// Idempotency-Key through both replicas at once make one set; a retry through either replays it;
// another request with the key is a 409; deleting the set frees the key.
TEST(ServeReplicas, IdempotencyKeysHoldAcrossReplicasOnAMigratedSchema) {
  PostgresCluster pg;
  pg.create_database("keys");
  ASSERT_EQ(pg.psql("keys", "CREATE TABLE gad_schema(version integer NOT NULL)"), "CREATE TABLE");
  ASSERT_EQ(pg.psql("keys", "INSERT INTO gad_schema VALUES(1)"), "INSERT 0 1");
  ASSERT_EQ(pg.psql("keys",
                    "CREATE TABLE refsets(id text PRIMARY KEY, class text NOT NULL, k bigint NOT NULL, created text "
                    "NOT NULL, fingerprint text NOT NULL, version bigint NOT NULL DEFAULT 1, blob bytea NOT NULL)"),
            "CREATE TABLE");
  ASSERT_EQ(pg.psql("keys", "INSERT INTO refsets(id, class, k, created, fingerprint, blob) VALUES("
                            "'0123456789abcdef0123456789abcdef', 'cell', 1, '2026-01-01T00:00:00.000Z', 'f00d', '\\x00')"),
            "INSERT 0 1");
  ServerProcess a(pg.uri("keys")), b(pg.uri("keys"));
  ASSERT_GT(a.port(), 0);
  ASSERT_GT(b.port(), 0);
  EXPECT_EQ(pg.psql("keys", "SELECT version FROM gad_schema"), "2");
  EXPECT_EQ(pg.psql("keys", "SELECT count(*) FROM refsets"), "1");

  std::mutex m;
  std::vector<int> statuses;
  std::set<std::string> ids;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      auto c = (t % 2 ? b : a).client();
      auto r = c.Post("/v1/refsets", {{"Idempotency-Key", "batch-9"}}, refset_form("cell", {1, 2}));
      std::lock_guard<std::mutex> lock(m);
      statuses.push_back(r ? r->status : -1);
      if (r && r->status / 100 == 2) ids.insert(json::parse(r->body)["id"].get<std::string>());
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 201), 1);
  EXPECT_EQ(std::count(statuses.begin(), statuses.end(), 200), 3);
  ASSERT_EQ(ids.size(), 1u);
  const std::string id = *ids.begin();
  EXPECT_EQ(pg.psql("keys", "SELECT count(*) FROM refsets"), "2");
  EXPECT_EQ(pg.psql("keys", "SELECT refset_id FROM idempotency WHERE key = 'batch-9'"), id);

  auto ca = a.client(), cb = b.client();
  auto retry = cb.Post("/v1/refsets", {{"Idempotency-Key", "batch-9"}}, refset_form("cell", {1, 2}));
  ASSERT_TRUE(retry);
  EXPECT_EQ(retry->status, 200) << retry->body;
  EXPECT_EQ(json::parse(retry->body)["id"], id);
  auto other = ca.Post("/v1/refsets", {{"Idempotency-Key", "batch-9"}}, refset_form("cell", {1, 3}));
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 409) << other->body;
  auto del = cb.Delete(("/v1/refsets/" + id).c_str());
  ASSERT_TRUE(del);
  EXPECT_EQ(del->status, 200);
  EXPECT_EQ(pg.psql("keys", "SELECT count(*) FROM idempotency"), "0");
  auto fresh = ca.Post("/v1/refsets", {{"Idempotency-Key", "batch-9"}}, refset_form("cell", {1, 2}));
  ASSERT_TRUE(fresh);
  EXPECT_EQ(fresh->status, 201) << fresh->body;
  EXPECT_NE(json::parse(fresh->body)["id"], id);
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
    EXPECT_FALSE(store.find_key("any"));  // the idempotency table exists
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

// Steady load through nginx: three threads scoring set `id`, one registering sets. After mark(),
// each thread sends `after` more requests (registrations: half as many) and stops.
class SteadyLoad {
 public:
  using Clock = std::chrono::steady_clock;
  SteadyLoad(int port, const std::string& id, int after) : port_(port), id_(id), after_(after), outcomes_(4) {
    for (int t = 0; t < 4; ++t) threads_.emplace_back([this, t] { run(t); });
  }
  ~SteadyLoad() { join(); }
  void wait_for_answers(int n) {
    for (int i = 0; i < 3000 && answers_ < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  void mark(Clock::time_point when) {
    marked_at_ = when;
    marked_ = true;
  }
  const std::vector<std::vector<Outcome>>& join() {
    for (auto& t : threads_)
      if (t.joinable()) t.join();
    return outcomes_;
  }
  Clock::time_point marked_at() const { return marked_at_; }

 private:
  void run(int thread) {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5, 0);
    c.set_read_timeout(120, 0);
    const bool registering = thread == 3;
    int after = 0;
    for (int n = 0; n < 400 && after < (registering ? after_ / 2 : after_); ++n) {
      Outcome o;
      const bool started_after = marked_.load();
      o.start = Clock::now();
      auto r = registering ? c.Post("/v1/refsets", refset_form("cell", {3, 4}))
                           : c.Post(("/v1/refsets/" + id_ + "/score").c_str(), images_form({10 + thread}));
      o.end = Clock::now();
      if (r) {
        o.status = r->status;
        o.upstream = r->get_header_value("X-Upstream");
        if (registering && r->status == 201) o.id = json::parse(r->body)["id"];
      }
      outcomes_[thread].push_back(o);
      if (started_after) ++after;
      if (o.status / 100 == 2) ++answers_;
    }
  }
  int port_;
  std::string id_;
  int after_;
  std::vector<std::vector<Outcome>> outcomes_;
  std::vector<std::thread> threads_;
  std::atomic<bool> marked_{false};
  std::atomic<int> answers_{0};
  Clock::time_point marked_at_;
};

bool ends_with(const std::string& text, const std::string& tail) {
  return text.size() >= tail.size() && text.compare(text.size() - tail.size(), tail.size(), tail) == 0;
}

// The acknowledged registrations of a load run; each must be stored (read through `replica`).
std::vector<std::string> expect_acknowledged_sets_stored(const std::vector<std::vector<Outcome>>& outcomes,
                                                         const ServerProcess& replica) {
  std::vector<std::string> acked;
  for (const auto& thread : outcomes)
    for (const auto& o : thread)
      if (!o.id.empty()) acked.push_back(o.id);
  EXPECT_FALSE(acked.empty());
  auto c = replica.client();
  for (const auto& set : acked) {
    auto r = c.Get(("/v1/refsets/" + set).c_str());
    EXPECT_TRUE(r && r->status == 200) << "acknowledged set " << set << " lost";
  }
  if (!acked.empty()) score(c, acked.back(), {10});
  return acked;
}

struct Fleet {  // PostgreSQL, replicas A and B on fixed ports, nginx in front, one registered set
  PostgresCluster pg;
  int port_a = free_port(), port_b = free_port(), port_lb = free_port();
  std::unique_ptr<ServerProcess> a, b;
  std::unique_ptr<NginxProcess> lb;
  std::string id;
  explicit Fleet(const std::string& db) {
    pg.create_database(db);
    a = std::make_unique<ServerProcess>(pg.uri(db), std::vector<std::string>{"--port", std::to_string(port_a)});
    b = std::make_unique<ServerProcess>(pg.uri(db), std::vector<std::string>{"--port", std::to_string(port_b)});
    lb = std::make_unique<NginxProcess>(port_lb, port_a, port_b);
    httplib::Client c("127.0.0.1", port_lb);
    c.set_read_timeout(120, 0);
    id = register_set(c, "cell", {1, 2});
  }
  std::string b_addr() const { return "127.0.0.1:" + std::to_string(port_b); }
};

TEST(ServeReplicas, NginxFailsOverWhenAReplicaIsKilled) {
  Fleet f("failover");
  ASSERT_FALSE(f.id.empty());
  using Clock = SteadyLoad::Clock;
  SteadyLoad load(f.port_lb, f.id, 8);
  load.wait_for_answers(12);
  const auto kill_sent = Clock::now();
  f.a->signal(SIGKILL);
  EXPECT_EQ(f.a->wait(), 128 + SIGKILL);
  const auto reaped = Clock::now();  // A's sockets are closed once it is reaped
  load.mark(reaped);
  const auto& outcomes = load.join();

  std::vector<Clock::time_point> answered;
  int failed_in_flight = 0, total = 0;
  for (const auto& thread : outcomes)
    for (const auto& o : thread) {
      ++total;
      if (o.status / 100 == 2) answered.push_back(o.end);
      if (o.start >= reaped) {
        // Every request sent after A died is answered, by B.
        EXPECT_EQ(o.status / 100, 2) << "status " << o.status;
        EXPECT_TRUE(ends_with(o.upstream, f.b_addr())) << o.upstream;
      } else if (o.status / 100 != 2) {
        EXPECT_TRUE(o.end >= kill_sent && (o.status == 0 || o.status >= 500)) << "status " << o.status;
        ++failed_in_flight;  // in flight on A when it died
      }
    }
  EXPECT_LE(failed_in_flight, 4);  // at most one request per client thread was in flight
  const auto acked = expect_acknowledged_sets_stored(outcomes, *f.b);
  std::sort(answered.begin(), answered.end());
  double gap_ms = 0;
  for (size_t i = 1; i < answered.size(); ++i)
    if (answered[i] >= kill_sent && answered[i - 1] <= kill_sent + std::chrono::seconds(5))
      gap_ms = std::max(gap_ms, std::chrono::duration<double, std::milli>(answered[i] - answered[i - 1]).count());
  std::printf("failover: %d requests, %d failed in flight on the killed replica, %zu registrations acknowledged; "
              "longest gap between answers after the kill: %.0f ms\n",
              total, failed_in_flight, acked.size(), gap_ms);
  std::fflush(stdout);  // before the next fork

  // A restarts on its port and serves again once nginx tries it (fail_timeout later).
  f.a = std::make_unique<ServerProcess>(f.pg.uri("failover"), std::vector<std::string>{"--port", std::to_string(f.port_a)});
  const std::string a_addr = "127.0.0.1:" + std::to_string(f.port_a);
  bool served_by_a = false;
  httplib::Client c("127.0.0.1", f.port_lb);
  for (int i = 0; i < 300 && !served_by_a; ++i) {
    auto r = c.Get(("/v1/refsets/" + f.id).c_str());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    served_by_a = r->get_header_value("X-Upstream") == a_addr;
    if (!served_by_a) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(served_by_a) << "the restarted replica never answered through nginx";
}

// A rolling restart: SIGTERM drains A (it answers what it has read, then exits 0) while nginx
// sends everything else to B. Scores are never lost; a registration could only fail in the
// instant a connection is accepted by the kernel but not yet by A as it closes its listener.
TEST(ServeReplicas, SigtermDrainUnderLoadThroughNginxLosesNoScore) {
  Fleet f("drain");
  ASSERT_FALSE(f.id.empty());
  SteadyLoad load(f.port_lb, f.id, 6);
  load.wait_for_answers(12);
  f.a->signal(SIGTERM);
  load.mark(SteadyLoad::Clock::now());
  EXPECT_EQ(f.a->wait(), 0);
  const auto& outcomes = load.join();
  int failed_registrations = 0;
  for (size_t t = 0; t < outcomes.size(); ++t)
    for (const auto& o : outcomes[t]) {
      if (t < 3) EXPECT_EQ(o.status, 200) << "score lost in the drain";
      else if (o.status != 201) ++failed_registrations;
    }
  EXPECT_LE(failed_registrations, 1);
  expect_acknowledged_sets_stored(outcomes, *f.b);
}

}  // namespace
}  // namespace gad::test
