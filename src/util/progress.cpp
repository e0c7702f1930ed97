#include "util/progress.h"

#include <cstdio>
#include <unistd.h>

namespace gad {

Progress::Progress(size_t total, std::string unit)
    : total_(total), unit_(std::move(unit)), start_(Clock::now()), terminal_(::isatty(2) == 1) {}

void Progress::update(size_t done, const std::string& what) const {
  const double el = elapsed_s(), eta = done ? el / done * (total_ - done) : 0;
  if (!terminal_ && el - last_line_s_ < 10 && done != total_) return;
  last_line_s_ = el;
  std::fprintf(stderr, "%s[%3zu%%] %zu/%zu %s  %s  ETA %02d:%02d%s", terminal_ ? "\r" : "gad: ",
               total_ ? done * 100 / total_ : 100, done, total_, unit_.c_str(), what.c_str(), static_cast<int>(eta) / 60,
               static_cast<int>(eta) % 60, terminal_ ? "   " : "\n");
  std::fflush(stderr);
}

void Progress::finish() const {
  if (terminal_) std::fprintf(stderr, "\n");
}

}  // namespace gad
