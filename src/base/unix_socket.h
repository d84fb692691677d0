// Unix stream sockets, the one way the host side makes and reaches them:
// listeners replace a stale socket file and are owner-only; a path too long
// for sockaddr_un is an error, never silently cut short.
//
//   auto listener = listenUnix(dir / "runner.sock", 16, SOCK_NONBLOCK);
//   auto stream = connectUnix(dir / "runner.sock");
//   if (!stream && stream.error().sysErrno() == ECONNREFUSED) ...  // nobody listens
#pragma once

#include <sys/socket.h>

#include <filesystem>
#include <span>
#include <string_view>
#include <vector>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

// A SOCK_STREAM listener at `path` (mode 0600), close-on-exec, with
// `extra_type_flags` (e.g. SOCK_NONBLOCK) added to the socket type.
Result<UniqueFd> listenUnix(const std::filesystem::path& path, int backlog, int extra_type_flags = 0);

// A close-on-exec SOCK_STREAM connection to the listener at `path`, with
// `extra_type_flags` added to the socket type. A failed connect is an
// Error whose sysErrno() is connect's errno (ENOENT, ECONNREFUSED, EAGAIN
// for a full backlog).
Result<UniqueFd> connectUnix(const std::filesystem::path& path, int extra_type_flags = 0);

// The most descriptors sendWithFds attaches to one message.
inline constexpr size_t kMaxSentFds = 8;

// Sends `bytes` on `socket` with `fds` (at most kMaxSentFds) attached as
// SCM_RIGHTS, in one sendmsg retried on EINTR, with `flags` (MSG_NOSIGNAL
// always added). Returns the bytes sent, which may be fewer than given.
Result<size_t> sendWithFds(int socket, std::string_view bytes, std::span<const int> fds, int flags = 0);

// Takes ownership of every descriptor the SCM_RIGHTS messages in a received
// `message` carry (ignoring other control messages), appending them to `out`.
void takeReceivedFds(const msghdr& message, std::vector<UniqueFd>& out);

}  // namespace microvm
