// A boot template's guest memory, shared by the VMs restored from it.
//
// Each such VM maps the template's RAM private (copy-on-write): the pages
// none of them has written are one copy in the host's memory, however many
// VMs run. QEMU 7.2 opens its memory file read-write, so the RAM cannot be
// a plain file: it is a memfd sealed against writes, resizing and further
// sealing, which a hostile VMM can map but never change.
//
// The memfd is held by a small process, the holder (the runner binary with
// --template-memory), that the first VM's runner starts. It hands the memfd
// to each runner that connects to its abstract unix socket, named after
// the template's memory file, and exits once no VM has been connected for
// a few seconds. A runner checks that the holder runs as its own user and
// that the memfd carries the seals and size it expects; if anything is off,
// it loads a private copy instead (the caller's fallback).
//
//   auto memory = TemplateMemory::attach(TemplatePaths::ram(dir), size);
//   if (memory) config.memory_fd = memory->fd(), config.memory_private = true;
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

class TemplateMemory {
 public:
  // The shared memory of the template whose RAM file is `ram_file`, whose
  // size must be `size`. Starts a holder if none serves it yet.
  static Result<TemplateMemory> attach(const std::filesystem::path& ram_file, uint64_t size);

  int fd() const { return memory_.get(); }

 private:
  TemplateMemory(UniqueFd memory, UniqueFd holder) : memory_(std::move(memory)), holder_(std::move(holder)) {}

  UniqueFd memory_;
  UniqueFd holder_;  // open while this VM runs: the holder stays while any is
};

// The abstract socket name a holder of `ram_file` (of `size` bytes) serves:
// after the file's identity, so a template rebuilt in place gets a new one.
Result<std::string> templateMemorySocketName(const std::filesystem::path& ram_file, uint64_t size);

// The holder's main: `ram_fd` is the template's RAM file, read into a
// sealed memfd of `size` bytes, then served at the abstract socket `name`.
// Reports "ready" (or why not) on `report_fd` and closes it. Returns the
// exit status.
int serveTemplateMemory(const std::string& name, uint64_t size, int ram_fd, int report_fd);

// The holder's argv flag (microvm-runner --template-memory NAME SIZE) and
// the fds it is started with.
inline constexpr const char* kTemplateMemoryFlag = "--template-memory";
inline constexpr int kTemplateMemoryRamFd = 3;
inline constexpr int kTemplateMemoryReportFd = 4;

// The seals a template's memfd must carry.
inline constexpr int kTemplateMemorySeals = 0x0001 /*F_SEAL_SEAL*/ | 0x0002 /*F_SEAL_SHRINK*/ |
                                            0x0004 /*F_SEAL_GROW*/ | 0x0008 /*F_SEAL_WRITE*/;

}  // namespace microvm
