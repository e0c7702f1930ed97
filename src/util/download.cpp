#include "util/download.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <memory>

#include <unistd.h>

#include "util/error.h"
#include "util/fs.h"
#include "util/progress.h"

namespace gad {
namespace {

struct Transfer {
  std::FILE* file = nullptr;
  Sha256 hash;
  bool write_failed = false;
  std::unique_ptr<Progress> bar;
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  const size_t n = size * count;
  if (std::fwrite(data, 1, n, t->file) != n) {
    t->write_failed = true;
    return 0;  // makes curl stop with CURLE_WRITE_ERROR
  }
  t->hash.update(data, n);
  return n;
}

int on_progress(void* user, curl_off_t total, curl_off_t now, curl_off_t, curl_off_t) {
  auto* t = static_cast<Transfer*>(user);
  if (total <= 0) return 0;
  if (!t->bar) t->bar = std::make_unique<Progress>(static_cast<size_t>(total >> 20), "MB");
  t->bar->update(static_cast<size_t>(now >> 20));
  return 0;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// One line saying why the transfer failed, in the words a user can act on.
std::string transfer_error(CURLcode code, CURL* curl, const char* detail) {
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (code == CURLE_HTTP_RETURNED_ERROR) return "the server answered HTTP " + std::to_string(status);
  curl_off_t got = 0, want = -1;
  curl_easy_getinfo(curl, CURLINFO_SIZE_DOWNLOAD_T, &got);
  curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &want);
  std::string what = detail[0] ? detail : curl_easy_strerror(code);
  if (code == CURLE_PARTIAL_FILE || (code == CURLE_RECV_ERROR && want > 0))
    return "the transfer was cut short after " + std::to_string(got) + " of " + std::to_string(want) + " bytes (" + what + ")";
  if (code == CURLE_OPERATION_TIMEDOUT) return "the transfer stalled (" + what + ")";
  return what;
}

}  // namespace

bool sha256_matches(const std::string& hex, const std::string& expected) {
  const std::string e = lower(expected);
  if (e.size() < 8 || e.size() > 64 || e.find_first_not_of("0123456789abcdef") != std::string::npos)
    fail("sha256 '", expected, "': expected 8 to 64 hex digits");
  return lower(hex).compare(0, e.size(), e) == 0;
}

std::string download_file(const std::string& url, const std::string& path, const DownloadOptions& o) {
  if (!o.sha256.empty()) sha256_matches(std::string(64, '0'), o.sha256);  // validates the expected hash before any transfer
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) fail(url, ": cannot start a transfer (libcurl failed to initialise)");
  char detail[CURL_ERROR_SIZE] = "";
  Transfer t;
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");  // release hosts redirect to storage
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, detail);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, o.connect_timeout_s);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, o.stall_timeout_s);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // signals belong to the program
  curl_easy_setopt(c, CURLOPT_USERAGENT, "gad/" GAD_VERSION);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &t);
  if (o.progress && ::isatty(STDERR_FILENO)) {
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &t);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  }
  std::string hex;
  write_file_atomically(path, [&](std::FILE* f) {
    t.file = f;
    const CURLcode code = curl_easy_perform(c);
    if (t.bar) t.bar->finish();
    if (t.write_failed) fail(path, ": write failed while downloading ", url);
    if (code != CURLE_OK) fail(url, ": download failed: ", transfer_error(code, c, detail));
    hex = t.hash.hex();
    if (!o.sha256.empty() && !sha256_matches(hex, o.sha256))
      fail(url, ": sha256 mismatch (got ", hex, ", expected ", lower(o.sha256), o.sha256.size() < 64 ? "..." : "",
           "); the file was not installed");
  });
  return hex;
}

}  // namespace gad
