#include "core/attach.h"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>

#include "agent/protocol.h"
#include "base/fs.h"

namespace microvm {

Result<int> relayAttached(UniqueFd stream, int in_fd, int out_fd, int err_fd) {
  agent::FrameReader reader;
  std::string frame;
  char buffer[65536];
  for (;;) {
    pollfd watch[2] = {{stream.get(), POLLIN, 0}, {in_fd, POLLIN, 0}};
    if (::poll(watch, in_fd >= 0 ? 2 : 1, -1) < 0) {
      if (errno == EINTR) continue;
      return Error::fromErrno("poll attach stream");
    }
    if (in_fd >= 0 && watch[1].revents) {
      ssize_t got = ::read(in_fd, buffer, sizeof buffer);
      if (got < 0 && errno == EINTR) continue;
      frame.clear();
      if (got > 0) {
        agent::appendFrame(frame, agent::FrameType::kStdin, std::string_view(buffer, static_cast<size_t>(got)));
      } else {
        agent::appendFrame(frame, agent::FrameType::kStdinClose, {});
        in_fd = -1;
      }
      // Blocking: the runner reads as fast as the guest takes stdin, and no
      // faster, which is the back-pressure a pipe gives.
      MICROVM_TRY(writeAll(stream.get(), frame));
    }
    if (!watch[0].revents) continue;
    ssize_t got = ::read(stream.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return Error(ErrorCode::kIo, "the VM's runner closed the attach stream before the workload exited");
    reader.feed(std::string_view(buffer, static_cast<size_t>(got)));
    while (auto next = reader.next()) {
      switch (next->type) {
        case agent::FrameType::kStdout:
          if (out_fd >= 0 && !writeAll(out_fd, next->payload)) out_fd = -1;
          break;
        case agent::FrameType::kStderr:
          if (err_fd >= 0 && !writeAll(err_fd, next->payload)) err_fd = -1;
          break;
        case agent::FrameType::kExit: {
          auto code = agent::decodeU32(next->payload);
          if (!code) {
            return Error(ErrorCode::kProtocol, "malformed exit frame on the attach stream: " + code.error().message());
          }
          return static_cast<int>(*code & 0xff);
        }
        default: break;
      }
    }
    if (reader.failed()) {
      return Error(ErrorCode::kProtocol, "malformed frame on the attach stream: " + reader.failure());
    }
  }
}

}  // namespace microvm
