// The runtime's logger: levels, fields, a sink or stderr lines in text or
// JSON. Cheap when a level is off: callers build fields only after enabled().
//
//   Logger log(options.log_level, options.log_format, options.log_sink);
//   log.info("boot", {{"vm", id}, {"ms", "812"}});
#pragma once

#include <initializer_list>
#include <string>
#include <utility>

#include "microvm/log.h"

namespace microvm {

class Logger {
 public:
  Logger() = default;
  Logger(LogLevel level, LogFormat format, LogSink sink)
      : level_(level), format_(format), sink_(std::move(sink)) {}

  bool enabled(LogLevel level) const { return level_ != LogLevel::kOff && level >= level_; }
  void log(LogLevel level, std::string message,
           std::initializer_list<std::pair<std::string, std::string>> fields = {}) const;
  void debug(std::string message, std::initializer_list<std::pair<std::string, std::string>> fields = {}) const {
    log(LogLevel::kDebug, std::move(message), fields);
  }
  void info(std::string message, std::initializer_list<std::pair<std::string, std::string>> fields = {}) const {
    log(LogLevel::kInfo, std::move(message), fields);
  }
  void warn(std::string message, std::initializer_list<std::pair<std::string, std::string>> fields = {}) const {
    log(LogLevel::kWarn, std::move(message), fields);
  }

 private:
  LogLevel level_ = LogLevel::kWarn;
  LogFormat format_ = LogFormat::kText;
  LogSink sink_;
};

}  // namespace microvm
