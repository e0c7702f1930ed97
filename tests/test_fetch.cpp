// Verified downloads (`gad models fetch URL --sha256 ...`, named entries with --url) against an
// HTTP server this test starts on 127.0.0.1: a good transfer installs the exact bytes; a wrong
// hash, a body cut short, an HTTP error or a refused connection exits non-zero with one line and
// leaves no file (not even a temporary) behind.
#include <gtest/gtest.h>

#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "serve/http.h"
#include "support.h"
#include "util/download.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

std::string payload() {
  std::mt19937 rng(7);
  std::string s(300000, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

class FetchServer {
 public:
  FetchServer() : body_(payload()) {
    server_.Get("/model.bin", [this](const httplib::Request&, httplib::Response& r) { r.set_content(body_, "application/octet-stream"); });
    server_.Get("/redirect", [](const httplib::Request&, httplib::Response& r) { r.set_redirect("/model.bin"); });
    // Announces the whole length, sends half, then drops the connection.
    server_.Get("/cut", [this](const httplib::Request&, httplib::Response& r) {
      r.set_content_provider(body_.size(), "application/octet-stream", [this](size_t offset, size_t, httplib::DataSink& sink) {
        if (offset >= body_.size() / 2) return false;
        sink.write(body_.data(), body_.size() / 2);
        return true;
      });
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
  }
  ~FetchServer() {
    server_.stop();
    thread_.join();
  }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  const std::string& body() const { return body_; }

 private:
  std::string body_;
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

// A port nothing listens on: bound once, then closed.
int refused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

using test::CliResult;
using test::run_cli;

std::string sha(const std::string& s) { return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size()); }

size_t files_in(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

// One "gad: error:" line naming `needle`, exit non-zero, and nothing written next to the target.
void expect_clean_failure(const CliResult& r, const std::string& needle, const std::string& dir) {
  EXPECT_NE(r.status, 0);
  const size_t at = r.err.find("gad: error: ");
  ASSERT_NE(at, std::string::npos) << r.err;
  const std::string line = r.err.substr(at);
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << r.err;
  EXPECT_NE(line.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(files_in(dir), 0u) << "a failed download left a file in " << dir;
}

TEST(Fetch, RightHashInstallsTheExactBytes) {
  FetchServer server;
  const std::string dir = test::temp_dir("fetch-ok"), out = dir + "/model.bin";
  for (const std::string& hash : {sha(server.body()), sha(server.body()).substr(0, 8)}) {  // full hash and prefix
    std::filesystem::remove(out);
    CliResult r = run_cli("models fetch " + server.url("/redirect") + " --sha256 " + hash + " -o " + out);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_file_text(out), server.body());
  }
  // Again: the installed file is recognised and nothing is downloaded.
  CliResult again = run_cli("models fetch " + server.url("/model.bin") + " --sha256 " + sha(server.body()) + " -o " + out);
  EXPECT_EQ(again.status, 0);
  EXPECT_NE(again.err.find("already installed"), std::string::npos) << again.err;
}

TEST(Fetch, FailuresLeaveNoFileAndSayWhich) {
  FetchServer server;
  const std::string good = sha(server.body());
  struct Case {
    std::string url, hash, needle;
  };
  const std::vector<Case> cases = {
      {server.url("/model.bin"), std::string(64, 'a'), "sha256 mismatch"},
      {server.url("/cut"), good, "cut short after 150000 of 300000 bytes"},
      {server.url("/missing"), good, "HTTP 404"},
      {"http://127.0.0.1:" + std::to_string(refused_port()) + "/model.bin", good, "connect"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.url);
    const std::string dir = test::temp_dir("fetch-bad");
    expect_clean_failure(run_cli("models fetch " + c.url + " --sha256 " + c.hash + " -o " + dir + "/model.bin"), c.needle, dir);
  }
}

TEST(Fetch, NamedModelFromAMirrorIsCheckedAgainstItsPinnedHash) {
  FetchServer server;  // serves bytes that are not the release file
  const std::string dir = test::temp_dir("fetch-named");
  CliResult r = run_cli("models fetch vit-b-16-plus-240 --url " + server.url("/model.bin") + " -o " + dir + "/clip.pt");
  expect_clean_failure(r, "sha256 mismatch", dir);
  EXPECT_NE(r.err.find("expected 699c4b84"), std::string::npos) << r.err;
  // Offline: one line saying what was tried, from where, and how to place the file by hand.
  const std::string offline = "http://127.0.0.1:" + std::to_string(refused_port()) + "/vit.pt";
  r = run_cli("models fetch vit-b-16-plus-240 --url " + offline + " -o " + dir + "/clip.pt");
  expect_clean_failure(r, "could not fetch vit-b-16-plus-240: " + offline, dir);
  EXPECT_NE(r.err.find("place it at " + dir + "/clip.pt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("vit_b_16_plus_240-laion400m_e32-699c4b84.pt"), std::string::npos) << r.err;
}

TEST(Fetch, CommandLineMistakesAreOneLine) {
  const std::string dir = test::temp_dir("fetch-usage");
  expect_clean_failure(run_cli("models fetch http://127.0.0.1:9/x.pt -o " + dir + "/x.pt"), "give --sha256", dir);
  expect_clean_failure(run_cli("models fetch http://127.0.0.1:9/x.pt --sha256 xyz -o " + dir + "/x.pt"),
                       "expected 8 to 64 hex digits", dir);
  expect_clean_failure(run_cli("models fetch no-such-model"), "available: lite, vit-b-16-plus-240", dir);
  expect_clean_failure(run_cli("score --model vit-l-14 --ref-images examples/tiles/train/good --class tile examples/tiles/test",
                               "GAD_MODELS_DIR=" + dir + "/models"),
                       "model vit-l-14: not installed (looked for " + dir + "/models/vit_l_14", dir);
}

TEST(Fetch, HashPrefixRules) {
  const std::string h = sha("abc");
  EXPECT_TRUE(sha256_matches(h, h));
  EXPECT_TRUE(sha256_matches(h, h.substr(0, 8)));
  EXPECT_TRUE(sha256_matches(h, "BA7816BF"));  // case-insensitive
  EXPECT_FALSE(sha256_matches(h, "ba7816bE"));
  EXPECT_THROW(sha256_matches(h, "ba78"), Error);  // too short to mean anything
}

}  // namespace
}  // namespace gad
