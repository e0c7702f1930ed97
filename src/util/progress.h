// Progress with ETA on stderr: on a terminal a one-line bar redrawn in place ("\r[ 42%] 420/1000
// images  what  ETA 01:05"); redirected to a log, the same as a plain line at most every 10 s, so
// logs get no carriage returns.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace gad {

class Progress {
 public:
  Progress(size_t total, std::string unit);
  // Redraws the line; `what` is a short note (current item, loss, ...).
  void update(size_t done, const std::string& what = "") const;
  void finish() const;  // ends the line
  double elapsed_s() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  size_t total_;
  std::string unit_;
  Clock::time_point start_;
  bool terminal_;
  mutable double last_line_s_ = -1e9;
};

}  // namespace gad
