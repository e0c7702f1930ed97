// Numeric precision of the heavy matrix products. FP32 reproduces the reference; BF16 runs the
// transformer GEMMs in bfloat16 on oneDNN (AVX512-BF16/AMX) with float32 everywhere else.
#pragma once

#include <string>

namespace gad {

enum class Precision { FP32, BF16 };

// "fp32", "bf16" or "auto" (bf16 when the CPU has AVX512-BF16 or AMX, else fp32).
Precision parse_precision(const std::string& name);
const char* precision_name(Precision p);
bool cpu_has_fast_bf16();

}  // namespace gad
