// RefStore — durable storage of reference sets for `gad serve`: one SQLite database in WAL mode.
//
// Table refsets(id TEXT PRIMARY KEY, class TEXT, k INTEGER, created TEXT, fingerprint TEXT,
// blob BLOB): `blob` is the serialized set (.gadref bytes). A set is inserted in one transaction,
// so it is visible only once complete; synchronous=FULL makes an acknowledged insert survive a
// crash. Thread-safe (one connection behind a mutex).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace gad::serve {

struct RefRow {
  std::string id, class_name, created, fingerprint;
  int64_t k = 0;
  int64_t bytes = 0;
};

class RefStore {
 public:
  explicit RefStore(const std::string& path);  // creates the file and table when missing
  ~RefStore();
  RefStore(const RefStore&) = delete;
  RefStore& operator=(const RefStore&) = delete;

  void insert(const RefRow& row, const std::string& blob);  // one transaction
  bool update_blob(const std::string& id, const std::string& blob);  // one transaction; false: no such set
  std::vector<RefRow> list();
  std::optional<RefRow> get(const std::string& id);
  std::optional<std::string> blob(const std::string& id);
  bool remove(const std::string& id);
  int64_t count();
  std::string integrity_check();  // "ok" when healthy

 private:
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::string path_;
};

}  // namespace gad::serve
