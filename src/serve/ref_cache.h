// RefCache — the reference sets `gad serve` keeps in memory, capped by bytes: beyond the cap the
// least recently used sets are dropped (SQLite keeps them; the next use reloads). A set that is
// being scored stays alive through its shared_ptr even when evicted, so the cap bounds what the
// cache holds, and in-flight work adds at most one set per model worker. Thread-safe.
//
// Stale loads: a worker that reads a set from SQLite while the set is recalibrated or deleted
// must not put the old version back. Every invalidation bumps a generation; a load inserts only
// when no invalidation happened since it read generation().
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

  References get(const std::string& id);  // nullptr on a miss
  uint64_t generation();
  // Inserts a set loaded after generation() returned `loaded_at` (skipped when stale or larger
  // than the whole cap), then evicts down to the cap.
  void put(const std::string& id, References set, size_t bytes, uint64_t loaded_at);
  void replace(const std::string& id, References set, size_t bytes);  // invalidates, then puts
  void erase(const std::string& id);                                                        // invalidates
  Stats stats();

 private:
  struct Entry {
    std::string id;
    References set;
    size_t bytes;
  };
  void insert_locked(const std::string& id, References set, size_t bytes);
  void erase_locked(const std::string& id);

  const size_t cap_;
  std::mutex m_;
  std::list<Entry> lru_;  // front = most recently used
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  size_t bytes_ = 0;
  uint64_t generation_ = 0, hits_ = 0, misses_ = 0, evictions_ = 0;
};

}  // namespace gad::serve
