#include "base/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace microvm {
namespace {

Result<sockaddr_un> unixAddress(const std::filesystem::path& path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.native().size() >= sizeof address.sun_path) {
    return Error(ErrorCode::kInvalidArgument, "socket path too long for a unix socket: " + path.string());
  }
  std::memcpy(address.sun_path, path.c_str(), path.native().size() + 1);
  return address;
}

}  // namespace

Result<size_t> sendWithFds(int socket, std::string_view bytes, std::span<const int> fds, int flags) {
  if (fds.size() > kMaxSentFds) return Error(ErrorCode::kInvalidArgument, "too many descriptors for one message");
  iovec io{const_cast<char*>(bytes.data()), bytes.size()};
  msghdr header{};
  header.msg_iov = &io;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxSentFds)] = {};
  if (!fds.empty()) {
    header.msg_control = control;
    header.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent;
  do {
    sent = ::sendmsg(socket, &header, flags | MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return Error::fromErrno("sendmsg");
  return static_cast<size_t>(sent);
}

Result<UniqueFd> listenUnix(const std::filesystem::path& path, int backlog, int extra_type_flags) {
  auto address = unixAddress(path);
  if (!address) return std::move(address).error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra_type_flags, 0));
  if (!fd.valid()) return Error::fromErrno("socket");
  ::unlink(path.c_str());
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX; bind reads sizeof(sockaddr_un) bytes.
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) != 0) {
    return Error::fromErrno("bind " + path.string());
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), backlog) != 0) return Error::fromErrno("listen " + path.string());
  return fd;
}

Result<UniqueFd> connectUnix(const std::filesystem::path& path, int extra_type_flags) {
  auto address = unixAddress(path);
  if (!address) return std::move(address).error();
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra_type_flags, 0));
  if (!fd.valid()) return Error::fromErrno("socket");
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX; connect reads sizeof(sockaddr_un) bytes.
  while (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof(sockaddr_un)) != 0) {
    if (errno != EINTR) return Error::fromErrno("connect " + path.string());
  }
  return fd;
}

void takeReceivedFds(const msghdr& message, std::vector<UniqueFd>& out) {
  // CMSG_NXTHDR takes a non-const header but only reads it.
  auto* header = const_cast<msghdr*>(&message);
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(header); cmsg != nullptr; cmsg = CMSG_NXTHDR(header, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      // SAFETY: the kernel wrote `count` ints after the header; memcpy since
      // CMSG_DATA need not be aligned for int.
      std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof fd);
      out.emplace_back(fd);
    }
  }
}

}  // namespace microvm
