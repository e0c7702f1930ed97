// Shared helpers for the test suite: fixture paths and safetensors -> at::Tensor maps.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gad/gad.hpp>

#include "io/safetensors.h"

namespace gad::test {

// Final-score budget of bf16 runs against the fp32 reference on a CPU without a bf16 dot product
// (no AVX512-BF16/AMX): LibTorch 1.13's fallback bf16 kernels round more than oneDNN's. The worst
// measured on an AVX2-only CPU was 0.0186 (AnomalyDINO) and 0.0147 (InCTRL); 0.025 leaves room for
// other fallback CPUs, still far below the score gaps that separate normals from anomalies.
constexpr double kBf16FallbackBudget = 0.025;

inline std::string shared(const std::string& rel) { return std::string(GAD_SHARED_DIR) + "/" + rel; }
inline std::string inctrl_fixture(const std::string& rel) { return shared("fixtures/inctrl/" + rel); }

// The tiny random-weight InCTRL model of the fixtures, fp32.
inline ModelOptions tiny_options() {
  ModelOptions o;
  o.model = inctrl_fixture("tiny_model/model.safetensors");
  o.config = inctrl_fixture("tiny_model/config.json");
  o.precision = Precision::FP32;
  return o;
}

// Loads every tensor of a safetensors file (or torch archive) as float32 (integers keep their
// dtype), copied.
std::map<std::string, at::Tensor> load_tensors(const std::string& path);

double max_abs_diff(const at::Tensor& a, const at::Tensor& b);

// A fresh empty directory under the system temp dir, removed by the caller if wanted.
std::string temp_dir(const std::string& name);

// Runs the gad binary with `args` (a shell command line; `env` is put in front, e.g.
// "GAD_MODELS_DIR=/tmp/x") and returns its exit status, stdout and stderr.
struct CliResult {
  int status;
  std::string out, err;
};
CliResult run_cli(const std::string& args, const std::string& env = "");

// The message of the gad::Error that f() throws, or "(no error)".
std::string error_of(const std::function<void()>& f);

// `s` as one single-quoted POSIX shell word.
std::string shell_quote(const std::string& s);

// The rows of a CSV file as Python's csv module (strict mode) reads them: gad's CSVs checked by a
// real parser, not by the code that wrote them. Fails the calling test when Python rejects the file.
std::vector<std::vector<std::string>> python_csv_rows(const std::string& path);

}  // namespace gad::test
