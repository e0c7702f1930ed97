// ConnectionGuard — drops connections whose request headers grow too large or take too long.
//
// cpp-httplib 0.11.4 reads request headers without a limit on their number and times out each
// read, not the request, so a client that keeps sending header lines grows memory without bound
// and one that trickles a byte every few seconds holds its thread forever. httplib gives no hook
// before the headers are complete, so a watchdog thread looks at the server's sockets from the
// outside every 50 ms: the kernel's byte count of each accepted connection (TCP_INFO) since its
// current request began, and how long that request has been in its headers. Past `header_bytes`
// or `header_seconds` it shuts the socket down, which ends httplib's read. Connections are told
// apart by the peer address, as httplib reports it in each request.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace gad::serve {

class ConnectionGuard {
 public:
  ConnectionGuard(int port, uint64_t header_bytes, double header_seconds, std::function<void(const char*)> on_drop);
  ~ConnectionGuard();  // stops and joins the watchdog
  ConnectionGuard(const ConnectionGuard&) = delete;
  ConnectionGuard& operator=(const ConnectionGuard&) = delete;

  void start();
  void headers_done(const std::string& peer_addr, int peer_port);  // the request's headers are in
  void request_done(const std::string& peer_addr, int peer_port);  // the next request starts now

 private:
  struct Conn {
    bool in_headers = true;
    bool rebase = false;  // take the current byte count as the start of the next request
    uint64_t base = 0;
    std::chrono::steady_clock::time_point since = std::chrono::steady_clock::now();
    const std::chrono::steady_clock::time_point created = since;
    bool seen = false;  // by a scan: once its socket is gone, the entry goes too
  };
  void watch();
  void scan();

  const int port_;
  const uint64_t header_bytes_;
  const double header_seconds_;
  std::function<void(const char*)> on_drop_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, Conn> conns_;  // by "addr:port" of the peer
  std::thread thread_;
};

}  // namespace gad::serve
