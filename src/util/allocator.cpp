#include "util/allocator.h"

#include <malloc.h>

namespace gad {

void tune_allocator() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum for the dynamic threshold
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

}  // namespace gad
