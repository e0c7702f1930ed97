// ModelQueue — the model worker threads of `gad serve` (one gad::Detector each) and their work.
//
// Score items (one still-encoded image each) wait in a queue. A worker takes the oldest, gathers
// queued items of the same reference set up to the batch size (waiting at most batch_wait_ms),
// decodes and preprocesses them one at a time — so a worker holds at most one full-resolution
// image, whatever the request sizes — and scores them in one forward pass. Jobs (registration,
// calibration) run on a worker, alternating with score batches. Admission counts queued images;
// beyond the limit the caller answers 429. stop() (and the destructor) answers everything queued,
// then joins the workers: no thread outlives the queue.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "engine/engine.h"
#include "serve/ref_cache.h"
#include "serve/store.h"

namespace gad::serve {

struct QueueOptions {
  int batch = 8;             // images per forward pass
  double batch_wait_ms = 5;  // how long a worker waits to fill a batch
  int capacity = 64;         // images queued or being scored
  int64_t max_pixels = kDefaultMaxPixels;
};

class ModelQueue {
 public:
  ModelQueue(const QueueOptions& options, RefStore& store, RefCache& cache);
  ~ModelQueue();
  ModelQueue(const ModelQueue&) = delete;
  ModelQueue& operator=(const ModelQueue&) = delete;

  void start(std::vector<std::unique_ptr<Detector>> engines);
  void stop();  // once the queue is empty; joins the workers (idempotent)

  // Admission: false when `n` more images would exceed the capacity.
  bool admit(int n);
  void release(int n);
  int64_t depth() const { return depth_.load(); }

  // Scores one encoded image; `bytes` must stay valid until the future is ready. Decode errors
  // come back as HttpError 400 naming `name`.
  // `version`: the set's version as the request read it from the store (an older cached copy is
  // reloaded).
  std::future<ScoreRecord> score(const std::string& refset_id, int64_t version, std::string_view bytes,
                                 const std::string& name);
  // Runs `job` on a worker's Detector.
  template <typename T>
  std::future<T> run(std::function<T(Detector&)> job) {
    auto promise = std::make_shared<std::promise<T>>();
    auto future = promise->get_future();
    push_job([promise, job = std::move(job)](Detector& engine) {
      try {
        promise->set_value(job(engine));
      } catch (...) {
        promise->set_exception(std::current_exception());
      }
    });
    return future;
  }

  // Reference set `id` from the cache, else loaded from the store and cached (HttpError 404 when
  // it is not stored), at least at `version`. Call from a job or worker: it uses `engine`.
  References resolve(Detector& engine, const std::string& id, int64_t version);
  // An encoded upload decoded and preprocessed for `engine` (HttpError 400 naming `name`).
  PixelTensor prepare(Detector& engine, const References& refs, std::string_view bytes, const std::string& name) const;
  // The same for a reference image: its views (1, or 8 when the engine rotates references).
  std::vector<PixelTensor> prepare_reference(Detector& engine, std::string_view bytes, const std::string& name,
                                             size_t index) const;

  uint64_t batches() const { return batches_.load(); }
  uint64_t images_scored() const { return images_.load(); }

 private:
  Image decode(std::string_view bytes, const std::string& name) const;  // HttpError 400 on bad bytes

  struct ScoreItem {
    std::string refset_id, name;
    int64_t version = 0;
    std::string_view bytes;
    std::promise<ScoreRecord> result;
  };
  using Batch = std::vector<std::unique_ptr<ScoreItem>>;

  void push_job(std::function<void(Detector&)> job);
  void work(Detector& engine);
  void gather(Batch& batch, std::unique_lock<std::mutex>& lock);
  void score_batch(Detector& engine, Batch& batch);

  const QueueOptions opts_;
  RefStore& store_;
  RefCache& cache_;
  std::vector<std::unique_ptr<Detector>> engines_;
  std::vector<std::thread> threads_;
  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<ScoreItem>> items_;
  std::deque<std::function<void(Detector&)>> jobs_;
  bool stopping_ = false, job_turn_ = false;
  std::atomic<int64_t> depth_{0};
  std::atomic<uint64_t> batches_{0}, images_{0};
};

}  // namespace gad::serve
