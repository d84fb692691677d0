#include "cli_common.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>

namespace microvm::cli {

int fail(const std::string& message) {
  std::fprintf(stderr, "microvm: %s\n", message.c_str());
  return kExitCliError;
}

int fail(const Error& error) { return fail(error.message()); }

Result<Runtime> openRuntime(const GlobalFlags& flags) {
  RuntimeOptions options;
  if (!parseLogLevel(flags.log_level, options.log_level)) {
    return Error(ErrorCode::kInvalidArgument, "unknown log level \"" + flags.log_level + "\" (debug, info, warn, error, off)");
  }
  options.log_format = flags.log_format == "json" ? LogFormat::kJson : LogFormat::kText;
  options.data_dir = flags.data_dir;
  options.accel = flags.accel;
  options.insecure_registries = flags.insecure_registries;
  options.progress = ::isatty(STDERR_FILENO) != 0;  // progress on a terminal, quiet otherwise
  options.pull_timeout = std::chrono::seconds(flags.pull_timeout);
  options.pull_stall_timeout = std::chrono::seconds(flags.pull_stall_timeout);
  return Runtime::open(options);
}

void addPullFlags(CLI::App& command, GlobalFlags& flags) {
  command.add_option("--pull-timeout", flags.pull_timeout,
                     "Seconds a pull from a registry may take in all, retries included (default 3600)")
      ->check(CLI::Range(1, 7 * 24 * 3600));
  command.add_option("--pull-stall-timeout", flags.pull_stall_timeout,
                     "Seconds without a byte from the registry before a request is dropped and retried (default 60)")
      ->check(CLI::Range(1, 24 * 3600));
}

int Commands::runParsed() const {
  for (const auto& [command, action] : actions_) {
    if (command->parsed()) return action();
  }
  return 0;
}

std::vector<std::string> expandEnv(const std::vector<std::string>& entries) {
  std::vector<std::string> env;
  for (const auto& entry : entries) {
    if (entry.find('=') != std::string::npos) {
      env.push_back(entry);
    } else if (const char* value = std::getenv(entry.c_str())) {
      env.push_back(entry + "=" + value);
    }
  }
  return env;
}

time_t parseTime(const std::string& text) {
  tm parts{};
  if (!strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &parts)) return 0;
  return timegm(&parts);
}

std::string duration(time_t seconds) {
  if (seconds < 1) return "Less than a second";
  auto plural = [](long long n, const char* unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s");
  };
  if (seconds < 60) return plural(seconds, "second");
  if (seconds < 3600) return plural(seconds / 60, "minute");
  if (seconds < 86400) return plural(seconds / 3600, "hour");
  return plural(seconds / 86400, "day");
}

std::string ago(const std::string& when) {
  time_t then = parseTime(when);
  return then == 0 ? "" : duration(::time(nullptr) - then) + " ago";
}

nlohmann::json toJson(const VmInfo& vm) { return nlohmann::json::parse(inspectJson(vm)); }

}  // namespace microvm::cli
