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
      MICROVM_TRY(client.negotiate(deadline));
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

Result<QmpClient> QmpClient::adopt(UniqueFd fd, std::chrono::milliseconds timeout) {
  QmpClient client(std::move(fd), {});
  MICROVM_TRY(client.negotiate(Clock::now() + timeout));
  return client;
}

Result<void> QmpClient::negotiate(Clock::time_point deadline) {
  auto greeting = receive(deadline);
  if (!greeting) return std::move(greeting).error().withContext("QMP greeting");
  auto negotiated = execute("qmp_capabilities");
  if (!negotiated) return std::move(negotiated).error();
  return success();
}

Result<void> QmpClient::send(const json& message, int fd) {
  std::string line = message.dump() + "\n";
  auto sent = sendWithFds(fd_.get(), line, std::span<const int>(&fd, fd >= 0 ? 1 : 0));
  if (!sent) return std::move(sent).error().withContext("write to QMP");
  // QMP commands are far below the socket buffer size; a short write would
  // mean the peer is broken.
  if (*sent != line.size()) return Error(ErrorCode::kIo, "short write to QMP");
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
      // QEMU's errors are {"class", "desc"}; anything else is shown as sent,
      // cut short (the JSON parser has already rejected invalid UTF-8).
      const json& error = (*message)["error"];
      std::string desc = qmpString(error, "desc");
      if (desc.empty()) desc = error.dump().substr(0, 512);
      return Error(ErrorCode::kIo, "QMP " + command + ": " + desc.substr(0, 4096));
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

std::string qmpString(const json& reply, const char* key) {
  if (!reply.is_object()) return "";
  auto member = reply.find(key);
  if (member == reply.end() || !member->is_string()) return "";
  return member->get<std::string>();
}

std::optional<Result<void>> qmpMigrationOutcome(const json& reply) {
  std::string status = qmpString(reply, "status");
  if (status == "completed") return success();
  if (status == "failed" || status == "cancelled") {
    return Error(ErrorCode::kIo,
                 "saving the VM state " + status + ": " + qmpString(reply, "error-desc").substr(0, 4096));
  }
  return std::nullopt;
}

std::optional<Result<void>> qmpRestoreOutcome(const json& reply) {
  std::string status = qmpString(reply, "status");
  if (status == "inmigrate" || status == "prelaunch") return std::nullopt;
  if (status == "paused" || status == "running") return success();
  return Error(ErrorCode::kIo, "restoring the VM state ended in state \"" + status.substr(0, 256) + "\"");
}

}  // namespace microvm
