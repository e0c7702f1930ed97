#include "serve/store.h"

#include <sqlite3.h>

#include "serve/pg_store.h"
#include "util/error.h"
#include "util/sqlite_db.h"

namespace gad::serve {
namespace {

constexpr const char* kRowColumns = "id, class, k, created, fingerprint, length(blob), version";

constexpr const char* kIdempotencySchema =
    "CREATE TABLE IF NOT EXISTS idempotency(key TEXT PRIMARY KEY, request_sha256 TEXT NOT NULL, "
    "refset_id TEXT NOT NULL, created TEXT NOT NULL)";

RefRow read_row(Stmt& st) {
  RefRow r;
  r.id = st.col_text(0);
  r.class_name = st.col_text(1);
  r.k = sqlite3_column_int64(st.s, 2);
  r.created = st.col_text(3);
  r.fingerprint = st.col_text(4);
  r.bytes = sqlite3_column_int64(st.s, 5);
  r.version = sqlite3_column_int64(st.s, 6);
  return r;
}

}  // namespace

bool is_postgres_uri(const std::string& db) {
  return db.rfind("postgresql://", 0) == 0 || db.rfind("postgres://", 0) == 0;
}

std::unique_ptr<RefStore> open_store(const std::string& db) {
  if (is_postgres_uri(db)) return std::make_unique<PgStore>(db);
  return std::make_unique<SqliteStore>(db);
}

SqliteStore::SqliteStore(const std::string& path) : db_(open_wal_database(path)), path_(path) {
  try {
    migrate();
  } catch (...) {
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
}

SqliteStore::~SqliteStore() {
  if (db_) sqlite3_close(db_);
}

// PRAGMA user_version is the schema version. 0 is a new file or one from before versioning,
// whose refsets table lacks `version` (every stored set then counts as version 1); 1 lacks the
// idempotency table.
void SqliteStore::migrate() {
  in_transaction(db_, path_, [&] {
    const int64_t found = query_int(db_, "PRAGMA user_version", path_);
    if (found > kSchemaVersion)
      fail(path_, ": database schema version ", found, " is newer than this gad knows (", kSchemaVersion,
           "); upgrade gad or use another --db");
    if (found == kSchemaVersion) return;
    exec(db_,
         "CREATE TABLE IF NOT EXISTS refsets(id TEXT PRIMARY KEY, class TEXT NOT NULL, k INTEGER NOT NULL, "
         "created TEXT NOT NULL, fingerprint TEXT NOT NULL, blob BLOB NOT NULL, version INTEGER NOT NULL DEFAULT 1)",
         path_);
    if (query_int(db_, "SELECT count(*) FROM pragma_table_info('refsets') WHERE name = 'version'", path_) == 0)
      exec(db_, "ALTER TABLE refsets ADD COLUMN version INTEGER NOT NULL DEFAULT 1", path_);
    exec(db_, kIdempotencySchema, path_);
    exec(db_, "CREATE INDEX IF NOT EXISTS idempotency_refset ON idempotency(refset_id)", path_);
    exec(db_, ("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str(), path_);
  });
}

void SqliteStore::insert_locked(const RefRow& row, const std::string& blob) {
  Stmt st(db_, "INSERT INTO refsets(id, class, k, created, fingerprint, blob) VALUES(?,?,?,?,?,?)", path_);
  st.text(1, row.id);
  st.text(2, row.class_name);
  sqlite3_bind_int64(st.s, 3, row.k);
  st.text(4, row.created);
  st.text(5, row.fingerprint);
  sqlite3_bind_blob64(st.s, 6, blob.data(), blob.size(), SQLITE_TRANSIENT);
  if (sqlite3_step(st.s) != SQLITE_DONE) fail(path_, ": sqlite insert: ", sqlite3_errmsg(db_));
}

void SqliteStore::insert(const RefRow& row, const std::string& blob) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_transaction(db_, path_, [&] { insert_locked(row, blob); });
}

std::optional<IdempotencyRecord> SqliteStore::find_key_locked(const std::string& key) {
  Stmt st(db_,
          "SELECT i.key, i.request_sha256, i.refset_id FROM idempotency i JOIN refsets r ON r.id = i.refset_id "
          "WHERE i.key = ?",
          path_);
  st.text(1, key);
  if (sqlite3_step(st.s) != SQLITE_ROW) return std::nullopt;
  return IdempotencyRecord{st.col_text(0), st.col_text(1), st.col_text(2)};
}

std::optional<IdempotencyRecord> SqliteStore::find_key(const std::string& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  return find_key_locked(key);
}

// BEGIN IMMEDIATE takes the write lock first, so the check and the insert see no other writer
// in between (other processes on the same file included).
std::optional<IdempotencyRecord> SqliteStore::insert_keyed(const RefRow& row, const std::string& blob,
                                                           const IdempotencyRecord& key) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::optional<IdempotencyRecord> taken;
  in_transaction(db_, path_, [&] {
    taken = find_key_locked(key.key);
    if (taken) return;
    Stmt st(db_, "INSERT OR REPLACE INTO idempotency(key, request_sha256, refset_id, created) VALUES(?,?,?,?)", path_);
    st.text(1, key.key);
    st.text(2, key.request_sha256);
    st.text(3, row.id);
    st.text(4, row.created);
    if (sqlite3_step(st.s) != SQLITE_DONE) fail(path_, ": sqlite insert: ", sqlite3_errmsg(db_));
    insert_locked(row, blob);
  });
  return taken;
}

std::optional<int64_t> SqliteStore::update_blob(const std::string& id, const std::string& blob) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::optional<int64_t> version;
  in_transaction(db_, path_, [&] {
    Stmt st(db_, "UPDATE refsets SET blob = ?, version = version + 1 WHERE id = ? RETURNING version", path_);
    sqlite3_bind_blob64(st.s, 1, blob.data(), blob.size(), SQLITE_TRANSIENT);
    st.text(2, id);
    const int rc = sqlite3_step(st.s);
    if (rc == SQLITE_ROW) version = sqlite3_column_int64(st.s, 0);
    else if (rc != SQLITE_DONE) fail(path_, ": sqlite update: ", sqlite3_errmsg(db_));
  });
  return version;
}

std::vector<RefRow> SqliteStore::list() {
  std::lock_guard<std::mutex> lock(mutex_);
  Stmt st(db_, (std::string("SELECT ") + kRowColumns + " FROM refsets ORDER BY created, id").c_str(), path_);
  std::vector<RefRow> out;
  while (sqlite3_step(st.s) == SQLITE_ROW) out.push_back(read_row(st));
  return out;
}

std::optional<RefRow> SqliteStore::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Stmt st(db_, (std::string("SELECT ") + kRowColumns + " FROM refsets WHERE id = ?").c_str(), path_);
  st.text(1, id);
  if (sqlite3_step(st.s) != SQLITE_ROW) return std::nullopt;
  return read_row(st);
}

