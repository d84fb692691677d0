// Runtime::logs: replays a VM's workload.log (JSON lines, one record per
// output chunk: {"time", "stream", "log"}) or its console.log, optionally
// following it until the VM exits.
#include <fcntl.h>
#include <unistd.h>

#include <deque>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/fs.h"
#include "base/unique_fd.h"
#include "microvm/runtime.h"
#include "state/vm_store.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// Reads what has been appended to a file since the last call.
class FileFollower {
 public:
  explicit FileFollower(const fs::path& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  bool valid() const { return fd_.valid(); }
  std::string readMore() {
    std::string data;
    char buffer[65536];
    for (;;) {
      ssize_t n = ::read(fd_.get(), buffer, sizeof buffer);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      data.append(buffer, static_cast<size_t>(n));
    }
    return data;
  }

 private:
  UniqueFd fd_;
};

// Splits complete lines off `pending`, leaving a partial last line there.
std::vector<std::string> takeLines(std::string& pending) {
  std::vector<std::string> lines;
  size_t start = 0;
  for (size_t newline; (newline = pending.find('\n', start)) != std::string::npos; start = newline + 1) {
    lines.push_back(pending.substr(start, newline - start));
  }
  pending.erase(0, start);
  return lines;
}

void emitRecord(const std::string& line, const LogOptions& options, int out_fd, int err_fd) {
  if (options.console) {
    (void)writeAll(out_fd, line + "\n");
    return;
  }
  auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record["log"].is_string()) return;  // a torn or foreign line
  int fd = record.value("stream", "") == "stderr" ? err_fd : out_fd;
  std::string text = record["log"];
  if (options.timestamps) text = record.value("time", "") + " " + text;
  (void)writeAll(fd, text);
}

}  // namespace

Result<void> Runtime::logs(const std::string& reference, const LogOptions& options, int out_fd, int err_fd) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  auto record = store.find(reference);
  if (!record) return std::move(record).error();
  fs::path path = record->dir / (options.console ? "console.log" : "workload.log");

  // The file may not exist yet if the VM has not booted.
  std::optional<FileFollower> follower;
  std::string pending;
  std::deque<std::string> first;  // the initial lines, trimmed to the tail
  auto drain = [&](bool initial) {
    if (!follower) {
      follower.emplace(path);
      if (!follower->valid()) {
        follower.reset();
        return;
      }
    }
    pending += follower->readMore();
    for (auto& line : takeLines(pending)) {
      if (!initial) {
        emitRecord(line, options, out_fd, err_fd);
        continue;
      }
      first.push_back(std::move(line));
      if (options.tail >= 0 && first.size() > static_cast<size_t>(options.tail)) first.pop_front();
    }
  };
  drain(/*initial=*/true);
  for (const auto& line : first) emitRecord(line, options, out_fd, err_fd);
  if (!options.follow) return success();

  std::string id = record->spec.id;
  for (;;) {
    auto current = store.load(id);
    bool active = current && (current->state.status == VmStatus::kRunning ||
                              current->state.status == VmStatus::kPaused);
    drain(/*initial=*/false);
    if (!active) {
      drain(/*initial=*/false);  // whatever the runner wrote before it finished
      return success();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace microvm
