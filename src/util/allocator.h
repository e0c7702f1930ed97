// Process-wide allocator tuning for the gad binaries (call once at start-up).
//
// Inference allocates and frees the same 1-30 MB activation buffers every layer. With glibc's
// defaults many of them go to fresh mmap()s and freed memory is trimmed back to the kernel, so
// every layer pays page faults on new pages; on small VMs that cost more than the arithmetic
// (measured: ViT-B-16+ bf16 batch-8 query 134 -> 107 ms, bf16 weight conversion 469 -> 97 ms).
// Keeping buffers below 32 MiB on the heap and trimming only above 256 MiB removes those faults
// for a bounded amount of retained memory.
#pragma once

namespace gad {

void tune_allocator();
// For long-running services: at most a few malloc arenas (not one per HTTP thread) and freed memory
// handed back to the system early, so a burst of requests does not stay resident. Call before
// threads start.
void tune_allocator_for_service();
// Hands freed heap memory back to the system (also from the middle of the heap, which the trim
// threshold never reaches); a service calls it when it falls idle.
void release_free_memory();

}  // namespace gad
