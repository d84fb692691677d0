// microvm-init: the guest's PID 1. It mounts the VM's root disk, talks to the
// host over the virtio-serial control port (agent/protocol.h), runs one
// workload with Docker's process semantics, forwards its output and exit code,
// and powers the VM off. It never returns and never exits.
//
// Usage (guest/init_main.cc):
//   int main() { microvm::guest::runInit(); }
//
// The decisions about how the workload is launched (which user, which
// environment, what a failed exec reports) depend on no OS state. They are
// declared here so that they can be unit-tested on the host without a VM.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace microvm::guest {

// Boots the guest and runs the workload the host sends. As PID 1 it ends by
// resetting the VM (the host runs QEMU with -no-reboot, so a reset is a power
// off). Run as any other PID it refuses and exits, so that a stray invocation
// on a developer's machine cannot remount /dev or reboot the host.
[[noreturn]] void runInit();

// A failure the environment or the host can cause. The message says what
// failed, on what, and why: "mount /dev/vda on /mnt/root: no such device".
struct Error {
  std::string message;
};

// A value or an Error. Init's failures are either reported to the host (then
// the VM powers off) or logged; nothing here throws across a boundary.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::in_place_index<0>, std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : state_(std::in_place_index<1>, std::move(error)) {}  // NOLINT: implicit by design

  bool ok() const { return state_.index() == 0; }
  T& value() { return std::get<0>(state_); }
  const T& value() const { return std::get<0>(state_); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(state_); }

 private:
  std::variant<T, Error> state_;
};

struct Ok {};
using Status = Result<Ok>;

// Who the workload runs as.
struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> supplementary_groups;
  std::string home = "/";
};

// Resolves a Docker user spec ("", "uid", "uid:gid", "name", "name:group", or
// mixes) against the text of the root's /etc/passwd and /etc/group (pass ""
// for a missing file), with runc's rules:
//   - empty means uid 0;
//   - a numeric uid need not exist in passwd (then gid 0 and HOME "/");
//   - without an explicit group, the gid is the passwd entry's, and the
//     supplementary groups are the groups that list the user as a member;
//   - with one, that group (by name or number) is the only group.
// An unknown name fails with Docker's wording:
//   "unable to find user NAME: no matching entries in passwd file".
Result<ExecUser> resolveUser(std::string_view user, std::string_view passwd, std::string_view group);

// The workload's environment: `env` ("KEY=VALUE"; a repeated key keeps its
// last value) plus what Docker adds when absent: PATH, HOSTNAME (if
// `hostname` is not empty) and HOME.
std::vector<std::string> workloadEnvironment(const std::vector<std::string>& env, std::string_view hostname,
                                             std::string_view home);

inline constexpr char kDefaultPath[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// What the workload's stderr shows, and the exit code, when execvp(argv0)
// fails with `error_number`. Docker's codes: 127 when the program does not
// exist, 126 when it exists but cannot be run.
struct ExecFailure {
  std::string message;  // without the "microvm: " prefix or a newline
  int exit_code;
};
ExecFailure describeExecFailure(std::string_view argv0, int error_number);

// The shell's convention for a waitpid() status: the exit status, or 128+N
// for a process killed by signal N.
int exitCodeFromWaitStatus(int status);

}  // namespace microvm::guest
