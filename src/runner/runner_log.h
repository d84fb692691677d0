// runner.log, bounded. The runner records there what happens to its VM, and
// much of that is driven by the guest: its error frames, egress decisions
// (--egress-log), QEMU's own complaints about a device the guest misdrives.
// A hostile guest must not fill the host's disk through it, nor forge lines:
//   - the file rotates under the VM's log policy (--log-opt), as workload.log
//     does, so it never takes more than max_files × max_size bytes;
//   - a line is cut at kMaxLine bytes, and control characters in it show as
//     '?';
//   - QEMU's stderr reaches it through a pipe that the runner reads
//     (feedVmm), split into lines, never as a file QEMU writes itself.
// The last few lines stay in memory, for the message of a VM that failed.
//
//   auto log = RunnerLog::open(dir / "runner.log", {20 << 20, 5});
//   log->write("started QEMU pid 42 (tcg)");
//   log->feedVmm(bytes_from_qemu_stderr);   // "qemu: ..." lines
#pragma once

#include <cstddef>
#include <deque>
#include <filesystem>
#include <string>
#include <string_view>

#include "base/rotating_file.h"
#include "microvm/result.h"

namespace microvm {

class RunnerLog {
 public:
  static constexpr size_t kMaxLine = 4096;
  static constexpr size_t kRecentLines = 3;

  // Appends to PATH (runner.log goes on across starts of the VM).
  static Result<RunnerLog> open(std::filesystem::path path, RotationPolicy policy);

  // One line, timestamped. A failed write is not the VM's failure.
  void write(std::string_view message);
  // Bytes of QEMU's stderr: each complete line is written as "qemu: LINE";
  // a partial line waits for its end, up to kMaxLine bytes.
  void feedVmm(std::string_view bytes);
  // Writes a partial line feedVmm still holds (QEMU is gone).
  void flushVmm();
  // The last kRecentLines lines written, without timestamps, one per line.
  std::string recent() const;
  // The last line QEMU wrote (bounded as any line), without "qemu: ".
  const std::string& lastVmmLine() const { return last_vmm_line_; }

  RotatingFile& file() { return file_; }

 private:
  explicit RunnerLog(RotatingFile file) : file_(std::move(file)) {}

  RotatingFile file_;
  std::deque<std::string> recent_;
  std::string vmm_partial_;
  std::string last_vmm_line_;
};

// `message` as one log line: at most RunnerLog::kMaxLine bytes (marked when
// cut), control characters but tab replaced by '?'.
std::string boundedLogLine(std::string_view message);

}  // namespace microvm
