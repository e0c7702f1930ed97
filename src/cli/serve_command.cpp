// `gad serve`: option parsing, signals and the server's lifecycle (serve/server.h).
#include "cli/cli.h"
#include "serve/server.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "util/allocator.h"
#include "util/error.h"

namespace gad::cli {
namespace {

struct ServeArgs {
  ModelArgs model;
  gad::serve::ServeOptions options;
  std::string max_body = "20MB";
  double cache_mb = 0;  // 0: a quarter of RAM
  double drain_timeout_s = 30;
  std::string token_file;
  const CLI::Option* token_option = nullptr;  // given, even as --token "" (which is refused)
};

std::string trim(const std::string& s) {
  const char* space = " \t\r\n\v\f";
  const size_t first = s.find_first_not_of(space);
  return first == std::string::npos ? "" : s.substr(first, s.find_last_not_of(space) - first + 1);
}

// The first line of `path`, trimmed: a mounted secret or a file only the service user reads.
std::string read_token_file(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) gad::fail("--token-file ", path, ": cannot open (", std::strerror(errno), ")");
  std::string text;
  char buf[4096];
  ssize_t n = 0;
  while (text.find('\n') == std::string::npos && text.size() < (1u << 20) && (n = read(fd, buf, sizeof buf)) > 0)
    text.append(buf, static_cast<size_t>(n));
  const int err = errno;
  close(fd);
  if (n < 0) gad::fail("--token-file ", path, ": cannot read (", std::strerror(err), ")");
  const std::string token = trim(text.substr(0, text.find('\n')));
  if (token.empty()) gad::fail("--token-file ", path, ": no token on its first line");
  return token;
}

// The bearer token from exactly one of --token, --token-file and GAD_TOKEN; "" when none is
// given. A source that is given but empty is an error, not a server without a token.
std::string resolve_token(const ServeArgs& a) {
  const bool flag = a.token_option && a.token_option->count() > 0;
  const char* env = std::getenv("GAD_TOKEN");
  std::vector<std::string> given;
  if (flag) given.push_back("--token");
  if (!a.token_file.empty()) given.push_back("--token-file");
  if (env) given.push_back("GAD_TOKEN");
  if (given.size() > 1) {
    std::string names = given[0];
    for (size_t i = 1; i < given.size(); ++i) names += (i + 1 == given.size() ? " and " : ", ") + given[i];
    gad::fail("the token was given more than once (", names, "): give it one way");
  }
  if (!a.token_file.empty()) return read_token_file(a.token_file);
  const std::string token = trim(env ? env : a.options.token);
  if (token.empty() && env) gad::fail("GAD_TOKEN: set but empty (unset it to serve without a token)");
  if (token.empty() && flag) gad::fail("--token: empty");
  return token;
}


// SIGTERM/SIGINT reach whichever thread the kernel picks — libraries start threads before main
// (OpenBLAS) that no mask set here would cover — so the handler only writes the signal number to
// a pipe (async-signal-safe) and the main thread reads it. Owned by run_serve; restored on exit.
int g_signal_pipe[2] = {-1, -1};

extern "C" void on_stop_signal(int sig) {
  const int saved = errno;
  const unsigned char byte = static_cast<unsigned char>(sig);
  ssize_t ignored = write(g_signal_pipe[1], &byte, 1);
  (void)ignored;
  errno = saved;
}

class StopSignals {
 public:
  StopSignals() {
    if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) gad::fail("cannot create the signal pipe");
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, &old_term_);
    sigaction(SIGINT, &sa, &old_int_);
    signal(SIGPIPE, SIG_IGN);  // a client that hangs up must not kill the server
  }
  ~StopSignals() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
    close(g_signal_pipe[0]);
    close(g_signal_pipe[1]);
    g_signal_pipe[0] = g_signal_pipe[1] = -1;
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // The next signal within `ms` milliseconds, or 0.
  int wait(int ms) const {
    pollfd p{g_signal_pipe[0], POLLIN, 0};
    if (poll(&p, 1, ms) <= 0) return 0;
    unsigned char byte = 0;
    return read(g_signal_pipe[0], &byte, 1) == 1 ? byte : 0;
  }

 private:
  struct sigaction old_term_ {
  }, old_int_{};
};

const char* signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : sig == SIGINT ? "SIGINT" : "a signal"; }

