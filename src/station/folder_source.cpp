#include <deque>

#include "station/hot_folder.h"
#include "station/source.h"

namespace gad::station {
namespace {

std::optional<FileStamp> stamp_of(const std::string& path) {
  long long size = 0, mtime = 0;
  if (!stat_file(path, &size, &mtime)) return std::nullopt;
  return FileStamp{path, size, mtime};
}

class FolderSource : public Source {
 public:
  FolderSource(const std::string& dir, bool recursive, const std::set<std::string>& exclude, Outbox& outbox,
               const std::string& line, bool skip_existing)
      : dir_(dir), folder_(dir, recursive, exclude), outbox_(outbox), line_(line) {
    const bool first_start = outbox.open_line(line);
    for (const auto& path : folder_.existing()) {
      if (first_start && skip_existing) {
        if (auto s = stamp_of(path)) outbox.mark_done(line, *s);
      } else {
        queue_.push_back(path);
      }
    }
  }
  std::string describe() const override { return dir_; }
  std::vector<Input> next(size_t max, std::chrono::milliseconds timeout) override {
    for (auto& path : folder_.wait(queue_.empty() ? timeout : std::chrono::milliseconds(0))) queue_.push_back(path);
    std::vector<Input> out;
    std::set<std::string> taken;
    while (!queue_.empty() && out.size() < max) {
      const std::string path = queue_.front();
      queue_.pop_front();
      auto s = stamp_of(path);
      // Gone, offered twice, or already done (a file written again under its name is new).
      if (!s || taken.count(path) || outbox_.is_done(line_, *s)) continue;
      taken.insert(path);
      Input in;
      in.id = path;
      in.file = *s;
      in.arrived = std::chrono::steady_clock::now();
      out.push_back(std::move(in));
    }
    return out;
  }

 private:
  std::string dir_;
  HotFolder folder_;
  Outbox& outbox_;
  std::string line_;
  std::deque<std::string> queue_;
};

}  // namespace

std::unique_ptr<Source> folder_source(const std::string& dir, bool recursive, const std::set<std::string>& exclude,
                                      Outbox& outbox, const std::string& line, bool skip_existing) {
  return std::make_unique<FolderSource>(dir, recursive, exclude, outbox, line, skip_existing);
}

}  // namespace gad::station
