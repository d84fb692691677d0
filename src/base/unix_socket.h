// Listening unix sockets, the one way the runner and the QEMU backend make
// them: stale socket files replaced, owner-only.
//
//   auto listener = listenUnix(dir / "runner.sock", 16, SOCK_NONBLOCK);
#pragma once

#include <filesystem>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

// A SOCK_STREAM listener at `path` (mode 0600), close-on-exec, with
// `extra_type_flags` (e.g. SOCK_NONBLOCK) added to the socket type.
Result<UniqueFd> listenUnix(const std::filesystem::path& path, int backlog, int extra_type_flags = 0);

}  // namespace microvm
