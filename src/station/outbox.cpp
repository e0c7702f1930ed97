#include "station/outbox.h"

#include "util/error.h"
#include "util/sqlite_db.h"

namespace gad::station {

namespace {
constexpr int64_t kSchemaVersion = 1;
}

Outbox::Outbox(const std::string& path) : path_(path), db_(open_wal_database(path)) {
  try {
    in_transaction(db_, path_, [&] {
      const int64_t found = query_int(db_, "PRAGMA user_version", path_);
      if (found > kSchemaVersion)
        fail(path_, ": outbox schema version ", found, " is newer than this gad knows (", kSchemaVersion, ")");
      exec(db_, "CREATE TABLE IF NOT EXISTS lines(line TEXT PRIMARY KEY, next_seq INTEGER NOT NULL)", path_);
      exec(db_,
           "CREATE TABLE IF NOT EXISTS results(line TEXT NOT NULL, seq INTEGER NOT NULL, body TEXT NOT NULL, "
           "PRIMARY KEY(line, seq))",
           path_);
      exec(db_,
           "CREATE TABLE IF NOT EXISTS deliveries(line TEXT NOT NULL, sink TEXT NOT NULL, seq INTEGER NOT NULL, "
           "PRIMARY KEY(line, sink, seq))",
           path_);
      exec(db_,
           "CREATE TABLE IF NOT EXISTS done_files(line TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, "
           "mtime_ns INTEGER NOT NULL, PRIMARY KEY(line, path))",
           path_);
      exec(db_, ("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str(), path_);
    });
  } catch (...) {
    sqlite3_close(db_);
    throw;
  }
}

Outbox::~Outbox() { sqlite3_close(db_); }

bool Outbox::open_line(const std::string& line) {
  std::lock_guard<std::mutex> lock(mutex_);
  Stmt st(db_, "INSERT OR IGNORE INTO lines(line, next_seq) VALUES(?, 1)", path_);
  st.text(1, line);
  if (sqlite3_step(st.s) != SQLITE_DONE) fail(path_, ": sqlite: ", sqlite3_errmsg(db_));
  return sqlite3_changes(db_) == 1;
}

int64_t Outbox::next_seq_locked(const std::string& line) {
  Stmt st(db_, "SELECT next_seq FROM lines WHERE line = ?", path_);
  st.text(1, line);
  if (sqlite3_step(st.s) != SQLITE_ROW) fail(path_, ": line '", line, "' is not open");
  return sqlite3_column_int64(st.s, 0);
}

void Outbox::append_locked(const std::string& line, int64_t seq, const std::string& body,
                           const std::vector<std::string>& sinks, const std::optional<FileStamp>& file) {
  auto step = [&](Stmt& st) {
    if (sqlite3_step(st.s) != SQLITE_DONE) fail(path_, ": sqlite: ", sqlite3_errmsg(db_));
  };
  in_transaction(db_, path_, [&] {
    Stmt r(db_, "INSERT INTO results(line, seq, body) VALUES(?, ?, ?)", path_);
    r.text(1, line);
    sqlite3_bind_int64(r.s, 2, seq);
    r.text(3, body);
    step(r);
    for (const auto& sink : sinks) {
      Stmt d(db_, "INSERT INTO deliveries(line, sink, seq) VALUES(?, ?, ?)", path_);
      d.text(1, line);
      d.text(2, sink);
      sqlite3_bind_int64(d.s, 3, seq);
      step(d);
    }
    if (sinks.empty()) {  // nothing to wait for: the result is delivered once stored
      Stmt del(db_, "DELETE FROM results WHERE line = ? AND seq = ?", path_);
      del.text(1, line);
      sqlite3_bind_int64(del.s, 2, seq);
      step(del);
    }
    if (file) insert_done_locked(line, *file);
    Stmt n(db_, "UPDATE lines SET next_seq = ? WHERE line = ?", path_);
    sqlite3_bind_int64(n.s, 1, seq + 1);
    n.text(2, line);
    step(n);
  });
}

void Outbox::mark_done(const std::string& line, const FileStamp& file) {
  std::lock_guard<std::mutex> lock(mutex_);
  insert_done_locked(line, file);
}

void Outbox::insert_done_locked(const std::string& line, const FileStamp& file) {
  Stmt f(db_, "INSERT OR REPLACE INTO done_files(line, path, size, mtime_ns) VALUES(?, ?, ?, ?)", path_);
  f.text(1, line);
  f.text(2, file.path);
  sqlite3_bind_int64(f.s, 3, file.size);
  sqlite3_bind_int64(f.s, 4, file.mtime_ns);
  if (sqlite3_step(f.s) != SQLITE_DONE) fail(path_, ": sqlite: ", sqlite3_errmsg(db_));
}

bool Outbox::is_done(const std::string& line, const FileStamp& file) {
  std::lock_guard<std::mutex> lock(mutex_);
  // A file written again under the same name (other size or time) is a new part.
  Stmt st(db_, "SELECT 1 FROM done_files WHERE line = ? AND path = ? AND size = ? AND mtime_ns = ?", path_);
  st.text(1, line);
  st.text(2, file.path);
  sqlite3_bind_int64(st.s, 3, file.size);
  sqlite3_bind_int64(st.s, 4, file.mtime_ns);
  return sqlite3_step(st.s) == SQLITE_ROW;
}

std::vector<OutboxItem> Outbox::pending(const std::string& line, const std::string& sink, size_t limit) {
  std::lock_guard<std::mutex> lock(mutex_);
  Stmt st(db_,
          "SELECT r.seq, r.body FROM deliveries d JOIN results r ON r.line = d.line AND r.seq = d.seq "
          "WHERE d.line = ? AND d.sink = ? ORDER BY d.seq LIMIT ?",
          path_);
  st.text(1, line);
  st.text(2, sink);
  sqlite3_bind_int64(st.s, 3, static_cast<int64_t>(limit));
  std::vector<OutboxItem> out;
  while (sqlite3_step(st.s) == SQLITE_ROW) out.push_back({sqlite3_column_int64(st.s, 0), st.col_text(1)});
  return out;
}

void Outbox::ack(const std::string& line, const std::string& sink, int64_t seq) {
  std::lock_guard<std::mutex> lock(mutex_);
  in_transaction(db_, path_, [&] {
    Stmt d(db_, "DELETE FROM deliveries WHERE line = ? AND sink = ? AND seq = ?", path_);
    d.text(1, line);
    d.text(2, sink);
    sqlite3_bind_int64(d.s, 3, seq);
    sqlite3_step(d.s);
    Stmt r(db_,
           "DELETE FROM results WHERE line = ?1 AND seq = ?2 AND NOT EXISTS "
           "(SELECT 1 FROM deliveries WHERE line = ?1 AND seq = ?2)",
           path_);
    r.text(1, line);
    sqlite3_bind_int64(r.s, 2, seq);
    sqlite3_step(r.s);
  });
}

int64_t Outbox::backlog(const std::string& line) {
  std::lock_guard<std::mutex> lock(mutex_);
  Stmt st(db_, "SELECT count(*) FROM results WHERE line = ?", path_);
  st.text(1, line);
  return sqlite3_step(st.s) == SQLITE_ROW ? sqlite3_column_int64(st.s, 0) : 0;
}

int64_t Outbox::drop_oldest(const std::string& line, int64_t keep) {
  std::lock_guard<std::mutex> lock(mutex_);
  int64_t dropped = 0;
  in_transaction(db_, path_, [&] {
    Stmt cut(db_, "SELECT seq FROM results WHERE line = ? ORDER BY seq DESC LIMIT 1 OFFSET ?", path_);
    cut.text(1, line);
    sqlite3_bind_int64(cut.s, 2, keep);
    if (sqlite3_step(cut.s) != SQLITE_ROW) return;
    const int64_t last = sqlite3_column_int64(cut.s, 0);
    for (const char* sql : {"DELETE FROM deliveries WHERE line = ? AND seq <= ?", "DELETE FROM results WHERE line = ? AND seq <= ?"}) {
      Stmt d(db_, sql, path_);
      d.text(1, line);
      sqlite3_bind_int64(d.s, 2, last);
      sqlite3_step(d.s);
      dropped = sqlite3_changes(db_);
    }
  });
  return dropped;
}

}  // namespace gad::station
