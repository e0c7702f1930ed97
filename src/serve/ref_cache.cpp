#include "serve/ref_cache.h"

namespace gad::serve {

References RefCache::get(const std::string& id, int64_t version) {
  std::lock_guard<std::mutex> lock(m_);
  auto it = index_.find(id);
  if (it != index_.end() && it->second->version < version) {
    erase_locked(id);
    it = index_.end();
  }
  if (it == index_.end()) {
    ++misses_;
    return {};
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second);
  return it->second->set;
}

uint64_t RefCache::generation() {
  std::lock_guard<std::mutex> lock(m_);
  return generation_;
}

void RefCache::put(const std::string& id, References set, size_t bytes, uint64_t loaded_at,
                   int64_t version) {
  std::lock_guard<std::mutex> lock(m_);
  if (loaded_at != generation_) return;
  auto it = index_.find(id);
  if (it != index_.end() && it->second->version > version) return;
  insert_locked(id, std::move(set), bytes, version);
}

void RefCache::replace(const std::string& id, References set, size_t bytes, int64_t version) {
  std::lock_guard<std::mutex> lock(m_);
  ++generation_;
  insert_locked(id, std::move(set), bytes, version);
}

void RefCache::erase(const std::string& id) {
  std::lock_guard<std::mutex> lock(m_);
  ++generation_;
  erase_locked(id);
}

RefCache::Stats RefCache::stats() {
  std::lock_guard<std::mutex> lock(m_);
  return {cap_, bytes_, lru_.size(), hits_, misses_, evictions_};
}

void RefCache::insert_locked(const std::string& id, References set, size_t bytes,
                             int64_t version) {
  erase_locked(id);
  if (bytes > cap_) return;  // would evict everything and still not fit
  lru_.push_front({id, std::move(set), bytes, version});
  index_[id] = lru_.begin();
  bytes_ += bytes;
  while (bytes_ > cap_) {
    bytes_ -= lru_.back().bytes;
    index_.erase(lru_.back().id);
    lru_.pop_back();
    ++evictions_;
  }
}

void RefCache::erase_locked(const std::string& id) {
  auto it = index_.find(id);
  if (it == index_.end()) return;
  bytes_ -= it->second->bytes;
  lru_.erase(it->second);
  index_.erase(it);
}

}  // namespace gad::serve
