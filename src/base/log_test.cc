#include "base/log.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace microvm {
namespace {

TEST(Log, TextAndJsonLines) {
  LogRecord record{LogLevel::kInfo, "2026-11-22T10:00:00Z", "boot", {{"vm", "ab12"}, {"error", "a \"b\" c"}}};
  EXPECT_EQ(formatLogRecord(record, LogFormat::kText),
            "2026-11-22T10:00:00Z info boot vm=ab12 error=\"a \\\"b\\\" c\"");
  auto json = nlohmann::json::parse(formatLogRecord(record, LogFormat::kJson));
  EXPECT_EQ(json["level"], "info");
  EXPECT_EQ(json["msg"], "boot");
  EXPECT_EQ(json["vm"], "ab12");
  EXPECT_EQ(json["error"], "a \"b\" c");
  // Invalid UTF-8 from a guest or a path does not throw.
  record.fields = {{"bytes", "\xff\xfe"}};
  EXPECT_NO_THROW(nlohmann::json::parse(formatLogRecord(record, LogFormat::kJson)));
}

TEST(Log, LevelsFilterAndSinkExceptionsStayInside) {
  LogLevel level = LogLevel::kWarn;
  EXPECT_TRUE(parseLogLevel("debug", level));
  EXPECT_EQ(level, LogLevel::kDebug);
  EXPECT_TRUE(parseLogLevel("warning", level));
  EXPECT_EQ(level, LogLevel::kWarn);
  EXPECT_FALSE(parseLogLevel("loud", level));
  std::vector<std::string> seen;
  Logger logger(LogLevel::kInfo, LogFormat::kText, [&](const LogRecord& r) { seen.push_back(r.message); });
  logger.debug("hidden");
  logger.info("shown");
  logger.warn("also");
  EXPECT_EQ(seen, (std::vector<std::string>{"shown", "also"}));
  Logger throwing(LogLevel::kDebug, LogFormat::kText, [](const LogRecord&) { throw std::runtime_error("sink"); });
  EXPECT_NO_THROW(throwing.info("x"));
  Logger off(LogLevel::kOff, LogFormat::kText, [&](const LogRecord& r) { seen.push_back(r.message); });
  off.warn("never");
  EXPECT_EQ(seen.size(), 2u);
}

}  // namespace
}  // namespace microvm
