#include "backbone/precision.h"

#include <fstream>
#include <sstream>

#include "util/error.h"

namespace gad {

bool cpu_has_fast_bf16() {
  // /proc/cpuinfo flags are what the kernel enabled; cpuid alone would miss OS support for AMX.
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line);
    std::string w;
    while (words >> w)
      if (w == "avx512_bf16" || w == "amx_bf16") return true;
    return false;
  }
  return false;
}

Precision resolve_precision(Precision p) {
  if (p != Precision::Auto) return p;
  return cpu_has_fast_bf16() ? Precision::BF16 : Precision::FP32;
}

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::FP32;
  if (name == "bf16") return Precision::BF16;
  if (name == "auto" || name.empty()) return resolve_precision(Precision::Auto);
  fail("precision: unknown value '", name, "' (use fp32, bf16 or auto)");
}

const char* precision_name(Precision p) { return p == Precision::BF16 ? "bf16" : "fp32"; }

}  // namespace gad
