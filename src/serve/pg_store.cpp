#include "serve/pg_store.h"

#include <libpq-fe.h>

#include <cstdlib>

#include "serve/http_error.h"
#include "util/error.h"

namespace gad::serve {
namespace {

// Any key: only gad's replicas take it, around the schema check and migration.
constexpr int64_t kMigrationLock = 0x676164;  // "gad"

struct Result {
  PGresult* r = nullptr;
  explicit Result(PGresult* res) : r(res) {}
  ~Result() { PQclear(r); }
  Result(const Result&) = delete;
  Result& operator=(const Result&) = delete;
  int rows() const { return PQntuples(r); }
  std::string text(int row, int col) const {
    return std::string(PQgetvalue(r, row, col), static_cast<size_t>(PQgetlength(r, row, col)));
  }
  int64_t number(int row, int col) const { return std::strtoll(PQgetvalue(r, row, col), nullptr, 10); }
};

// A statement parameter: text, or raw bytes (bytea) sent in binary.
struct Param {
  const std::string& value;
  bool binary = false;
};

std::string without_password(const std::string& uri) {
  const auto scheme = uri.find("://");
  if (scheme == std::string::npos) return uri;
  const auto at = uri.find('@', scheme + 3);
  const auto colon = uri.find(':', scheme + 3);
  if (at == std::string::npos || colon == std::string::npos || colon > at) return uri;
  return uri.substr(0, colon) + ":***" + uri.substr(at);
}

// libpq's message without its trailing newline.
std::string last_error(pg_conn* conn) {
  std::string msg = PQerrorMessage(conn);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return msg;
}

constexpr const char* kRowColumns = "id, class, k, created, fingerprint, octet_length(blob), version";

RefRow read_row(const Result& res, int i) {
  RefRow r;
  r.id = res.text(i, 0);
  r.class_name = res.text(i, 1);
  r.k = res.number(i, 2);
  r.created = res.text(i, 3);
  r.fingerprint = res.text(i, 4);
  r.bytes = res.number(i, 5);
  r.version = res.number(i, 6);
  return r;
}

// Runs one statement (its own transaction unless inside BEGIN ... COMMIT). A broken connection
// is 503 (read-only statements reset it and try once more first); any other failure is a 500.
Result run(pg_conn* conn, const std::string& where, const std::string& sql, const std::vector<Param>& params,
           bool binary_result = false, bool read_only = false) {
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  for (const auto& p : params) {
    values.push_back(p.value.data());
    lengths.push_back(static_cast<int>(p.value.size()));
    formats.push_back(p.binary ? 1 : 0);
  }
  for (int attempt = 0;; ++attempt) {
    Result res(PQexecParams(conn, sql.c_str(), static_cast<int>(params.size()), nullptr, values.data(), lengths.data(),
                            formats.data(), binary_result ? 1 : 0));
    const auto status = PQresultStatus(res.r);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return Result(std::exchange(res.r, nullptr));
    const std::string msg = last_error(conn);
    if (PQstatus(conn) == CONNECTION_BAD) {
      PQreset(conn);
      if (read_only && attempt == 0 && PQstatus(conn) == CONNECTION_OK) continue;
      throw HttpError(503, "store_unavailable", "reference-set store unavailable (" + where + "): " + msg);
    }
    throw HttpError(500, "store_error", "reference-set store (" + where + "): " + msg);
  }
}

}  // namespace

PgStore::PgStore(const std::string& uri) : where_(without_password(uri)) {
  const char* keys[] = {"dbname", "connect_timeout", "application_name", nullptr};
  const char* values[] = {uri.c_str(), "3", "gad serve", nullptr};
  conn_ = PQconnectdbParams(keys, values, 1);  // 1: dbname is a URI; later keys add to it
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    const std::string msg = conn_ ? last_error(conn_) : "out of memory";
    PQfinish(conn_);
    conn_ = nullptr;
    fail(where_, ": cannot connect to PostgreSQL (", msg, ")");
  }
  try {
    migrate();
  } catch (const HttpError& e) {
    PQfinish(conn_);
    conn_ = nullptr;
    fail(where_, ": ", e.what());
  } catch (...) {
    PQfinish(conn_);
    conn_ = nullptr;
    throw;
  }
}

PgStore::~PgStore() { PQfinish(conn_); }

void PgStore::migrate() {
  run(conn_, where_, "BEGIN", {});
  try {
    const std::string lock = std::to_string(kMigrationLock);
    run(conn_, where_, "SELECT pg_advisory_xact_lock($1::bigint)", {{lock}});
    run(conn_, where_, "CREATE TABLE IF NOT EXISTS gad_schema(version integer NOT NULL)", {});
    {
      Result r = run(conn_, where_, "SELECT coalesce(max(version), 0) FROM gad_schema", {});
      const int64_t version = r.number(0, 0);
      if (version > kSchemaVersion)
        fail(where_, ": database schema version ", version, " is newer than this gad knows (", kSchemaVersion,
             "); upgrade gad or use another database");
      if (version < 1)
        run(conn_, where_,
            "CREATE TABLE refsets(id text PRIMARY KEY, class text NOT NULL, k bigint NOT NULL, created text NOT NULL, "
            "fingerprint text NOT NULL, version bigint NOT NULL DEFAULT 1, blob bytea NOT NULL)",
            {});
      if (version < 2) {
        run(conn_, where_,
            "CREATE TABLE IF NOT EXISTS idempotency(key text PRIMARY KEY, request_sha256 text NOT NULL, "
            "refset_id text NOT NULL, created text NOT NULL)",
            {});
        run(conn_, where_, "CREATE INDEX IF NOT EXISTS idempotency_refset ON idempotency(refset_id)", {});
      }
      const std::string now = std::to_string(kSchemaVersion);
      if (version == 0)
        run(conn_, where_, "INSERT INTO gad_schema(version) VALUES(" + now + ")", {});
      else if (version < kSchemaVersion)
        run(conn_, where_, "UPDATE gad_schema SET version = " + now, {});
    }
    run(conn_, where_, "COMMIT", {});
  } catch (...) {
    PQclear(PQexec(conn_, "ROLLBACK"));
    throw;
  }
}

