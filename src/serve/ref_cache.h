// RefCache — the reference sets `gad serve` keeps in memory, capped by bytes: beyond the cap the
// least recently used sets are dropped (SQLite keeps them; the next use reloads). A set that is
// being scored stays alive through its shared_ptr even when evicted, so the cap bounds what the
// cache holds, and in-flight work adds at most one set per model worker. Thread-safe.
//
// Stale loads: a worker that reads a set from SQLite while the set is recalibrated or deleted
// must not put the old version back. Every invalidation bumps a generation; a load inserts only
// when no invalidation happened since it read generation().
//
// Other replicas: every entry carries the store's version of its set. A request reads the set's
// row (with its version) before scoring, and get() treats an older entry as a miss, so a set
// recalibrated through another replica is reloaded on its next use; a deleted one is already a
// 404 at the row read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "engine/engine.h"

namespace gad::serve {

class RefCache {
 public:
  explicit RefCache(size_t cap_bytes) : cap_(cap_bytes) {}

  struct Stats {
    size_t cap = 0, bytes = 0, entries = 0;
    uint64_t hits = 0, misses = 0, evictions = 0;
  };

  // nullptr on a miss, or when the cached copy is older than `version` (then dropped).
  References get(const std::string& id, int64_t version = 0);
  uint64_t generation();
  // Inserts version `version` of a set loaded after generation() returned `loaded_at` (skipped
  // when stale, older than the cached copy, or larger than the whole cap), then evicts down to the cap.
  void put(const std::string& id, References set, size_t bytes, uint64_t loaded_at,
           int64_t version = 1);
  // Invalidates, then puts.
  void replace(const std::string& id, References set, size_t bytes, int64_t version = 1);
  void erase(const std::string& id);                                                        // invalidates
  Stats stats();

 private:
  struct Entry {
    std::string id;
    References set;
    size_t bytes;
    int64_t version;
  };
  void insert_locked(const std::string& id, References set, size_t bytes, int64_t version);
  void erase_locked(const std::string& id);

  const size_t cap_;
  std::mutex m_;
  std::list<Entry> lru_;  // front = most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  size_t bytes_ = 0;
  uint64_t generation_ = 0, hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace gad::serve
