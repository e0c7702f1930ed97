#include "station/hot_folder.h"

#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "util/error.h"
#include "util/image_list.h"

namespace gad::station {
namespace fs = std::filesystem;

bool stat_file(const std::string& path, long long* size, long long* mtime_ns) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  *size = st.st_size;
  *mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
  return true;
}

HotFolder::HotFolder(const std::string& dir, bool recursive, std::set<std::string> exclude,
                     std::chrono::milliseconds settle)
    : dir_(fs::path(dir).lexically_normal().string()), recursive_(recursive), settle_(settle) {
  std::error_code ec;
  if (!fs::is_directory(dir_, ec)) fail(dir, ": not a folder");
  for (const auto& e : exclude) exclude_.insert(fs::weakly_canonical(e, ec).string());
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) fail(dir, ": cannot watch (inotify: ", std::strerror(errno), ")");
  watch(dir_);
}

HotFolder::~HotFolder() { ::close(fd_); }

void HotFolder::watch(const std::string& dir) {
  const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | (recursive_ ? IN_CREATE : 0u);
  const int wd = inotify_add_watch(fd_, dir.c_str(), mask);
  if (wd < 0) fail(dir, ": cannot watch (inotify: ", std::strerror(errno), ")");
  dirs_[wd] = dir;
  if (!recursive_) return;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory(ec) && !is_hidden(e.path()) && !exclude_.count(fs::weakly_canonical(e.path(), ec).string()))
      watch(e.path().string());
}

bool HotFolder::wanted(const std::string& path) const {
  const fs::path p(path);
  std::error_code ec;
  if (is_hidden(p) || !is_image_file(p)) return false;
  return !exclude_.count(fs::weakly_canonical(p.parent_path(), ec).string());
}

std::vector<std::string> HotFolder::existing() {
  std::vector<std::string> out;
  const auto now_file_time = std::chrono::system_clock::now();
  std::error_code ec;
  auto consider = [&](const fs::path& p) {
    if (!wanted(p.string())) return;
    long long size = 0, mtime = 0;
    if (!stat_file(p.string(), &size, &mtime)) return;
    const auto age = now_file_time.time_since_epoch() - std::chrono::nanoseconds(mtime);
    if (age < settle_) {
      young_[p.string()] = {size, mtime, std::chrono::steady_clock::now()};
    } else {
      out.push_back(p.string());
    }
  };
  if (recursive_) {
    for (auto it = fs::recursive_directory_iterator(dir_, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec) && (is_hidden(it->path()) || exclude_.count(fs::weakly_canonical(it->path(), ec).string()))) {
        it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file(ec)) consider(it->path());
    }
  } else {
    for (const auto& e : fs::directory_iterator(dir_, ec))
      if (e.is_regular_file(ec)) consider(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> HotFolder::settled() {
  std::vector<std::string> out;
  const auto now = std::chrono::steady_clock::now();
  for (auto it = young_.begin(); it != young_.end();) {
    long long size = 0, mtime = 0;
    if (!stat_file(it->first, &size, &mtime)) {
      it = young_.erase(it);
    } else if (size != it->second.size || mtime != it->second.mtime_ns) {
      it->second = {size, mtime, now};  // still changing
      ++it;
    } else if (now - it->second.seen >= settle_) {
      out.push_back(it->first);
      it = young_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<std::string> HotFolder::wait(std::chrono::milliseconds timeout) {
  std::vector<std::string> out = settled();
  pollfd p{fd_, POLLIN, 0};
  const int waited = young_.empty() ? static_cast<int>(timeout.count()) : static_cast<int>(std::min<long long>(timeout.count(), 100));
  if (out.empty() && ::poll(&p, 1, waited) <= 0) return settled();
  alignas(inotify_event) char buf[64 * 1024];
  for (;;) {
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    for (char* at = buf; at < buf + n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(at);
      at += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) {  // events were lost: rescan (done files are skipped by the line)
        for (auto& f : existing()) out.push_back(f);
        continue;
      }
      auto dir = dirs_.find(ev->wd);
      if (dir == dirs_.end() || ev->len == 0) continue;
      const std::string path = (fs::path(dir->second) / ev->name).string();
      if (ev->mask & IN_ISDIR) {
        std::error_code ec;
        if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) && recursive_ && !is_hidden(path) &&
            !exclude_.count(fs::weakly_canonical(path, ec).string())) {
          watch(path);
          for (const auto& e : fs::recursive_directory_iterator(path, ec))  // files written before the watch
            if (e.is_regular_file(ec) && wanted(e.path().string())) young_[e.path().string()] = {-1, -1, std::chrono::steady_clock::now()};
        }
        continue;
      }
      young_.erase(path);
      if (wanted(path)) out.push_back(path);
    }
  }
  return out;
}

}  // namespace gad::station
