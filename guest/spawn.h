// Starting a process in the guest without fork()'s copying, shared by init
// (the workload) and the agent (exec):
//
//   pid_t pid = spawnSharingMemory([&] { execWorkload(spec, ...); });
//   if (pid < 0) return systemError("clone");
#pragma once

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

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

namespace microvm::guest {

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
