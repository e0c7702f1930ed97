// The station's durable outbox (SQLite, WAL, synchronous=FULL): every result is committed here
// before anything else happens to it, and leaves only when every sink of its line acknowledged
// it. After a crash — kill -9 included — what was committed is replayed (at-least-once; results
// are keyed by (line, seq) so consumers can drop duplicates) and what was not is redone, because
// a hot-folder file counts as done only in the same transaction that stores its result.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace gad::station {

struct OutboxItem {
  int64_t seq = 0;
  std::string body;  // the result's JSON object
};

// A file the line finished with, identified by what it looked like when it was scored.
struct FileStamp {
  std::string path;
  int64_t size = 0, mtime_ns = 0;
};

class Outbox {
 public:
  explicit Outbox(const std::string& path);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Registers a line and its sinks; returns true when the line is new to this outbox (its first
  // start). Results already pending keep the sinks they were stored for.
  bool open_line(const std::string& line);
  // Stores one result in one transaction: the line's next sequence number, the body `make`
  // builds from it, one pending delivery per sink, and `file` (when given) marked done.
  template <typename Make>
  int64_t append(const std::string& line, const std::vector<std::string>& sinks, const std::optional<FileStamp>& file,
                 Make make) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t seq = next_seq_locked(line);
    append_locked(line, seq, make(seq), sinks, file);
    return seq;
  }
  // Marks files done without a result (what was already there at a first start with --skip-existing).
  void mark_done(const std::string& line, const FileStamp& file);
  bool is_done(const std::string& line, const FileStamp& file);
  // The oldest results `sink` has not acknowledged yet, in sequence order.
  std::vector<OutboxItem> pending(const std::string& line, const std::string& sink, size_t limit);
  void ack(const std::string& line, const std::string& sink, int64_t seq);
  // Results stored but not yet acknowledged by every sink.
  int64_t backlog(const std::string& line);
  // Drops the oldest results of a line whose backlog exceeds `keep`; returns how many.
  int64_t drop_oldest(const std::string& line, int64_t keep);
  const std::string& path() const { return path_; }

 private:
  int64_t next_seq_locked(const std::string& line);
  void append_locked(const std::string& line, int64_t seq, const std::string& body, const std::vector<std::string>& sinks,
                     const std::optional<FileStamp>& file);
  void insert_done_locked(const std::string& line, const FileStamp& file);
  std::string path_;
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
};

}  // namespace gad::station
