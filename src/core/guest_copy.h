// The guest -> host half of `microvm cp` on an agent client, apart from the
// VM lookup (Runtime::copyFrom) so that tests can drive it with a fake agent
// that answers whatever a hostile guest would.
//
//   auto client = agent::AgentClient::viaVsock(runtime_dir / "vsock.sock");
//   MICROVM_TRY(copyFromGuest(client, "/var/log", "./logs"));
//
// The guest's answers (types, modes, names, link targets, sizes) are
// untrusted. The copy stays inside the destination: everything below it is
// reached through directory fds, one checked name at a time, never through a
// symlink. Modes are hostModeFor() of the guest's (no setuid, setgid or
// sticky bit, nothing the caller's umask removes); files are owned by the
// caller; an existing directory keeps its mode and owner. The copy writes at
// most `max_bytes` on the host, counting file data and 512 bytes for each
// entry; past that it stops with a kIo error whose errno is EFBIG, leaving
// what it wrote so far.
#pragma once

#include <cstdint>
#include <string>

#include "agent/client.h"
#include "microvm/result.h"

namespace microvm {

Result<void> copyFromGuest(const agent::AgentClient& client, const std::string& guest_source,
                           const std::string& host_destination, uint64_t max_bytes = UINT64_MAX);

}  // namespace microvm
