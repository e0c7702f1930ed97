// Small helpers over SQLite's C API shared by the server's store and the station's outbox: a
// prepared statement that finalises itself, statements that fail with the database's path in
// the message, and a transaction that rolls back on any exception.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>

namespace gad {

struct Stmt {
  sqlite3_stmt* s = nullptr;
  Stmt(sqlite3* db, const char* sql, const std::string& path);
  ~Stmt();
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  void text(int i, const std::string& v);
  std::string col_text(int i);
};

// Opens (creating) `path` in WAL mode with synchronous=FULL: a committed transaction survives a
// crash or power loss. Fails naming the path.
sqlite3* open_wal_database(const std::string& path);
void exec(sqlite3* db, const char* sql, const std::string& path);
int64_t query_int(sqlite3* db, const char* sql, const std::string& path);

// Runs `body` inside BEGIN IMMEDIATE ... COMMIT; any failure rolls back and rethrows.
template <typename Body>
void in_transaction(sqlite3* db, const std::string& path, Body body) {
  exec(db, "BEGIN IMMEDIATE", path);
  try {
    body();
    exec(db, "COMMIT", path);
  } catch (...) {
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

}  // namespace gad
