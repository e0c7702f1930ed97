#include "util/sqlite_db.h"

#include "util/error.h"

namespace gad {

Stmt::Stmt(sqlite3* db, const char* sql, const std::string& path) {
  if (sqlite3_prepare_v2(db, sql, -1, &s, nullptr) != SQLITE_OK) fail(path, ": sqlite: ", sqlite3_errmsg(db));
}

Stmt::~Stmt() { sqlite3_finalize(s); }

void Stmt::text(int i, const std::string& v) {
  sqlite3_bind_text(s, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
}

std::string Stmt::col_text(int i) {
  const auto* t = sqlite3_column_text(s, i);
  return t ? std::string(reinterpret_cast<const char*>(t), static_cast<size_t>(sqlite3_column_bytes(s, i))) : "";
}

sqlite3* open_wal_database(const std::string& path) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    fail(path, ": cannot open database (", msg, ")");
  }
  try {
    sqlite3_busy_timeout(db, 5000);
    exec(db, "PRAGMA journal_mode=WAL", path);
    exec(db, "PRAGMA synchronous=FULL", path);
  } catch (...) {
    sqlite3_close(db);
    throw;
  }
  return db;
}

void exec(sqlite3* db, const char* sql, const std::string& path) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errmsg(db);
    sqlite3_free(err);
    fail(path, ": sqlite: ", msg);
  }
}

int64_t query_int(sqlite3* db, const char* sql, const std::string& path) {
  Stmt st(db, sql, path);
  return sqlite3_step(st.s) == SQLITE_ROW ? sqlite3_column_int64(st.s, 0) : 0;
}

}  // namespace gad
