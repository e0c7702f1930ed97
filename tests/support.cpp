#include "support.h"

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>

#include <unistd.h>

#include <filesystem>

namespace gad::test {

std::map<std::string, at::Tensor> load_tensors(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, raw] : read_safetensors(path).tensors) {
    at::ScalarType st = raw.dtype == DType::I64 ? at::kLong : raw.dtype == DType::U8 ? at::kByte : at::kFloat;
    std::vector<int64_t> shape(raw.shape.begin(), raw.shape.end());
    out[name] = at::from_blob(const_cast<uint8_t*>(raw.data), shape, st).clone();
  }
  return out;
}

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes(), "shape mismatch ", a.sizes(), " vs ", b.sizes());
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

std::string temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("gad-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

CliResult run_cli(const std::string& args, const std::string& env) {
  static int calls = 0;
  const std::string dir = temp_dir("cli-" + std::to_string(calls++));
  const int status = std::system((env + " " + GAD_CLI + " " + args + " >" + dir + "/out 2>" + dir + "/err").c_str());
  auto slurp = [](const std::string& p) {
    std::ifstream in(p);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  CliResult r{WEXITSTATUS(status), slurp(dir + "/out"), slurp(dir + "/err")};
  std::filesystem::remove_all(dir);
  return r;
}

}  // namespace gad::test
