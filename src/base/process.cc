#include "base/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <thread>

#include "base/fs.h"
#include "base/unique_fd.h"

namespace microvm {

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    this->~Process();
    pid_ = std::exchange(other.pid_, -1);
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

Result<int> Process::wait() {
  int status = 0;
  for (;;) {
    if (::waitpid(pid_, &status, 0) >= 0) break;
    if (errno != EINTR) return Error::fromErrno("waitpid " + std::to_string(pid_));
  }
  pid_ = -1;
  return status;
}

Result<std::optional<int>> Process::tryWait() {
  int status = 0;
  pid_t got = ::waitpid(pid_, &status, WNOHANG);
  if (got < 0 && errno != EINTR) return Error::fromErrno("waitpid " + std::to_string(pid_));
  if (got <= 0) return std::optional<int>();
  pid_ = -1;
  return std::optional<int>(status);
}

Result<std::optional<int>> Process::waitFor(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    auto status = tryWait();
    if (!status || status->has_value()) return status;
    if (std::chrono::steady_clock::now() >= deadline) return std::optional<int>();
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
}

void Process::kill(int signal) {
  if (pid_ > 0) ::kill(pid_, signal);
}

namespace {

// What a child reports on its error pipe when it cannot exec: the step that
// failed and its errno.
enum class ChildStep : int { kExec, kGroups, kGid, kUid, kCapabilities, kNoNewPrivs, kParentGone };

const char* describe(ChildStep step) {
  switch (step) {
    case ChildStep::kExec: return "execute";
    case ChildStep::kGroups: return "set supplementary groups for";
    case ChildStep::kGid: return "set the gid of";
    case ChildStep::kUid: return "set the uid of";
    case ChildStep::kCapabilities: return "set the capabilities of";
    case ChildStep::kNoNewPrivs: return "set no_new_privs for";
    case ChildStep::kParentGone: return "start (its parent went away)";
  }
  return "start";
}

struct ChildFailure {
  ChildStep step;
  int error;
};

[[noreturn]] void failChild(int error_pipe, ChildStep step) {
  ChildFailure failure{step, errno};
  ssize_t ignored = ::write(error_pipe, &failure, sizeof failure);
  (void)ignored;
  ::_exit(127);
}

// Becomes `credentials` for good: root's powers are given up in an order
// where each step still has the privilege it needs (the bounding set and
// groups first, the uid last), and only the kept capabilities survive exec.
// Async-signal-safe.
void dropPrivileges(const SpawnOptions::Credentials& credentials, int error_pipe) {
  uint64_t keep = credentials.capabilities;
  if (keep != 0 && ::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) failChild(error_pipe, ChildStep::kCapabilities);
  for (int cap = 0; cap < 64; ++cap) {
    if (keep & (uint64_t{1} << cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
    if (errno == EINVAL) break;  // past the kernel's last capability
    failChild(error_pipe, ChildStep::kCapabilities);
  }
  if (::setgroups(credentials.groups.size(), credentials.groups.data()) != 0) failChild(error_pipe, ChildStep::kGroups);
  if (::setresgid(credentials.gid, credentials.gid, credentials.gid) != 0) failChild(error_pipe, ChildStep::kGid);
  if (::setresuid(credentials.uid, credentials.uid, credentials.uid) != 0) failChild(error_pipe, ChildStep::kUid);
  // The uid change cleared the effective set (and, without KEEPCAPS, the
  // permitted one): what is kept becomes permitted, effective, inheritable
  // and ambient, the last so that an exec of an ordinary binary keeps it.
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  for (int i = 0; i < 2; ++i) {
    auto word = static_cast<uint32_t>(keep >> (32 * i));
    data[i].effective = data[i].permitted = data[i].inheritable = word;
  }
  if (::syscall(SYS_capset, &header, data) != 0) failChild(error_pipe, ChildStep::kCapabilities);
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) failChild(error_pipe, ChildStep::kCapabilities);
  for (int cap = 0; cap < 64; ++cap) {
    if (!(keep & (uint64_t{1} << cap))) continue;
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0) failChild(error_pipe, ChildStep::kCapabilities);
  }
  if (keep != 0 && ::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0) failChild(error_pipe, ChildStep::kCapabilities);
  // Nothing the child runs may gain privileges again (setuid binaries, file
  // capabilities).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) failChild(error_pipe, ChildStep::kNoNewPrivs);
}

}  // namespace

Result<void> dropBoundingCapabilities(uint64_t keep) {
  for (int cap = 0; cap < 64; ++cap) {
    if (keep & (uint64_t{1} << cap)) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == 0) continue;
    if (errno == EINVAL) break;  // past the kernel's last capability
    return Error::fromErrno("drop capability " + std::to_string(cap) + " from the bounding set");
  }
  return success();
}

Result<void> setCapabilities(uint64_t keep) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  for (int i = 0; i < 2; ++i) {
    auto word = static_cast<uint32_t>(keep >> (32 * i));
    data[i].effective = data[i].permitted = word;
  }
  if (::syscall(SYS_capset, &header, data) != 0) return Error::fromErrno("capset");
  return success();
}

Result<void> keepOnlyCapabilities(uint64_t keep) {
  if (::geteuid() != 0) return success();
  MICROVM_TRY(dropBoundingCapabilities(keep));
  MICROVM_TRY(setCapabilities(keep));
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return Error::fromErrno("set no_new_privs");
  return success();
}

