#include "serve/model_queue.h"

#include <algorithm>
#include <chrono>

#include "image/image.h"
#include "serve/http_error.h"
#include "util/allocator.h"
#include "util/error.h"

namespace gad::serve {

ModelQueue::ModelQueue(const QueueOptions& options, RefStore& store, RefCache& cache)
    : opts_(options), store_(store), cache_(cache) {}

ModelQueue::~ModelQueue() { stop(); }

void ModelQueue::start(std::vector<std::unique_ptr<Detector>> engines) {
  engines_ = std::move(engines);
  for (auto& e : engines_) threads_.emplace_back([this, eng = e.get()] { work(*eng); });
}

void ModelQueue::stop() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
}

bool ModelQueue::admit(int n) {
  int64_t cur = depth_.load();
  do {
    if (cur + n > opts_.capacity) return false;
  } while (!depth_.compare_exchange_weak(cur, cur + n));
  return true;
}

void ModelQueue::release(int n) { depth_ -= n; }

std::future<ScoreRecord> ModelQueue::score(const std::string& refset_id, int64_t version, std::string_view bytes,
                                           const std::string& name) {
  auto item = std::make_unique<ScoreItem>();
  item->refset_id = refset_id;
  item->version = version;
  item->name = name;
  item->bytes = bytes;
  auto f = item->result.get_future();
  {
    std::lock_guard<std::mutex> lock(m_);
    items_.push_back(std::move(item));
  }
  cv_.notify_one();
  return f;
}

void ModelQueue::push_job(std::function<void(Detector&)> job) {
  {
    std::lock_guard<std::mutex> lock(m_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

References ModelQueue::resolve(Detector& engine, const std::string& id, int64_t version) {
  if (auto cached = cache_.get(id, version)) return cached;
  const uint64_t generation = cache_.generation();  // before the read: a later invalidation wins
  auto blob = store_.load(id);
  if (!blob) throw HttpError(404, "unknown_refset", "unknown reference set '" + id + "'");
  auto h = engine.references_from_bytes(blob->bytes);
  cache_.put(id, h, h.memory_bytes(), generation, blob->version);
  return h;
}

Image ModelQueue::decode(std::string_view bytes, const std::string& name) const {
  try {
    return decode_image_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name, opts_.max_pixels);
  } catch (const Error& e) {
    throw HttpError(e.kind() == ErrorKind::ResourceLimit ? 413 : e.kind() == ErrorKind::Unsupported ? 415 : 400,
                    e.kind() == ErrorKind::ResourceLimit ? "too_many_pixels" : "bad_image", e.what());
  }
}

PixelTensor ModelQueue::prepare(Detector& engine, const References& refs, std::string_view bytes, const std::string& name) const {
  return preprocess(engine, refs, decode(bytes, name));
}

std::vector<PixelTensor> ModelQueue::prepare_reference(Detector& engine, std::string_view bytes, const std::string& name,
                                                       size_t index) const {
  return reference_views(engine, decode(bytes, name), index);
}

// Moves queued items of the batch's set into it, up to the batch size; waits up to batch_wait_ms
// for more to arrive.
void ModelQueue::gather(Batch& batch, std::unique_lock<std::mutex>& lock) {
  const std::string id = batch[0]->refset_id;
  const int64_t version = batch[0]->version;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::microseconds(static_cast<int64_t>(opts_.batch_wait_ms * 1000));
  auto take = [&] {
    for (auto it = items_.begin(); it != items_.end() && static_cast<int>(batch.size()) < opts_.batch;) {
      if ((*it)->refset_id == id && (*it)->version == version) {
        batch.push_back(std::move(*it));
        it = items_.erase(it);
      } else {
        ++it;
      }
    }
  };
  for (;;) {
    take();
    if (static_cast<int>(batch.size()) >= opts_.batch || stopping_) return;
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      take();  // the wait is over: take what arrived meanwhile
      return;
    }
  }
}

void ModelQueue::work(Detector& engine) {
  for (;;) {
    std::function<void(Detector&)> job;
    Batch batch;
    {
      std::unique_lock<std::mutex> lock(m_);
      cv_.wait(lock, [&] { return stopping_ || !items_.empty() || !jobs_.empty(); });
      if (items_.empty() && jobs_.empty()) return;  // stopping and drained
      if (!jobs_.empty() && (items_.empty() || job_turn_)) {
        job = std::move(jobs_.front());
        jobs_.pop_front();
        job_turn_ = false;
      } else {
        job_turn_ = true;
        batch.push_back(std::move(items_.front()));
        items_.pop_front();
        gather(batch, lock);
      }
    }
    if (job)
      job(engine);  // sets its own promise, never throws
    else
      score_batch(engine, batch);
    bool idle;
    {
      std::lock_guard<std::mutex> lock(m_);
      idle = items_.empty() && jobs_.empty();
    }
    // Freed activations and decoded uploads would otherwise stay resident between bursts.
    if (idle) release_free_memory();
  }
}

// Every item gets its answer: a record, or the error of its own image (a bad image does not fail
// the other requests batched with it), or the error that stopped the whole batch.
void ModelQueue::score_batch(Detector& engine, Batch& batch) {
  std::vector<ScoreItem*> ready;
  try {
    auto refs = resolve(engine, batch[0]->refset_id, batch[0]->version);
    std::vector<PixelTensor> pixels;
    for (auto& item : batch) {
      try {
        pixels.push_back(prepare(engine, refs, item->bytes, item->name));
        ready.push_back(item.get());
      } catch (...) {
        item->result.set_exception(std::current_exception());
      }
    }
    if (ready.empty()) return;
    auto records = score_pixels(engine, refs, pixels, opts_.batch);
    batches_++;
    images_ += ready.size();
    for (size_t i = 0; i < ready.size(); ++i) ready[i]->result.set_value(std::move(records[i]));
  } catch (...) {
    auto e = std::current_exception();
    for (auto& item : batch) {
      bool answered = !ready.empty() && std::find(ready.begin(), ready.end(), item.get()) == ready.end();
      if (!answered) item->result.set_exception(e);
    }
  }
}

}  // namespace gad::serve
