#include "base/log.h"

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "base/fs.h"

namespace microvm {

const char* toString(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
    case LogLevel::kOff: return "off";
  }
  return "?";
}

bool parseLogLevel(const std::string& text, LogLevel& level) {
  for (LogLevel candidate : {LogLevel::kDebug, LogLevel::kInfo, LogLevel::kWarn, LogLevel::kError, LogLevel::kOff}) {
    if (text == toString(candidate)) {
      level = candidate;
      return true;
    }
  }
  if (text == "warning") {
    level = LogLevel::kWarn;
    return true;
  }
  return false;
}

std::string formatLogRecord(const LogRecord& record, LogFormat format) {
  if (format == LogFormat::kJson) {
    nlohmann::ordered_json line = {{"time", record.time}, {"level", toString(record.level)}, {"msg", record.message}};
    for (const auto& [key, value] : record.fields) line[key] = value;
    // Field values come from anywhere (paths, guest text): never throw on
    // invalid UTF-8, replace it.
    return line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  std::string line = record.time + " " + toString(record.level) + " " + record.message;
  for (const auto& [key, value] : record.fields) {
    bool quote = value.empty() || value.find_first_of(" \t\"=") != std::string::npos;
    line += " " + key + "=" + (quote ? nlohmann::json(value).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) : value);
  }
  return line;
}

void Logger::log(LogLevel level, std::string message,
                 std::initializer_list<std::pair<std::string, std::string>> fields) const {
  if (!enabled(level)) return;
  LogRecord record{level, nowRfc3339(), std::move(message), {fields.begin(), fields.end()}};
  if (sink_) {
    try {
      sink_(record);
    } catch (...) {
      // An embedder's sink that throws loses its record, not the caller's work.
    }
    return;
  }
  (void)writeAll(STDERR_FILENO, formatLogRecord(record, format_) + "\n");
}

}  // namespace microvm
