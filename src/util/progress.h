// A one-line progress bar with ETA on stderr ("\r[ 42%] 420/1000 images  what  ETA 01:05").
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace gad {

class Progress {
 public:
  Progress(size_t total, std::string unit) : total_(total), unit_(std::move(unit)), start_(Clock::now()) {}
  // Redraws the line; `what` is a short note (current item, loss, ...).
  void update(size_t done, const std::string& what = "") const;
  void finish() const;  // ends the line
  double elapsed_s() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  size_t total_;
  std::string unit_;
  Clock::time_point start_;
};

}  // namespace gad
