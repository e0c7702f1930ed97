// PgStore — the RefStore on PostgreSQL (libpq), shared by every `gad serve` replica.
//
// --db postgresql://user@host:port/dbname (any libpq URI; a password belongs in ~/.pgpass or
// PGPASSWORD, not on the command line). Tables: gad_schema(version), refsets(..., version,
// blob bytea) and idempotency. Opening creates or migrates the schema in one transaction under an advisory lock,
// so replicas starting together do not race, and refuses a schema newer than kSchemaVersion.
// One connection behind a mutex; a connection found broken is reset before the next statement,
// and a store that cannot be reached answers HttpError 503 "store_unavailable".
#pragma once

#include <mutex>
#include <string>

#include "serve/store.h"

struct pg_conn;

namespace gad::serve {

class PgStore : public RefStore {
 public:
  explicit PgStore(const std::string& uri);  // throws gad::Error naming the database
  ~PgStore() override;
  PgStore(const PgStore&) = delete;
  PgStore& operator=(const PgStore&) = delete;

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
  std::string integrity_check() override { return ping(); }  // PostgreSQL checks its own pages
  std::string ping() override;
  std::string describe() const override { return where_; }

 private:
  void migrate();
  void insert_row(pg_conn* conn, const RefRow& row, const std::string& blob);
  pg_conn* connection();  // the connection, reset first when broken; 503 when unreachable

  pg_conn* conn_ = nullptr;
  std::mutex mutex_;
  std::string where_;  // the URI without a password
};

}  // namespace gad::serve
