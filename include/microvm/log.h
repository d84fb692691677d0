// Structured logs of the runtime's steps (pull, prepare, boot, ready, stop).
// An embedder sets a level and either a sink or a format for stderr:
//   options.log_level = microvm::LogLevel::kInfo;
//   options.log_sink = [](const microvm::LogRecord& r) { myLogger(r.message); };
// Text lines read "2026-11-22T10:00:00Z info boot vm=ab12 ms=812"; JSON lines
// are one object per record: {"time":..,"level":..,"msg":..,"vm":..,"ms":..}.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace microvm {

enum class LogLevel { kDebug, kInfo, kWarn, kError, kOff };
enum class LogFormat { kText, kJson };

struct LogRecord {
  LogLevel level = LogLevel::kInfo;
  std::string time;     // RFC 3339, UTC
  std::string message;  // one line
  std::vector<std::pair<std::string, std::string>> fields;  // vm, step, ms, ...
};
using LogSink = std::function<void(const LogRecord& record)>;

const char* toString(LogLevel level);
// "debug", "info", "warn" (or "warning"), "error", "off"; false if unknown.
bool parseLogLevel(const std::string& text, LogLevel& level);
// One line, without the newline, in `format`.
std::string formatLogRecord(const LogRecord& record, LogFormat format);

}  // namespace microvm
