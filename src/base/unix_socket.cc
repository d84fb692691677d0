#include "base/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>

namespace microvm {

Result<UniqueFd> listenUnix(const std::filesystem::path& path, int backlog, int extra_type_flags) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | extra_type_flags, 0));
  if (!fd.valid()) return Error::fromErrno("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  ::unlink(path.c_str());
  // SAFETY: sockaddr_un is the sockaddr variant for AF_UNIX; bind reads sizeof(address) bytes.
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    return Error::fromErrno("bind " + path.string());
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), backlog) != 0) return Error::fromErrno("listen " + path.string());
  return fd;
}

}  // namespace microvm
