// Child processes: spawning with an explicit fd map, and an owning handle
// that kills and reaps the child if it is dropped while still running.
//
//   SpawnOptions options;
//   options.argv = {"qemu-img", "create", ...};
//   options.fds = {{2, log_fd}};            // child fd 2 = log_fd
//   auto child = spawn(options);
//   auto status = child->wait();            // exit status, as from waitpid
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "microvm/result.h"

namespace microvm {

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is looked up on PATH unless it has a '/'
  // Child fds: {child_fd, parent_fd}. Unlisted 0/1/2 go to /dev/null; every
  // other parent fd is closed in the child.
  std::vector<std::pair<int, int>> fds;
  bool new_session = false;      // setsid(): the child outlives our terminal
  bool die_with_parent = false;  // PR_SET_PDEATHSIG(SIGKILL)
  // Run the child as another user (the parent must be root). Between fork
  // and exec the child sets exactly `groups` as its supplementary groups,
  // its real, effective and saved gid and uid, keeps only `capabilities`
  // (a mask of CAP_* bits, raised as ambient capabilities so that they
  // survive exec; every other capability leaves the bounding set too) and
  // sets no_new_privs. Any step that fails fails the spawn.
  struct Credentials {
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
    uint64_t capabilities = 0;
  };
  std::optional<Credentials> credentials;
};

// Gives up, in the calling process, every capability except `keep` (a
// mask of CAP_* bits), for good: bounding set, permitted and effective sets,
// and no_new_privs so that nothing it execs regains them. The uid stays:
// files the process owns stay its own. A no-op for a non-root process.
Result<void> keepOnlyCapabilities(uint64_t keep);

// The two steps of it, for callers that change user in between: the
// bounding set (needs CAP_SETPCAP, so before giving up root), then the
// permitted and effective sets, exactly `keep`.
Result<void> dropBoundingCapabilities(uint64_t keep);
Result<void> setCapabilities(uint64_t keep);

class Process {
 public:
  Process() = default;
  explicit Process(pid_t pid) : pid_(pid) {}
  Process(Process&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();  // SIGKILL + reap if still owned

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // Blocks until the child exits; returns the raw waitpid status.
  Result<int> wait();
  // Returns the status if the child has exited, nullopt if still running.
  Result<std::optional<int>> tryWait();
  // Waits up to `timeout`; nullopt if the child is still running then.
  Result<std::optional<int>> waitFor(std::chrono::milliseconds timeout);
  void kill(int signal);
  // Gives up ownership: the child is no longer killed on destruction.
  pid_t release() { return std::exchange(pid_, -1); }

 private:
  pid_t pid_ = -1;
};

Result<Process> spawn(const SpawnOptions& options);

// Runs a command to completion; fails with its stderr text if it exits
// non-zero. Its stdout is captured into `output` when given, else discarded.
Result<void> runCommand(const std::vector<std::string>& argv, std::string* output = nullptr);

// The start time of a process in clock ticks since boot (/proc/PID/stat field
// 22); with the pid it identifies a process even after the pid is reused.
Result<unsigned long long> processStartTime(pid_t pid);

// "exited with status 3" / "killed by signal 9".
std::string describeWaitStatus(int status);

}  // namespace microvm
