// OCI hooks on the host (hooks.h).
#include "oci/hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <thread>

#include <nlohmann/json.hpp>

namespace microvm::oci {
namespace {

using json = nlohmann::json;

Error invalidHook(const std::string& field, const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, "config.json: hooks." + field + ": " + why);
}

Result<std::vector<std::string>> strings(const json& value, const std::string& field) {
  if (!value.is_array() || value.size() > 4096) return invalidHook(field, "must be an array of strings");
  std::vector<std::string> out;
  for (const auto& item : value) {
    if (!item.is_string()) return invalidHook(field, "must be an array of strings");
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<void> runHook(const Hook& hook, const std::string& stage, const std::string& state_json) {
  int input[2];
  if (::pipe2(input, O_CLOEXEC) != 0) return Error::fromErrno("pipe");
  std::vector<std::string> args = hook.args.empty() ? std::vector<std::string>{hook.path} : hook.args;
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<std::string> env = hook.env;
  std::vector<char*> envp;
  for (auto& entry : env) envp.push_back(entry.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return Error::fromErrno("fork");
  if (pid == 0) {
    ::dup2(input[0], STDIN_FILENO);
    int null_fd = ::open("/dev/null", O_WRONLY);
    ::dup2(null_fd, STDOUT_FILENO);  // stdio of the runtime is the container's
    ::dup2(null_fd, STDERR_FILENO);
    ::execve(hook.path.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(input[0]);
  ::signal(SIGPIPE, SIG_IGN);
  size_t written = 0;
  while (written < state_json.size()) {
    ssize_t n = ::write(input[1], state_json.data() + written, state_json.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the hook does not read its stdin: its business
    written += static_cast<size_t>(n);
  }
  ::close(input[1]);
  int timeout = hook.timeout_seconds > 0 ? hook.timeout_seconds : 300;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
  int status = 0;
  while (true) {
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) return Error::fromErrno("wait for hook " + hook.path);
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Error(ErrorCode::kTimeout, stage + " hook " + hook.path + ": timed out after " +
                                            std::to_string(timeout) + " s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return success();
  std::string how = WIFEXITED(status) ? "exited with " + std::to_string(WEXITSTATUS(status))
                                      : "killed by signal " + std::to_string(WTERMSIG(status));
  return Error(ErrorCode::kInternal, stage + " hook " + hook.path + ": " + how);
}

}  // namespace

Result<Hooks> parseHooks(const std::string& hooks_json, std::vector<std::string>& refused) {
  json doc = json::parse(hooks_json, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return invalidHook("", "must be an object");
  Hooks hooks;
  for (const auto& [stage, list] : doc.items()) {
    if (!list.is_array() || list.size() > 256) return invalidHook(stage, "must be an array of at most 256 hooks");
    if (list.empty()) continue;
    if (stage == "createContainer" || stage == "startContainer") {
      refused.push_back(stage);
      continue;
    }
    if (stage != "prestart" && stage != "createRuntime" && stage != "poststart" && stage != "poststop") {
      return invalidHook(stage, "unknown stage");
    }
    for (size_t i = 0; i < list.size(); ++i) {
      const json& entry = list[i];
      std::string field = stage + "[" + std::to_string(i) + "]";
      if (!entry.is_object() || !entry.contains("path") || !entry["path"].is_string()) {
        return invalidHook(field, "needs a path");
      }
      Hook hook;
      hook.path = entry["path"].get<std::string>();
      if (hook.path.empty() || hook.path[0] != '/') return invalidHook(field + ".path", "must be absolute");
      if (entry.contains("args")) {
        auto args = strings(entry["args"], field + ".args");
        if (!args) return std::move(args).error();
        hook.args = std::move(*args);
      }
      if (entry.contains("env")) {
        auto env = strings(entry["env"], field + ".env");
        if (!env) return std::move(env).error();
        hook.env = std::move(*env);
      }
      if (entry.contains("timeout")) {
        if (!entry["timeout"].is_number_integer() || entry["timeout"].get<int64_t>() < 1 ||
            entry["timeout"].get<int64_t>() > 86400) {
          return invalidHook(field + ".timeout", "must be 1 to 86400 seconds");
        }
        hook.timeout_seconds = static_cast<int>(entry["timeout"].get<int64_t>());
      }
      hooks[stage].push_back(std::move(hook));
    }
  }
  return hooks;
}

std::string hooksJson(const Hooks& hooks) {
  json doc = json::object();
  for (const auto& [stage, list] : hooks) {
    for (const auto& hook : list) {
      json entry = {{"path", hook.path}, {"args", hook.args}, {"env", hook.env}};
      if (hook.timeout_seconds > 0) entry["timeout"] = hook.timeout_seconds;
      doc[stage].push_back(entry);
    }
  }
  return doc.dump();
}

Result<void> runHooks(const Hooks& hooks, const std::string& stage, const std::string& state_json) {
  auto found = hooks.find(stage);
  if (found == hooks.end()) return success();
  for (const auto& hook : found->second) MICROVM_TRY(runHook(hook, stage, state_json));
  return success();
}

}  // namespace microvm::oci