pg_conn* PgStore::connection() {
  if (PQstatus(conn_) != CONNECTION_OK) PQreset(conn_);
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string msg = last_error(conn_);
    throw HttpError(503, "store_unavailable", "reference-set store unavailable (" + where_ + "): " + msg);
  }
  return conn_;
}

void PgStore::insert_row(pg_conn* conn, const RefRow& row, const std::string& blob) {
  const std::string k = std::to_string(row.k);
  run(conn, where_, "INSERT INTO refsets(id, class, k, created, fingerprint, blob) VALUES($1, $2, $3::bigint, $4, $5, $6)",
      {{row.id}, {row.class_name}, {k}, {row.created}, {row.fingerprint}, {blob, true}});
}

void PgStore::insert(const RefRow& row, const std::string& blob) {
  std::lock_guard<std::mutex> lock(mutex_);
  insert_row(connection(), row, blob);
}

std::optional<IdempotencyRecord> PgStore::find_key(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  Result r = run(connection(), where_,
                 "SELECT i.key, i.request_sha256, i.refset_id FROM idempotency i JOIN refsets r ON r.id = i.refset_id "
                 "WHERE i.key = $1",
                 {{key}}, false, true);
  if (r.rows() == 0) return std::nullopt;
  return IdempotencyRecord{r.text(0, 0), r.text(0, 1), r.text(0, 2)};
}

// The key goes in first: a concurrent transaction inserting the same key waits for ours, then
// finds it taken. A taken key whose set is gone (deleted by a build that left keys behind) is
// locked and reused; the set's existence is read in its own statement, so after waiting on the
// lock it sees what the other transaction committed.
std::optional<IdempotencyRecord> PgStore::insert_keyed(const RefRow& row, const std::string& blob,
                                                       const IdempotencyRecord& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  pg_conn* conn = connection();
  run(conn, where_, "BEGIN", {});
  try {
    Result inserted = run(conn, where_,
                          "INSERT INTO idempotency(key, request_sha256, refset_id, created) VALUES($1, $2, $3, $4) "
                          "ON CONFLICT (key) DO NOTHING RETURNING key",
                          {{key.key}, {key.request_sha256}, {row.id}, {row.created}});
    if (inserted.rows() == 0) {
      Result held = run(conn, where_, "SELECT request_sha256, refset_id FROM idempotency WHERE key = $1 FOR UPDATE",
                        {{key.key}});
      const IdempotencyRecord taken{key.key, held.text(0, 0), held.text(0, 1)};
      if (run(conn, where_, "SELECT 1 FROM refsets WHERE id = $1", {{taken.refset_id}}).rows() > 0) {
        run(conn, where_, "ROLLBACK", {});
        return taken;
      }
      run(conn, where_, "UPDATE idempotency SET request_sha256 = $2, refset_id = $3, created = $4 WHERE key = $1",
          {{key.key}, {key.request_sha256}, {row.id}, {row.created}});
    }
    insert_row(conn, row, blob);
    run(conn, where_, "COMMIT", {});
  } catch (...) {
    PQclear(PQexec(conn, "ROLLBACK"));
    throw;
  }
  return std::nullopt;
}

std::optional<int64_t> PgStore::update_blob(const std::string& id, const std::string& blob) {
  std::lock_guard<std::mutex> lock(mutex_);
  Result r = run(connection(), where_, "UPDATE refsets SET blob = $1, version = version + 1 WHERE id = $2 RETURNING version",
                 {{blob, true}, {id}});
  if (r.rows() == 0) return std::nullopt;
  return r.number(0, 0);
}

std::vector<RefRow> PgStore::list() {
  std::lock_guard<std::mutex> lock(mutex_);
  Result r = run(connection(), where_, std::string("SELECT ") + kRowColumns + " FROM refsets ORDER BY created, id", {},
                 false, true);
  std::vector<RefRow> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(read_row(r, i));
  return out;
}

std::optional<RefRow> PgStore::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Result r = run(connection(), where_, std::string("SELECT ") + kRowColumns + " FROM refsets WHERE id = $1", {{id}},
                 false, true);
  if (r.rows() == 0) return std::nullopt;
  return read_row(r, 0);
}

std::optional<RefBlob> PgStore::load(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  // Binary results: the bytea arrives as raw bytes; version::text arrives as its digits.
  Result r = run(connection(), where_, "SELECT version::text, blob FROM refsets WHERE id = $1", {{id}}, true, true);
  if (r.rows() == 0) return std::nullopt;
  return RefBlob{std::strtoll(r.text(0, 0).c_str(), nullptr, 10), r.text(0, 1)};
}

bool PgStore::remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Result r = run(connection(), where_,
                 "WITH keys AS (DELETE FROM idempotency WHERE refset_id = $1) DELETE FROM refsets WHERE id = $1 RETURNING id",
                 {{id}});
  return r.rows() > 0;
}

int64_t PgStore::count() {
  std::lock_guard<std::mutex> lock(mutex_);
  return run(connection(), where_, "SELECT count(*) FROM refsets", {}, false, true).number(0, 0);
}

std::string PgStore::ping() {
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    run(connection(), where_, "SELECT 1", {}, false, true);
    return "ok";
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace gad::serve
