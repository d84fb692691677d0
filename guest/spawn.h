// Starting a command in the guest, shared by init (the workload,
// guest/workload.h) and the agent (exec, guest/agent_exec.cc): a process that
// shares the caller's memory until it execs, and, in that process, Docker's
// exec semantics (user, working directory, environment, the exit codes of a
// failed exec) with the spec's confinement (guest/confinement.h).
//
//   pid_t pid = spawnSharingMemory([&] {
//     resetChildSignals();
//     ...dup2 the stdio...
//     execConfined(spec, console_fd, /*confine=*/true, prepared);
//   });
//   if (pid < 0) return systemError("clone");
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MICROVM_GUEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define MICROVM_GUEST_ASAN 1
#endif
#ifdef MICROVM_GUEST_ASAN
#include <sanitizer/asan_interface.h>
#endif

#include "agent/protocol.h"
#include "guest/confinement.h"

namespace microvm::guest {

// Docker's code for "the command exists but could not be started".
inline constexpr int kCannotRunCode = 126;

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

// Default dispositions and an empty signal mask, for a freshly forked child,
// whatever init inherited or set up for itself.
void resetChildSignals();

// In a forked child whose stdio is already in place: resolves spec.user
// against the root's /etc/passwd and /etc/group, enters (creating it if
// needed) spec.workdir, builds the environment with workloadEnvironment(),
// applies the spec's confinement unless `confine` is false (host unit tests,
// which are not PID 1's children), and execs spec.argv. On failure it writes
// "microvm: WHY" to stderr and exits 126 or 127 (describeExecFailure).
// `console_fd` receives diagnostics (-1: none).
[[noreturn]] void execConfined(const agent::WorkloadSpec& spec, int console_fd, bool confine,
                               const PreparedConfinement* prepared = nullptr);

// Runs `child` in a new process that shares the caller's memory until it
// execs or exits, as posix_spawn does (clone with CLONE_VM | CLONE_VFORK).
// fork() would copy the page tables and turn every page of the caller
// copy-on-write, which under TCG costs more than a small command itself. The
// caller stays suspended until the exec, so the child may use the heap; it
// runs on a stack of its own and must end in exec or _exit (127 if it
// returns). What it changes in shared globals (environ) is put back here.
// -1 and errno if the process could not be made.
template <typename Child>
pid_t spawnSharingMemory(Child child) {
  constexpr size_t kStackSize = size_t{1} << 20;  // only the pages touched are allocated
  void* stack = ::mmap(nullptr, kStackSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return -1;
#ifdef MICROVM_GUEST_ASAN
  // AddressSanitizer builds (the fuzz targets): a previous child that ran at
  // this address ended in exec or _exit with its frames still poisoned in
  // ASan's shadow, which munmap does not clear; the next child would trip on
  // that stale poison.
  __asan_unpoison_memory_region(stack, kStackSize);
#endif
  char** saved_environ = environ;
  auto entry = [](void* argument) -> int {
    (*static_cast<Child*>(argument))();
    ::_exit(127);
  };
  // SAFETY: the stack grows down from its top, which is 16-byte aligned; the
  // child's argument lives on this frame, which outlives it (CLONE_VFORK).
  pid_t pid = ::clone(entry, static_cast<char*>(stack) + kStackSize, CLONE_VM | CLONE_VFORK | SIGCHLD, &child);
  int saved_errno = errno;
  environ = saved_environ;
  ::munmap(stack, kStackSize);
  errno = saved_errno;
  return pid;
}

}  // namespace microvm::guest
