// A hot folder: the image files that arrive in a directory (inotify), complete ones only — a file
// is offered when its writer closed it or when it was renamed in, never while it is being
// written. At start the files already there are offered too, except those modified in the last
// `settle` period: they are offered once their size and time stayed unchanged for that long, or
// when their close event arrives. Hidden files and non-images are ignored.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace gad::station {

class HotFolder {
 public:
  // Watches `dir` (and, when `recursive`, every folder below it, also those created later);
  // paths in `exclude` (the line's own output folders) are never offered.
  HotFolder(const std::string& dir, bool recursive, std::set<std::string> exclude,
            std::chrono::milliseconds settle = std::chrono::milliseconds(1000));
  ~HotFolder();
  HotFolder(const HotFolder&) = delete;
  HotFolder& operator=(const HotFolder&) = delete;

  // The files present now, sorted (call once, after construction: the watch is already set up,
  // so nothing written meanwhile is missed).
  std::vector<std::string> existing();
  // Files that became complete, waiting at most `timeout` for the first; in arrival order.
  std::vector<std::string> wait(std::chrono::milliseconds timeout);

 private:
  void watch(const std::string& dir);
  bool wanted(const std::string& path) const;
  std::vector<std::string> settled();
  std::string dir_;
  bool recursive_;
  std::set<std::string> exclude_;
  std::chrono::milliseconds settle_;
  int fd_ = -1;
  std::map<int, std::string> dirs_;  // watch descriptor -> folder
  struct Young {
    long long size, mtime_ns;
    std::chrono::steady_clock::time_point seen;
  };
  std::map<std::string, Young> young_;  // found at start while possibly still being written
};

// The size and modification time (ns) of a file; false when it is gone.
bool stat_file(const std::string& path, long long* size, long long* mtime_ns);

}  // namespace gad::station
