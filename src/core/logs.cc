// Runtime::logs: replays a VM's workload.log (JSON lines, one record per
// output chunk: {"time", "stream", "log"}) or its console.log, with their
// rotated files (base/rotating_file.h), optionally following them until the
// VM exits.
#include <nlohmann/json.hpp>
#include <thread>

#include "base/paths.h"
#include "base/fs.h"
#include "base/rotating_file.h"
#include "microvm/runtime.h"
#include "core/runtime_impl.h"
#include "state/vm_store.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// A line longer than any record the runner writes (at most 16 KiB of
// output, JSON-escaped: kLogRecordBytes in runner.cc) is not one of its
// records: it is dropped rather than buffered without end.
constexpr size_t kMaxLine = size_t{1} << 20;

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
  auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!record.is_object() || !record["log"].is_string()) return;  // a torn or foreign line
  int fd = record.value("stream", "") == "stderr" ? err_fd : out_fd;
  std::string text = record["log"];
  if (options.timestamps) text = record.value("time", "") + " " + text;
  (void)writeAll(fd, text);
}

}  // namespace

Result<void> Runtime::logs(const std::string& reference, const LogOptions& options, int out_fd, int err_fd) {
  auto store = impl_->store();
  if (!store) return std::move(store).error();
  auto record = store->find(reference);
  if (!record) return std::move(record).error();
  fs::path path = options.console ? VmPaths(record->dir).consoleLog() : VmPaths(record->dir).workloadLog();

  // The log and its rotated files, oldest first, a chunk at a time; the
  // reader follows rotations (and a log that does not exist yet).
  RotatedLogReader reader(path);
  reader.seekToLastLines(options.tail);
  std::string pending;
  auto drain = [&] {
    for (auto chunk = reader.read(); !chunk.empty(); chunk = reader.read()) {
      if (options.console) {
        (void)writeAll(out_fd, chunk);  // a byte stream, partial lines included
        continue;
      }
      pending += chunk;
      for (const auto& line : takeLines(pending)) emitRecord(line, options, out_fd, err_fd);
      if (pending.size() > kMaxLine) pending.clear();
    }
  };
  drain();
  if (!options.follow) return success();

  std::string id = record->spec.id;
  for (;;) {
    auto current = store->load(id);
    bool active = current && isActive(*current);
    drain();
    if (!active) {
      drain();  // whatever the runner wrote before it finished
      return success();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace microvm
