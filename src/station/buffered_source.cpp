#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "station/source.h"
#include "util/error.h"

namespace gad::station {
namespace {

// Capture on its own thread into a bounded queue, so a live source keeps being read while the
// line scores. When the queue is full: "queue" waits (the source falls behind: right for a video
// file), "drop-oldest" / "drop-newest" drop a frame and count it (right for live cameras).
class BufferedSource : public Source {
 public:
  BufferedSource(std::unique_ptr<Source> inner, size_t capacity, const std::string& policy)
      : inner_(std::move(inner)), capacity_(capacity), policy_(policy), thread_([this] { capture(); }) {}
  ~BufferedSource() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  std::string describe() const override { return inner_->describe(); }
  bool finished() const override {
    std::lock_guard<std::mutex> lock(mutex_);
    return ended_ && queue_.empty();
  }
  int64_t dropped() override {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t n = dropped_;
    dropped_ = 0;
    return n;
  }
  std::vector<Input> next(size_t max, std::chrono::milliseconds timeout) override {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return !queue_.empty() || !error_.empty() || ended_; });
    if (queue_.empty() && !error_.empty()) fail(error_);
    std::vector<Input> out;
    while (!queue_.empty() && out.size() < max) {
      out.push_back(std::move(queue_.front()));
      queue_.pop_front();
    }
    changed_.notify_all();  // room for the capture thread
    return out;
  }

 private:
  void capture() {
    auto backoff = std::chrono::milliseconds(500);
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (quit_ || ended_) return;
      }
      std::vector<Input> got;
      try {
        got = inner_->next(1, std::chrono::milliseconds(200));
        backoff = std::chrono::milliseconds(500);
      } catch (const std::exception& e) {
        inner_->reset();
        std::unique_lock<std::mutex> lock(mutex_);
        error_ = e.what();
        changed_.notify_all();
        changed_.wait_for(lock, backoff, [&] { return quit_; });
        backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
        continue;
      }
      std::unique_lock<std::mutex> lock(mutex_);
      if (!got.empty()) error_.clear();
      for (auto& in : got) {
        if (queue_.size() >= capacity_) {
          if (policy_ == "drop-newest") {
            ++dropped_;
            continue;
          }
          if (policy_ == "drop-oldest") {
            queue_.pop_front();
            ++dropped_;
          } else {
            changed_.wait(lock, [&] { return quit_ || queue_.size() < capacity_; });
            if (quit_) return;
          }
        }
        queue_.push_back(std::move(in));
      }
      if (inner_->finished()) ended_ = true;
      changed_.notify_all();
    }
  }
  std::unique_ptr<Source> inner_;
  size_t capacity_;
  std::string policy_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Input> queue_;
  std::string error_;
  int64_t dropped_ = 0;
  bool quit_ = false, ended_ = false;
  std::thread thread_;  // last: starts once the rest is ready
};

}  // namespace

std::unique_ptr<Source> buffered_source(std::unique_ptr<Source> inner, size_t capacity, const std::string& policy) {
  return std::make_unique<BufferedSource>(std::move(inner), capacity, policy);
}

}  // namespace gad::station
