#include "util/progress.h"

#include <cstdio>

namespace gad {

void Progress::update(size_t done, const std::string& what) const {
  const double el = elapsed_s(), eta = done ? el / done * (total_ - done) : 0;
  std::fprintf(stderr, "\r[%3zu%%] %zu/%zu %s  %s  ETA %02d:%02d   ", total_ ? done * 100 / total_ : 100, done, total_,
               unit_.c_str(), what.c_str(), static_cast<int>(eta) / 60, static_cast<int>(eta) % 60);
  std::fflush(stderr);
}

void Progress::finish() const { std::fprintf(stderr, "\n"); }

}  // namespace gad
