// RefStore — durable storage of reference sets for `gad serve`, and its two implementations:
// SqliteStore (one file, the embedded default) and PgStore (serve/pg_store.h: PostgreSQL, which
// several replicas share). open_store() picks one from --db.
//
// Semantics both keep: table refsets(id, class, k, created, fingerprint, version, blob), `blob`
// the serialized set (.gadref bytes). Registration, calibration (update_blob) and delete are each
// one transaction, so a set is visible only once complete and an acknowledged write survives a
// crash. `version` starts at 1 and grows on every calibration: a replica compares it with its
// cached copy on every use, so a set changed or deleted through another replica is never scored
// stale by a request that starts after the change committed. The schema is versioned
// (kSchemaVersion): created or migrated on open, and a newer one than this build knows is refused.
// Implementations are thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace gad::serve {

constexpr int kSchemaVersion = 1;  // the refsets schema this build reads and writes

struct RefRow {
  std::string id, class_name, created, fingerprint;
  int64_t k = 0;
  int64_t bytes = 0;
  int64_t version = 1;
};

struct RefBlob {
  int64_t version = 0;
  std::string bytes;
};

class RefStore {
 public:
  virtual ~RefStore() = default;
  virtual void insert(const RefRow& row, const std::string& blob) = 0;  // one transaction
  // One transaction: the new blob and version + 1; the new version, or nullopt when no such set.
  virtual std::optional<int64_t> update_blob(const std::string& id, const std::string& blob) = 0;
  virtual std::vector<RefRow> list() = 0;
  virtual std::optional<RefRow> get(const std::string& id) = 0;
  virtual std::optional<RefBlob> load(const std::string& id) = 0;  // blob and version, read together
  virtual bool remove(const std::string& id) = 0;
  virtual int64_t count() = 0;
  virtual std::string integrity_check() = 0;  // "ok" when healthy and reachable, else why not
  virtual std::string ping() = 0;             // "ok" when a trivial query answers (cheap: /readyz)
  virtual std::string describe() const = 0;   // for logs (no password)

  std::optional<std::string> blob(const std::string& id) {
    auto b = load(id);
    return b ? std::optional<std::string>(std::move(b->bytes)) : std::nullopt;
  }
};

// "postgresql://..." or "postgres://..." (a libpq URI): PgStore; anything else: a SQLite file.
bool is_postgres_uri(const std::string& db);
// Opens (creating or migrating the schema) the store `db` names. Throws gad::Error.
std::unique_ptr<RefStore> open_store(const std::string& db);

class SqliteStore : public RefStore {
 public:
  explicit SqliteStore(const std::string& path);  // creates the file and table when missing
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  void insert(const RefRow& row, const std::string& blob) override;
  std::optional<int64_t> update_blob(const std::string& id, const std::string& blob) override;
  std::vector<RefRow> list() override;
  std::optional<RefRow> get(const std::string& id) override;
  std::optional<RefBlob> load(const std::string& id) override;
  bool remove(const std::string& id) override;
  int64_t count() override;
  std::string integrity_check() override;
  std::string ping() override;
  std::string describe() const override { return path_; }

 private:
  void migrate();
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::string path_;
};

}  // namespace gad::serve
