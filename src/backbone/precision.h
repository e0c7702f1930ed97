// Numeric precision of the heavy matrix products. FP32 reproduces the reference; BF16 runs the
// transformer GEMMs in bfloat16 on oneDNN (AVX512-BF16/AMX) with float32 everywhere else.
#pragma once

#include <string>

#include <gad/gad.hpp>

namespace gad {

// gad::Precision is public (<gad/gad.hpp>). Backbones only ever run FP32 or BF16: Auto is
// resolved first (bf16 when the CPU has AVX512-BF16 or AMX, else fp32).
Precision resolve_precision(Precision p);
// "fp32", "bf16" or "auto", resolved.
Precision parse_precision(const std::string& name);
const char* precision_name(Precision p);
bool cpu_has_fast_bf16();

}  // namespace gad
