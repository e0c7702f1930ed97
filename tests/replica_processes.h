// Helpers of the replica tests: a throw-away PostgreSQL cluster and nginx in front of `gad serve`
// replicas, both on 127.0.0.1 and free ports, started and stopped by the test.
#pragma once

#include <arpa/inet.h>
#include <glob.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <filesystem>

#include "serve_process.h"

namespace gad::test {

// A port nothing listens on right now (bound to 0, read back, closed).
inline int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

// Debian installs the server binaries outside PATH, per major version: the newest one.
inline std::string postgres_bin_dir() {
  glob_t g{};
  std::string dir;
  if (glob("/usr/lib/postgresql/*/bin/initdb", 0, nullptr, &g) == 0 && g.gl_pathc > 0)
    dir = std::filesystem::path(g.gl_pathv[g.gl_pathc - 1]).parent_path().string();
  globfree(&g);
  return dir;
}

// Runs a shell command, its output appended to `log`; the exit status.
inline int shell(const std::string& command, const std::string& log) {
  const int status = std::system((command + " >>" + log + " 2>&1").c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

// PostgreSQL in a temp dir: initdb (trust auth, superuser "gad"), TCP on 127.0.0.1 only.
// initdb and postgres refuse to run as root, so as root they run as the "postgres" user (which
// Debian's package creates), or "nobody".
class PostgresCluster {
 public:
  PostgresCluster() {
    static int made = 0;
    bin_ = postgres_bin_dir();
    if (bin_.empty()) {
      ADD_FAILURE() << "no PostgreSQL server binaries (install the postgresql package)";
      return;
    }
    dir_ = temp_dir("pg-" + std::to_string(made++));
    log_ = dir_ + "/setup.log";
    port_ = free_port();
    if (geteuid() == 0) {
      const passwd* pw = getpwnam("postgres");
      if (!pw) pw = getpwnam("nobody");
      if (!pw || chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        ADD_FAILURE() << "cannot hand " << dir_ << " to an unprivileged user for PostgreSQL";
        return;
      }
      as_user_ = std::string("runuser -u ") + pw->pw_name + " -- ";
    }
    if (shell(as_user_ + "timeout 120 " + bin_ + "/initdb -D " + dir_ + "/data -U gad --auth=trust --no-sync -E UTF8", log_) != 0) {
      ADD_FAILURE() << "initdb failed: " << slurp(log_);
      return;
    }
    start();
  }
  ~PostgresCluster() {
    if (!dir_.empty()) {
      stop();
      std::filesystem::remove_all(dir_);
    }
  }
  PostgresCluster(const PostgresCluster&) = delete;
  PostgresCluster& operator=(const PostgresCluster&) = delete;

  void start() {
    // fsync off: a throw-away cluster; gad's own durability is what the tests check.
    const std::string opts = "-c listen_addresses=127.0.0.1 -p " + std::to_string(port_) + " -k " + dir_ + " -c fsync=off";
    if (shell(as_user_ + "timeout 120 " + bin_ + "/pg_ctl -D " + dir_ + "/data -l " + dir_ + "/server.log -w -t 100 -o '" +
                  opts + "' start",
              log_) != 0)
      ADD_FAILURE() << "pg_ctl start failed: " << slurp(log_) << slurp(dir_ + "/server.log");
  }
  void stop() { shell(as_user_ + "timeout 60 " + bin_ + "/pg_ctl -D " + dir_ + "/data -m fast -w -t 50 stop", log_); }

  std::string uri(const std::string& db) const { return "postgresql://gad@127.0.0.1:" + std::to_string(port_) + "/" + db; }
  // Runs `sql` in database `db` with psql; its output (unaligned, tuples only), or "ERROR: ...".
  std::string psql(const std::string& db, const std::string& sql) const {
    const std::string out = dir_ + "/psql.out";
    std::filesystem::remove(out);
    const int rc = shell("timeout 60 " + bin_ + "/psql -X -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p " + std::to_string(port_) +
                             " -U gad -d " + db + " -c " + shell_quote(sql),
                         out);
    std::string text = slurp(out);
    while (!text.empty() && text.back() == '\n') text.pop_back();
    return rc == 0 ? text : "ERROR: " + text;
  }
  void create_database(const std::string& name) const { EXPECT_EQ(psql("postgres", "CREATE DATABASE " + name), "CREATE DATABASE"); }

 private:
  std::string bin_, dir_, log_, as_user_;
  int port_ = 0;
};

// nginx running deploy/nginx.conf (the shipped file, inside a minimal http {} of the test's
// own: temp paths, pid and logs in a temp dir) with its ports swapped for `listen`, `a`, `b`.
class NginxProcess {
 public:
  NginxProcess(int listen, int a, int b) : port_(listen) {
    static int made = 0;
    dir_ = temp_dir("nginx-" + std::to_string(made++));
    chmod(dir_.c_str(), 0755);  // nginx workers drop root privileges and must reach their temp dirs
    std::string site = slurp("deploy/nginx.conf");
    if (site.empty()) ADD_FAILURE() << "deploy/nginx.conf missing (the tests run from the source root)";
    replace(site, "127.0.0.1:8080", "127.0.0.1:" + std::to_string(listen));
    replace(site, "127.0.0.1:8081", "127.0.0.1:" + std::to_string(a));
    replace(site, "127.0.0.1:8082", "127.0.0.1:" + std::to_string(b));
    std::ofstream(dir_ + "/gad.conf") << site;
    std::ofstream(dir_ + "/nginx.conf")
        << "worker_processes 1;\npid " << dir_ << "/nginx.pid;\nerror_log " << dir_ << "/error.log;\n"
        << "events { worker_connections 256; }\nhttp {\n  access_log off;\n"
        << "  client_body_temp_path " << dir_ << "/body;\n  proxy_temp_path " << dir_ << "/proxy;\n"
        << "  fastcgi_temp_path " << dir_ << "/fastcgi;\n  uwsgi_temp_path " << dir_ << "/uwsgi;\n"
        << "  scgi_temp_path " << dir_ << "/scgi;\n  include " << dir_ << "/gad.conf;\n}\n";
    pid_ = fork();
    if (pid_ == 0) {
      const std::string err = dir_ + "/stderr";
      if (!std::freopen(err.c_str(), "w", stderr)) _exit(126);
      execl("/usr/sbin/nginx", "nginx", "-p", dir_.c_str(), "-e", (dir_ + "/error.log").c_str(), "-c",
            (dir_ + "/nginx.conf").c_str(), "-g", "daemon off;", static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < 500; ++i) {  // up to 10 s
      httplib::Client c("127.0.0.1", port_);
      c.set_connection_timeout(0, 200000);
      if (c.Get("/healthz")) return;
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ADD_FAILURE() << "nginx did not start: " << slurp(dir_ + "/stderr") << slurp(dir_ + "/error.log");
  }
  ~NginxProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);  // fast shutdown; the master stops its worker
      waitpid(pid_, nullptr, 0);
    }
    std::filesystem::remove_all(dir_);
  }
  NginxProcess(const NginxProcess&) = delete;
  NginxProcess& operator=(const NginxProcess&) = delete;
  int port() const { return port_; }

 private:
  static void replace(std::string& text, const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    if (at == std::string::npos) ADD_FAILURE() << "deploy/nginx.conf has no " << from;
    else text.replace(at, from.size(), to);
  }
  int port_;
  pid_t pid_ = -1;
  std::string dir_;
};

}  // namespace gad::test
