// Helpers of the `gad serve` tests: the real binary as a child process on a free loopback port,
// and the requests the tests send.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "child_process.h"
#include "serve/http.h"
#include "support.h"

namespace gad::test {

using json = nlohmann::json;

inline const std::string kLiteModel = shared("fixtures/lite/mobilenet_v2/model.json");
inline std::string elpv(int i) {
  char name[64];
  std::snprintf(name, sizeof name, "data/elpv_sample/images/cell%04d.png", i);
  return shared(name);
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The `gad serve` child process, on a free port (--port 0; the bound port is read from stderr).
class ServerProcess {
 public:
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;
  // Starts `gad serve` (the lite model and any free port unless `extra` gives --model or --port)
  // and waits until it is ready, or only until it is bound when `wait_ready` is false.
  ServerProcess(const std::string& db, const std::vector<std::string>& extra = {}, bool wait_ready = true) {
    static int started = 0;  // several servers may run at once (replicas)
    dir_ = temp_dir("serve-log-" + std::to_string(started++));
    err_ = dir_ + "/stderr";
    std::vector<std::string> args = {GAD_CLI, "serve", "--precision", "fp32", "--threads", "2", "--db", db};
    if (std::find(extra.begin(), extra.end(), "--model") == extra.end()) args.insert(args.end(), {"--model", kLiteModel});
    if (std::find(extra.begin(), extra.end(), "--port") == extra.end()) args.insert(args.end(), {"--port", "0"});
    args.insert(args.end(), extra.begin(), extra.end());
    pid_ = fork();
    if (pid_ == 0) {
      if (!std::freopen(err_.c_str(), "w", stderr)) _exit(126);
      if (!std::freopen("/dev/null", "w", stdout)) _exit(126);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // The port is printed once bound ("listening on http://HOST:PORT"); requests are served once
    // the model is loaded ("ready"). Clients connect to 127.0.0.1, which any --host the tests
    // give (loopback or a wildcard) reaches.
    const std::string marker = "listening on http://";
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::string log = slurp(err_);
      auto at = log.find(marker);
      const auto eol = at == std::string::npos ? std::string::npos : log.find('\n', at);
      if (eol != std::string::npos && (!wait_ready || log.find("gad: ready\n") != std::string::npos)) {
        port_ = std::stoi(log.substr(log.rfind(':', eol) + 1));
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        ADD_FAILURE() << "gad serve exited early: " << log;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "gad serve did not start: " << slurp(err_);
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Resident memory of the server process, in MB (VmRSS).
  double rss_mb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("VmRSS:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
    return -1;
  }
  bool alive() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }
  std::string log() const { return slurp(err_); }
  void signal(int sig) const { kill(pid_, sig); }
  // Waits for the exit; returns the exit code (or 128 + signal).
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  httplib::Client client(const std::string& token = "") const {
    httplib::Client c("127.0.0.1", port_);
    c.set_connection_timeout(5, 0);
    c.set_read_timeout(60, 0);
    if (!token.empty()) c.set_bearer_token_auth(token.c_str());
    return c;
  }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
  std::string dir_, err_;
};

inline httplib::MultipartFormDataItems refset_form(const std::string& cls, const std::vector<int>& images) {
  httplib::MultipartFormDataItems items;
  items.push_back({"class", cls, "", ""});
  for (int i : images) items.push_back({"images", slurp(elpv(i)), "cell" + std::to_string(i) + ".png", "image/png"});
  return items;
}

inline std::string register_set(httplib::Client& c, const std::string& cls, const std::vector<int>& images) {
  auto r = c.Post("/v1/refsets", refset_form(cls, images));
  if (!r) return "";
  EXPECT_EQ(r->status, 201) << r->body;
  return r->status == 201 ? json::parse(r->body)["id"].get<std::string>() : "";
}

inline json post_json(httplib::Client& c, const std::string& path, const json& body, int want = 200) {
  auto r = c.Post(path.c_str(), body.dump(), "application/json");
  EXPECT_TRUE(r) << path;
  if (!r) return json();
  EXPECT_EQ(r->status, want) << r->body;
  return json::parse(r->body);
}

inline std::vector<double> scores_of(const json& response) {
  std::vector<double> out;
  for (const auto& r : response["results"]) out.push_back(r["score"].get<double>());
  return out;
}

// Runs the gad binary with `args` to its exit (killed after `timeout_s`): exit code (or 128 +
// signal), stdout, stderr and the wall time.
struct ExitResult {
  int code = -1;
  std::string out, err;
  double seconds = 0;
};
inline ExitResult run_gad(const std::vector<std::string>& args, double timeout_s) {
  const std::string dir = temp_dir("gad-run"), err_path = dir + "/stderr", out_path = dir + "/stdout";
  std::vector<std::string> all = {GAD_CLI};
  all.insert(all.end(), args.begin(), args.end());
  const auto t0 = std::chrono::steady_clock::now();
  ChildProcess child(all, out_path, err_path);
  ExitResult r;
  r.code = child.wait(std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
  if (r.code < 0) {  // past the timeout
    child.kill_now();
    r.code = 128 + SIGKILL;
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.err = slurp(err_path);
  r.out = slurp(out_path);
  return r;
}

}  // namespace gad::test
