#include "serve/connection_guard.h"

#include <dirent.h>
#include <linux/tcp.h>  // struct tcp_info with tcpi_bytes_received (glibc's lacks it)
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <set>

namespace gad::serve {
namespace {

std::string peer_key(const std::string& addr, int port) { return addr + ":" + std::to_string(port); }

// "addr:port" of the peer of an accepted TCP socket on `local_port`, or "" for anything else.
std::string accepted_peer(int fd, int local_port) {
  int listening = 0;
  socklen_t len = sizeof listening;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening) return "";
  sockaddr_storage local{}, peer{};
  socklen_t ll = sizeof local, pl = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) return "";
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) return "";
  const int port = ntohs(local.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&local)->sin_port
                                                    : reinterpret_cast<sockaddr_in6*>(&local)->sin6_port);
  if (port != local_port || getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) return "";
  char host[NI_MAXHOST], serv[NI_MAXSERV];
  if (getnameinfo(reinterpret_cast<sockaddr*>(&peer), pl, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) != 0)
    return "";
  return peer_key(host, std::atoi(serv));
}

}  // namespace

ConnectionGuard::ConnectionGuard(int port, uint64_t header_bytes, double header_seconds,
                                 std::function<void(const char*)> on_drop)
    : port_(port), header_bytes_(header_bytes), header_seconds_(header_seconds), on_drop_(std::move(on_drop)) {}

ConnectionGuard::~ConnectionGuard() {
  {
    std::lock_guard<std::mutex> lock(m_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ConnectionGuard::start() {
  thread_ = std::thread([this] { watch(); });
}

void ConnectionGuard::headers_done(const std::string& addr, int port) {
  std::lock_guard<std::mutex> lock(m_);
  conns_[peer_key(addr, port)].in_headers = false;
}

void ConnectionGuard::request_done(const std::string& addr, int port) {
  std::lock_guard<std::mutex> lock(m_);
  Conn& c = conns_[peer_key(addr, port)];
  c.in_headers = true;
  c.rebase = true;
  c.since = std::chrono::steady_clock::now();
}

void ConnectionGuard::watch() {
  std::unique_lock<std::mutex> lock(m_);
  while (!stopping_) {
    lock.unlock();
    scan();
    lock.lock();
    cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
}

void ConnectionGuard::scan() {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return;
  std::set<std::string> alive;
  const auto now = std::chrono::steady_clock::now();
  while (dirent* e = readdir(dir)) {
    const int fd = std::atoi(e->d_name);
    if (fd <= 2 || fd == dirfd(dir)) continue;
    const std::string key = accepted_peer(fd, port_);
    if (key.empty()) continue;
    tcp_info info{};
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) continue;
    const uint64_t bytes = info.tcpi_bytes_received;
    alive.insert(key);
    const char* why = nullptr;
    {
      std::lock_guard<std::mutex> lock(m_);
      Conn& c = conns_[key];  // a new connection starts in its headers, from byte 0
      c.seen = true;
      if (c.rebase) {
        c.base = bytes;
        c.rebase = false;
        continue;
      }
      if (!c.in_headers) continue;
      const uint64_t got = bytes - std::min(bytes, c.base);
      if (got > header_bytes_)
        why = "headers_too_large";
      else if (got > 0 && std::chrono::duration<double>(now - c.since).count() > header_seconds_)
        why = "headers_too_slow";
    }
    if (why) {
      shutdown(fd, SHUT_RDWR);  // httplib's read ends; it closes the socket
      on_drop_(why);
    }
  }
  closedir(dir);
  // Entries of closed connections go; one a handler made for a connection that closed before
  // any scan saw it goes after a second.
  std::lock_guard<std::mutex> lock(m_);
  for (auto it = conns_.begin(); it != conns_.end();) {
    const bool gone =
        !alive.count(it->first) && (it->second.seen || now - it->second.created > std::chrono::seconds(1));
    it = gone ? conns_.erase(it) : std::next(it);
  }
}

}  // namespace gad::serve
