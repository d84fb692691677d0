#include "core/runner_watch.h"

#include <poll.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>

namespace microvm {

namespace {

constexpr std::chrono::milliseconds kFallbackInterval{50};

}  // namespace

RunnerWatch::RunnerWatch(std::filesystem::path vm_dir) : vm_dir_(std::move(vm_dir)) {
  UniqueFd inotify(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (inotify.get() < 0) return;
  // state.json arrives by rename (IN_MOVED_TO); the others cover any writer.
  if (::inotify_add_watch(inotify.get(), vm_dir_.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE | IN_CREATE) < 0) return;
  inotify_ = std::move(inotify);
}

void RunnerWatch::watchProcess(pid_t pid) {
  pid_ = pid;
  // A pidfd becomes readable when the process exits (Linux 5.3+).
  pidfd_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

bool RunnerWatch::exited() const {
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid_;
}

RunnerWatch::Outcome RunnerWatch::wait(const std::function<bool(const VmState&)>& started,
                                       std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (exited()) return kExited;
    auto state = loadState(vm_dir_);
    if (state && state->runner_pid == pid_ && started(*state)) return kStarted;
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return kTimedOut;
    // Rounded up: poll() must not wake before the deadline.
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - now);
    std::array<pollfd, 2> fds{};
    nfds_t count = 0;
    if (inotify_.get() >= 0) fds[count++] = {inotify_.get(), POLLIN, 0};
    if (pidfd_.get() >= 0) fds[count++] = {pidfd_.get(), POLLIN, 0};
    // Without both, something can change unannounced: look again soon.
    if (count < 2) left = std::min(left, kFallbackInterval);
    (void)::poll(fds.data(), count, static_cast<int>(left.count()));
    if (inotify_.get() >= 0) {
      alignas(inotify_event) char events[4096];
      while (::read(inotify_.get(), events, sizeof events) > 0) {
      }
    }
  }
}

}  // namespace microvm