void add_serve_options(CLI::App* cmd, ServeArgs& a) {
  a.model.add_to(cmd);
  a.model.add_scorer_options(cmd);
  auto& o = a.options;
  cmd->add_option("--db", o.db,
                  "reference-set store: a SQLite file (created if missing; WAL mode), or\n"
                  "postgresql://user@host:port/dbname, shared by replicas (schema created or migrated)")
      ->required();
  cmd->add_option("--host", o.host, "address to bind (default 127.0.0.1, loopback only)");
  cmd->add_option("--port", o.port, "port (default 8080; 0: any free port, printed on stderr)");
  a.token_option = cmd->add_option("--token", o.token,
                                   "require 'Authorization: Bearer TOKEN' on every request but /healthz and\n"
                                   "/readyz; visible to every user in `ps`: prefer --token-file or GAD_TOKEN");
  cmd->add_option("--token-file", a.token_file,
                  "read the token from the first line of FILE (whitespace trimmed), e.g. a mounted\n"
                  "secret; or set the environment variable GAD_TOKEN. Give the token one way only")
      ->type_name("FILE");
  cmd->add_flag("--metrics-public", o.metrics_public,
                "with a token: serve /metrics without it too (for a Prometheus scraper)");
  cmd->add_option("--max-body", a.max_body, "largest request body (default 20MB); larger: 413");
  cmd->add_option("--workers", o.workers, "model worker threads, one model copy each (default 1)");
  cmd->add_option("--queue", o.queue, "images queued or in the model at once (default 64); beyond: 429");
  cmd->add_option("--max-k", o.max_k, "most reference images per set (default 32)");
  cmd->add_option("--max-images", o.max_images,
                  "most images per score request (and at most --queue) and per calibrate request\n"
                  "(scored in chunks when more than --queue) (default 32)");
  cmd->add_option("--batch", o.batch, "most images per forward pass (default 8)");
  cmd->add_option("--batch-wait-ms", o.batch_wait_ms, "how long to wait to fill a batch (default 5)");
  cmd->add_option("--cache-mb", a.cache_mb,
                  "reference sets kept in memory, in MB (default: a quarter of RAM); least\n"
                  "recently used sets beyond it are dropped and reloaded from the database");
  cmd->add_option("--http-threads", o.http_threads, "connection threads (default 64); each open connection holds one");
  cmd->add_option("--read-timeout", o.read_timeout_s, "seconds a connection may stay silent mid-request (default 5)");
  cmd->add_option("--keep-alive", o.keep_alive_s, "seconds an idle keep-alive connection is kept (default 2)");
  cmd->add_option("--drain-timeout", a.drain_timeout_s,
                  "on SIGTERM/SIGINT: seconds to finish in-flight requests (default 30)");
  cmd->add_flag("--verbose", o.verbose, "log one line per request on stderr");
}

int run_serve(ServeArgs& a) {
  const auto log = log_line;
  gad::tune_allocator_for_service();  // before any thread: a long-running process must not hoard freed memory
  auto& o = a.options;
  // Workers share the process's compute threads: by default each gets an equal part of the cores.
  if (a.model.threads == 0 && o.workers > 1)
    a.model.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / o.workers);
  o.token = resolve_token(a);
  o.engine = a.model.resolve();
  o.max_body = gad::serve::parse_size(a.max_body);
  if (!(a.cache_mb >= 0) || !std::isfinite(a.cache_mb) || a.cache_mb > 1e9)
    gad::fail("--cache-mb: must be >= 0 (got ", a.cache_mb, ")");
  if (a.cache_mb > 0) o.cache_bytes = std::max<size_t>(1, static_cast<size_t>(a.cache_mb * 1024 * 1024));
  if (!(a.drain_timeout_s >= 0) || a.drain_timeout_s > 86400)
    gad::fail("--drain-timeout: must be 0..86400 s (got ", a.drain_timeout_s, ")");

  StopSignals signals;                // before any thread: none can miss a signal
  gad::serve::Server server(o, log);  // binds; throws (one line) before any thread starts
  server.start();
  server.load_model();  // a signal meanwhile waits in the pipe
  int sig = 0;
  while (!sig && !server.failed()) sig = signals.wait(100);
  if (!sig) gad::fail("the HTTP server stopped unexpectedly");
  log(std::string("received ") + signal_name(sig) + ": draining in-flight requests (at most " +
      std::to_string(static_cast<int>(a.drain_timeout_s)) + " s; a second signal stops at once)");
  server.begin_drain();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(a.drain_timeout_s * 1000));
  while (!server.wait_drained(std::chrono::milliseconds(100))) {
    const bool again = signals.wait(0) != 0;
    if (again || std::chrono::steady_clock::now() >= deadline) {
      log(again ? "second signal: exiting without waiting for in-flight requests"
                : "drain timeout: exiting with requests still in flight (--drain-timeout)");
      std::fflush(stderr);
      std::_Exit(1);  // threads still run: no destructors, no static teardown under them
    }
  }
  log("stopped cleanly");
  return 0;
}

}  // namespace

void add_serve_command(CLI::App& app, Context& ctx) {
  auto a = std::make_shared<ServeArgs>();
  auto* cmd = app.add_subcommand("serve", "REST service: keep reference sets in SQLite or PostgreSQL, score images over HTTP "
                                          "(API: GET /openapi.json)");
  add_serve_options(cmd, *a);
  cmd->callback([a, &ctx] { ctx.run = [a] { return run_serve(*a); }; });
}

}  // namespace gad::cli
