#include "model/runtime.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <thread>

#include "util/error.h"

// OpenBLAS (which runs torch's fp32 GEMMs here) keeps its own thread pool; weak so gad still links
// against another BLAS.
extern "C" void openblas_set_num_threads(int) __attribute__((weak));

namespace gad {

int configure_threads(int requested) {
  if (requested < 0) fail("threads: must be >= 0 (got ", requested, ")");
  int threads = requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  if (openblas_set_num_threads) openblas_set_num_threads(threads);
  return threads;
}

ScopedThreads::ScopedThreads(int threads) : previous_(at::get_num_threads()) { configure_threads(threads); }
ScopedThreads::~ScopedThreads() { configure_threads(previous_); }

}  // namespace gad

namespace gad {

int set_threads(int threads) { return configure_threads(threads); }

}  // namespace gad