std::optional<RefBlob> SqliteStore::load(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  Stmt st(db_, "SELECT blob, version FROM refsets WHERE id = ?", path_);
  st.text(1, id);
  if (sqlite3_step(st.s) != SQLITE_ROW) return std::nullopt;
  const void* p = sqlite3_column_blob(st.s, 0);
  int n = sqlite3_column_bytes(st.s, 0);
  return RefBlob{sqlite3_column_int64(st.s, 1), std::string(static_cast<const char*>(p), static_cast<size_t>(n))};
}

bool SqliteStore::remove(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  bool removed = false;
  in_transaction(db_, path_, [&] {
    Stmt keys(db_, "DELETE FROM idempotency WHERE refset_id = ?", path_);
    keys.text(1, id);
    if (sqlite3_step(keys.s) != SQLITE_DONE) fail(path_, ": sqlite delete: ", sqlite3_errmsg(db_));
    Stmt st(db_, "DELETE FROM refsets WHERE id = ?", path_);
    st.text(1, id);
    if (sqlite3_step(st.s) != SQLITE_DONE) fail(path_, ": sqlite delete: ", sqlite3_errmsg(db_));
    removed = sqlite3_changes(db_) > 0;
  });
  return removed;
}

int64_t SqliteStore::count() {
  std::lock_guard<std::mutex> lock(mutex_);
  return query_int(db_, "SELECT count(*) FROM refsets", path_);
}

std::string SqliteStore::integrity_check() {
  std::lock_guard<std::mutex> lock(mutex_);
  Stmt st(db_, "PRAGMA integrity_check", path_);
  std::string out;
  while (sqlite3_step(st.s) == SQLITE_ROW) out += (out.empty() ? "" : "; ") + st.col_text(0);
  return out;
}

std::string SqliteStore::ping() {
  try {
    std::lock_guard<std::mutex> lock(mutex_);
    query_int(db_, "SELECT count(*) FROM refsets WHERE 0", path_);
    return "ok";
  } catch (const std::exception& e) {
    return e.what();
  }
}

}  // namespace gad::serve
