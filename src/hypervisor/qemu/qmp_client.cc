#include "hypervisor/qemu/qmp_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/unix_socket.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// A QMP line longer than this is not something QEMU sends; stop reading.
constexpr size_t kMaxMessage = 16 * 1024 * 1024;

}  // namespace

Result<QmpClient> QmpClient::connect(const fs::path& socket_path, std::chrono::milliseconds timeout,
                                     MachineConfig::WaitService while_waiting) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto fd = connectUnix(socket_path);
    if (fd) {
      QmpClient client(std::move(*fd), while_waiting);
      auto greeting = client.receive(deadline);
      if (!greeting) return std::move(greeting).error().withContext("QMP greeting");
      auto negotiated = client.execute("qmp_capabilities");
      if (!negotiated) return std::move(negotiated).error();
      return client;
    }
    // QEMU creates the socket during start-up; until then, retry.
    int failed = fd.error().sysErrno();
    if ((failed != ENOENT && failed != ECONNREFUSED) || Clock::now() >= deadline) {
      return std::move(fd).error().withContext("QMP");
    }
    if (while_waiting.fd >= 0) {
      pollfd pfd{while_waiting.fd, POLLIN, 0};
      if (::poll(&pfd, 1, 5) == 1) while_waiting.service();
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

Result<void> QmpClient::send(const json& message, int fd) {
  std::string line = message.dump() + "\n";
  iovec io{line.data(), line.size()};
  msghdr header{};
  header.msg_iov = &io;
  header.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  if (fd >= 0) {
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    cmsghdr* cmsg = CMSG_FIRSTHDR(&header);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
  }
  ssize_t sent;
  do {
    sent = ::sendmsg(fd_.get(), &header, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return Error::fromErrno("write to QMP");
  // QMP commands are far below the socket buffer size; a short write would
  // mean the peer is broken.
  if (static_cast<size_t>(sent) != line.size()) return Error(ErrorCode::kIo, "short write to QMP");
  return success();
}

Result<json> QmpClient::receive(Clock::time_point deadline) {
  for (;;) {
    size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      json message = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!message.is_object()) return Error(ErrorCode::kProtocol, "QMP sent a malformed message");
      return message;
    }
    if (buffer_.size() > kMaxMessage) return Error(ErrorCode::kProtocol, "QMP message too long");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Error(ErrorCode::kTimeout, "QMP did not answer in time");
    pollfd pfds[2] = {{fd_.get(), POLLIN, 0}, {while_waiting_.fd, POLLIN, 0}};
    int ready = ::poll(pfds, while_waiting_.fd >= 0 ? 2 : 1, static_cast<int>(left));
    if (ready < 0 && errno != EINTR) return Error::fromErrno("poll QMP");
    if (ready <= 0) continue;
    if (while_waiting_.fd >= 0 && (pfds[1].revents & POLLIN) != 0) while_waiting_.service();
    if ((pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    char chunk[4096];
    ssize_t got = ::read(fd_.get(), chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return Error::fromErrno("read from QMP");
    if (got == 0) return Error(ErrorCode::kIo, "QMP connection closed (QEMU exited?)");
    buffer_.append(chunk, static_cast<size_t>(got));
  }
}

Result<json> QmpClient::awaitReturn(const std::string& command, Clock::time_point deadline) {
  for (;;) {
    auto message = receive(deadline);
    if (!message) return std::move(message).error();
    if (message->contains("event")) continue;  // asynchronous; not our answer
    if (message->contains("error")) {
      const json& error = (*message)["error"];
      return Error(ErrorCode::kIo, "QMP " + command + ": " + error.value("desc", error.dump()));
    }
    if (message->contains("return")) return (*message)["return"];
  }
}

Result<json> QmpClient::execute(const std::string& command, const json& arguments,
                                std::chrono::milliseconds timeout) {
  json request = {{"execute", command}};
  if (!arguments.is_null()) request["arguments"] = arguments;
  MICROVM_TRY(send(request));
  return awaitReturn(command, Clock::now() + timeout);
}

Result<json> QmpClient::executeWithFd(const std::string& command, const json& arguments, int fd) {
  json request = {{"execute", command}, {"arguments", arguments}};
  MICROVM_TRY(send(request, fd));
  return awaitReturn(command, Clock::now() + std::chrono::seconds(10));
}

}  // namespace microvm
