#include "util/allocator.h"

#include <malloc.h>

namespace gad {

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum for the dynamic threshold
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

void release_free_memory() { malloc_trim(0); }

void tune_allocator_for_service() {
  mallopt(M_ARENA_MAX, 2);
  mallopt(M_TRIM_THRESHOLD, 16 << 20);
}

}  // namespace gad
