// Process-level compute settings shared by every command.
#pragma once

namespace gad {

// Sets torch's and OpenBLAS's thread counts (0 = every core); returns the count in use.
int configure_threads(int requested);

// Sets torch's and OpenBLAS's thread counts for a scope and restores the previous count after.
// Training runs its (tiny) head updates on one thread: multi-threaded reductions and GEMMs may
// sum in a thread-dependent order, and heads must come out bit-identical for any --threads.
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_;
};

}  // namespace gad
