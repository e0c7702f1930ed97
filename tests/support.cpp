#include "support.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/weights.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad::test {

std::map<std::string, at::Tensor> load_tensors(const std::string& path) {
  // The engine's own loader maps every dtype (F16/BF16/F64 become float32, integers keep theirs).
  const Weights weights = Weights::load(path);
  std::map<std::string, at::Tensor> out;
  for (const auto& [name, t] : weights.all()) out[name] = t.clone();
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

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::vector<std::vector<std::string>> python_csv_rows(const std::string& path) {
  const std::string dir = temp_dir("python-csv");
  std::ofstream(dir + "/read.py") << "import csv, json, sys\n"
                                     "with open(sys.argv[1], newline='', encoding='utf-8') as f:\n"
                                     "    json.dump(list(csv.reader(f, strict=True)), sys.stdout)\n";
  const std::string cmd = "/usr/bin/python3 " + dir + "/read.py " + shell_quote(path) + " >" + dir + "/rows.json 2>" +
                          dir + "/err";
  const int rc = std::system(cmd.c_str());
  EXPECT_EQ(rc, 0) << "Python's csv module rejects " << path << ": " << read_file_text(dir + "/err");
  if (rc != 0) return {};
  return nlohmann::json::parse(read_file_text(dir + "/rows.json")).get<std::vector<std::vector<std::string>>>();
}

}  // namespace gad::test