namespace {

// Runs in the forked child: only async-signal-safe calls until execvp.
[[noreturn]] void execChild(const SpawnOptions& options, char* const* argv, int error_pipe, pid_t parent) {
  if (options.new_session) ::setsid();
  sigset_t all;
  sigemptyset(&all);
  ::sigprocmask(SIG_SETMASK, &all, nullptr);
  for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);

  // Move every source fd above the highest target first, so that a mapping
  // like {1 -> 2, 2 -> 1} cannot clobber a source before it is read.
  int highest = error_pipe;
  for (auto [target, source] : options.fds) highest = std::max({highest, target, source});
  std::vector<int> sources;  // NOLINT: allocation after fork is fine in a single-threaded parent
  for (auto [target, source] : options.fds) sources.push_back(::fcntl(source, F_DUPFD, highest + 1));
  int null_fd = ::open("/dev/null", O_RDWR);
  for (int std_fd = 0; std_fd < 3; ++std_fd) ::dup2(null_fd, std_fd);
  for (size_t i = 0; i < options.fds.size(); ++i) ::dup2(sources[i], options.fds[i].first);

  // Everything above the mapped fds closes at exec (the error pipe included,
  // which is how the parent learns that exec succeeded).
  int max_target = 2;
  for (auto [target, source] : options.fds) max_target = std::max(max_target, target);
  for (int fd = 3; fd <= max_target; ++fd) {
    bool mapped = false;
    for (auto [target, source] : options.fds) mapped = mapped || fd == target;
    if (!mapped && fd != error_pipe) ::close(fd);
  }
  ::close_range(static_cast<unsigned>(max_target) + 1, ~0U, CLOSE_RANGE_CLOEXEC);
  if (options.credentials) dropPrivileges(*options.credentials, error_pipe);
  // After the credentials: changing them clears the parent-death signal.
  if (options.die_with_parent) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
      errno = ESRCH;
      failChild(error_pipe, ChildStep::kParentGone);
    }
  }
  ::execvp(argv[0], argv);
  failChild(error_pipe, ChildStep::kExec);
}

}  // namespace

Result<Process> spawn(const SpawnOptions& options) {
  if (options.argv.empty()) return Error(ErrorCode::kInvalidArgument, "spawn: empty argv");
  std::vector<char*> argv;
  for (const auto& arg : options.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  // A CLOEXEC pipe reports an exec failure: EOF means exec succeeded.
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Error::fromErrno("pipe");
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);

  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return Error::fromErrno("fork " + options.argv[0]);
  if (pid == 0) execChild(options, argv.data(), write_end.get(), parent);
  Process child(pid);
  write_end.reset();

  ChildFailure failure{};
  ssize_t n;
  do {
    n = ::read(read_end.get(), &failure, sizeof failure);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof failure) {
    (void)child.wait();
    return Error::fromErrno(std::string(describe(failure.step)) + " " + options.argv[0], failure.error);
  }
  return child;
}

Result<void> runCommand(const std::vector<std::string>& argv, std::string* output) {
  // stderr (and stdout when wanted) go to temp files: no risk of a pipe
  // deadlock between the two streams, and the text is small.
  FILE* err_file = ::tmpfile();
  FILE* out_file = output ? ::tmpfile() : nullptr;
  if (!err_file || (output && !out_file)) return Error::fromErrno("tmpfile");
  auto close_files = [&] {
    ::fclose(err_file);
    if (out_file) ::fclose(out_file);
  };
  SpawnOptions options;
  options.argv = argv;
  options.fds = {{2, ::fileno(err_file)}};
  if (out_file) options.fds.push_back({1, ::fileno(out_file)});
  auto child = spawn(options);
  if (!child) {
    close_files();
    return std::move(child).error();
  }
  auto status = child->wait();
  auto slurp = [](FILE* file) {
    std::string text;
    ::rewind(file);
    char buffer[4096];
    size_t n;
    while ((n = ::fread(buffer, 1, sizeof buffer, file)) > 0 && text.size() < 1024 * 1024) text.append(buffer, n);
    return text;
  };
  std::string errors = slurp(err_file);
  if (output) *output = slurp(out_file);
  close_files();
  if (!status) return std::move(status).error();
  if (WIFEXITED(*status) && WEXITSTATUS(*status) == 0) return success();
  while (!errors.empty() && (errors.back() == '\n' || errors.back() == ' ')) errors.pop_back();
  std::string message = argv[0] + " " + describeWaitStatus(*status);
  if (!errors.empty()) message += ": " + errors;
  return Error(ErrorCode::kIo, message);
}

Result<unsigned long long> processStartTime(pid_t pid) {
  auto stat = readFile("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return std::move(stat).error();
  // The command name (field 2) may contain spaces and ')': parse after the last ')'.
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return Error(ErrorCode::kProtocol, "malformed /proc stat");
  const char* cursor = stat->c_str() + close + 2;
  // After ')' come fields 3..; start time is field 22, i.e. the 20th from here.
  for (int field = 3; field < 22; ++field) {
    cursor = std::strchr(cursor, ' ');
    if (!cursor) return Error(ErrorCode::kProtocol, "malformed /proc stat");
    ++cursor;
  }
  return std::strtoull(cursor, nullptr, 10);
}

std::string describeWaitStatus(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped";
}

}  // namespace microvm
