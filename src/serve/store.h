// RefStore — durable storage of reference sets for `gad serve`, and its two implementations:
// SqliteStore (one file, the embedded default) and PgStore (serve/pg_store.h: PostgreSQL, which
// several replicas share). open_store() picks one from --db.
//
// Semantics both keep: table refsets(id, class, k, created, fingerprint, version, blob), `blob`
// the serialized set (.gadref bytes). Registration, calibration (update_blob) and delete are each
// one transaction, so a set is visible only once complete and an acknowledged write survives a
// crash. `version` starts at 1 and grows on every calibration: a replica compares it with its
// cached copy on every use, so a set changed or deleted through another replica is never scored
// stale by a request that starts after the change committed. Table idempotency(key, request_sha256,
// refset_id, created) remembers the Idempotency-Key of a registration, written in the set's own
// transaction, so a retry finds the set the first try made (through any replica, after any
// restart); deleting a set frees its keys. The schema is versioned (kSchemaVersion): created or
// migrated on open, and a newer one than this build knows is refused. Implementations are
// thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace gad::serve {

// The schema this build reads and writes. 1: refsets; 2: adds idempotency (an older gad refuses
// a store once a newer one migrated it: upgrade every replica).
constexpr int kSchemaVersion = 2;

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

// An Idempotency-Key and what it was first used for: a digest of the request and the set made.
struct IdempotencyRecord {
  std::string key, request_sha256, refset_id;
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
  virtual bool remove(const std::string& id) = 0;  // one transaction, with the set's keys
  // The record of `key`, when the set it names still exists (a key whose set is gone is free).
  virtual std::optional<IdempotencyRecord> find_key(const std::string& key) = 0;
  // One transaction: `row` and `blob`, and `key` (its refset_id = row.id). When the key is already
  // taken by an existing set (a concurrent try committed first), nothing is written and that
  // record is returned.
  virtual std::optional<IdempotencyRecord> insert_keyed(const RefRow& row, const std::string& blob,
                                                        const IdempotencyRecord& key) = 0;
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
  std::optional<IdempotencyRecord> find_key(const std::string& key) override;
  std::optional<IdempotencyRecord> insert_keyed(const RefRow& row, const std::string& blob,
                                                const IdempotencyRecord& key) override;
  int64_t count() override;
  std::string integrity_check() override;
  std::string ping() override;
  std::string describe() const override { return path_; }

 private:
  void migrate();
  void insert_locked(const RefRow& row, const std::string& blob);
  std::optional<IdempotencyRecord> find_key_locked(const std::string& key);
  sqlite3* db_ = nullptr;
  std::mutex mutex_;
  std::string path_;
};

}  // namespace gad::serve
