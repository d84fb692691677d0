#include "runner/runner_log.h"

#include <algorithm>

#include "base/clock.h"

namespace microvm {

namespace {

constexpr std::string_view kCutMark = " [cut]";

}  // namespace

std::string boundedLogLine(std::string_view message) {
  bool cut = message.size() > RunnerLog::kMaxLine;
  if (cut) message = message.substr(0, RunnerLog::kMaxLine - kCutMark.size());
  std::string line(message);
  for (char& c : line) {
    auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\t') || byte == 0x7f) c = '?';
  }
  if (cut) line += kCutMark;
  return line;
}

Result<RunnerLog> RunnerLog::open(std::filesystem::path path, RotationPolicy policy) {
  auto file = RotatingFile::open(std::move(path), policy);
  if (!file) return std::move(file).error();
  return RunnerLog(std::move(*file));
}

void RunnerLog::write(std::string_view message) {
  std::string line = boundedLogLine(message);
  (void)file_.write(nowRfc3339() + " " + line + "\n");
  recent_.push_back(std::move(line));
  if (recent_.size() > kRecentLines) recent_.pop_front();
}

void RunnerLog::feedVmm(std::string_view bytes) {
  while (!bytes.empty()) {
    size_t newline = bytes.find('\n');
    size_t room = kMaxLine - vmm_partial_.size();
    size_t take = std::min(newline == std::string_view::npos ? bytes.size() : newline, room);
    vmm_partial_.append(bytes.substr(0, take));
    bytes.remove_prefix(take);
    bool ended = !bytes.empty() && bytes.front() == '\n';
    if (ended) bytes.remove_prefix(1);
    // A line at the limit is written as it is; its rest starts the next one.
    if (ended || vmm_partial_.size() >= kMaxLine) flushVmm();
  }
}

void RunnerLog::flushVmm() {
  if (vmm_partial_.empty()) return;
  last_vmm_line_ = boundedLogLine(vmm_partial_);
  write("qemu: " + vmm_partial_);
  vmm_partial_.clear();
}

std::string RunnerLog::recent() const {
  std::string text;
  for (const auto& line : recent_) text += (text.empty() ? "" : "\n") + line;
  return text;
}

}  // namespace microvm
