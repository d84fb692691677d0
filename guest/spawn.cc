#include "guest/spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <utility>

#include "base/eintr.h"
#include "guest/support.h"
#include "guest/users.h"

namespace microvm::guest {
namespace {

// In the child, after stderr became the command's stderr: the message reaches
// the host as the command's own stderr, as Docker shows it.
[[noreturn]] void failProcess(std::string_view message, int exit_code) {
  writeFully(STDERR_FILENO, "microvm: " + std::string(message) + "\n");
  ::_exit(exit_code);
}

// Docker creates a missing working directory rather than failing.
Result<void> enterWorkdir(const std::string& workdir) {
  if (auto made = makeDirectories(workdir, 0755); !made.ok()) return made;
  if (::chdir(workdir.c_str()) != 0) return systemError("chdir " + workdir);
  return {};
}

std::vector<char*> cStringArray(std::vector<std::string>& strings) {
  std::vector<char*> array;
  array.reserve(strings.size() + 1);
  for (auto& string : strings) array.push_back(string.data());
  array.push_back(nullptr);
  return array;
}

}  // namespace

void resetChildSignals() {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  // SIGKILL, SIGSTOP and glibc's internal signals refuse; that is fine.
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &default_action, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

void execConfined(const agent::WorkloadSpec& spec, int console_fd, bool confine, const PreparedConfinement* prepared) {
  auto passwd = readFileIfExists("/etc/passwd");
  if (!passwd.ok()) failProcess(passwd.error().message(), kCannotRunCode);
  auto group = readFileIfExists("/etc/group");
  if (!group.ok()) failProcess(group.error().message(), kCannotRunCode);
  auto user = resolveUser(spec.user, *passwd, *group);
  if (!user.ok()) failProcess(user.error().message(), kCannotRunCode);
  if (auto entered = enterWorkdir(spec.workdir); !entered.ok()) failProcess(entered.error().message(), kCannotRunCode);

  // Everything execvp needs is ready before the seccomp filter is loaded.
  std::vector<std::string> env = workloadEnvironment(spec.env, spec.hostname, user->home);
  std::vector<std::string> argv = spec.argv;
  std::vector<char*> envp = cStringArray(env);
  std::vector<char*> argp = cStringArray(argv);
  std::optional<PreparedConfinement> own;
  if (confine && prepared == nullptr) {
    auto made = prepareConfinement(spec, console_fd);
    if (!made.ok()) failProcess(made.error().message(), kCannotRunCode);
    own = std::move(*made);
    prepared = &*own;
  }
  if (confine) {
    if (auto confined = confineProcess(spec, *user, *prepared); !confined.ok()) {
      failProcess(confined.error().message(), kCannotRunCode);
    }
  }
  // execvp searches the PATH of `environ`: pointing it at the workload's
  // environment makes the search use the workload's PATH, as Docker does.
  environ = envp.data();
  ::execvp(argp[0], argp.data());
  ExecFailure failure = describeExecFailure(spec.argv[0], errno);
  failProcess(failure.message, failure.exit_code);
}

std::vector<std::string> workloadEnvironment(const std::vector<std::string>& env, std::string_view hostname,
                                             std::string_view home) {
  std::vector<std::string> result;
  auto key_of = [](std::string_view variable) { return variable.substr(0, variable.find('=')); };
  auto find_key = [&](std::string_view key) {
    return std::find_if(result.begin(), result.end(),
                        [&](const std::string& variable) { return key_of(variable) == key; });
  };
  for (const std::string& variable : env) {
    if (auto existing = find_key(key_of(variable)); existing != result.end()) {
      *existing = variable;
    } else {
      result.push_back(variable);
    }
  }
  auto add_default = [&](std::string_view key, std::string_view value) {
    if (find_key(key) == result.end()) result.push_back(std::string(key) + "=" + std::string(value));
  };
  add_default("PATH", kDefaultPath);
  if (!hostname.empty()) add_default("HOSTNAME", hostname);
  add_default("HOME", home);
  return result;
}

ExecFailure describeExecFailure(std::string_view argv0, int error_number) {
  std::string prefix = "exec \"" + std::string(argv0) + "\": ";
  if (error_number == ENOENT) {
    bool is_path = argv0.find('/') != std::string_view::npos;
    return {prefix + (is_path ? "no such file or directory" : "executable file not found in $PATH"), 127};
  }
  return {prefix + describeErrno(error_number), kCannotRunCode};
}

int exitCodeFromWaitStatus(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

}  // namespace microvm::guest
