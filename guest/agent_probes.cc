#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <string>

#include "base/eintr.h"
#include "guest/agent_operations.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

// A probe without a timeout of its own gets this long.
constexpr milliseconds kDefaultProbeTimeout{1'000};

// Connects to address within the deadline; returns the connected socket.
Result<UniqueFd> connectWithin(const sockaddr* address, socklen_t length, Clock::time_point deadline) {
  UniqueFd fd(::socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return Error(ErrorCode::kIo, "socket: " + describeErrno(errno));
  if (::connect(fd.get(), address, length) != 0) {
    if (errno != EINPROGRESS) return Error(ErrorCode::kIo, describeErrno(errno));
    pollfd watch{fd.get(), POLLOUT, 0};
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); });
    if (ready == 0) {
      errno = ETIMEDOUT;
      return Error(ErrorCode::kTimeout, "connection timed out");
    }
    int error = 0;
    socklen_t size = sizeof error;
    if (ready < 0 || ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &size) != 0) {
      return Error(ErrorCode::kIo, describeErrno(errno));
    }
    if (error != 0) {
      errno = error;
      return Error(ErrorCode::kIo, describeErrno(error));
    }
  }
  return fd;
}

// 127.0.0.1:port, then [::1]:port.
Result<UniqueFd> connectLoopback(uint32_t port, Clock::time_point deadline, int& error_number) {
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_port = htons(static_cast<uint16_t>(port));
  v4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SAFETY: sockaddr_in is a sockaddr for connect(2), with its own length.
  auto first = connectWithin(reinterpret_cast<const sockaddr*>(&v4), sizeof v4, deadline);
  if (first.ok()) return first;
  error_number = errno;
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(static_cast<uint16_t>(port));
  v6.sin6_addr = in6addr_loopback;
  // SAFETY: as above, for sockaddr_in6.
  auto second = connectWithin(reinterpret_cast<const sockaddr*>(&v6), sizeof v6, deadline);
  if (second.ok()) return second;
  return Error(ErrorCode::kIo, "127.0.0.1:" + std::to_string(port) + ": " + first.error().message() +
                                   "; [::1]:" + std::to_string(port) + ": " + second.error().message());
}

bool validPort(uint32_t port) {
  return port >= 1 && port <= 65535;
}

// "HTTP/1.1 200 OK" -> 200.
std::optional<uint32_t> parseStatusLine(std::string_view line) {
  if (!line.starts_with("HTTP/")) return std::nullopt;
  size_t space = line.find(' ');
  if (space == std::string_view::npos || line.size() < space + 4) return std::nullopt;
  uint32_t status = 0;
  for (size_t i = space + 1; i < space + 4; ++i) {
    if (line[i] < '0' || line[i] > '9') return std::nullopt;
    status = status * 10 + static_cast<uint32_t>(line[i] - '0');
  }
  return status;
}

}  // namespace

void handleProbeTcp(FramedConnection& connection, const agent::AgentRequest& request) {
  if (!validPort(request.port)) {
    agent::AgentResult result = failure(request.id, "invalid port " + std::to_string(request.port), EINVAL);
    result.status = agent::AgentStatus::kBadRequest;
    return (void)sendResult(connection, result);
  }
  auto timeout = request.timeout_ms != 0 ? milliseconds(request.timeout_ms) : kDefaultProbeTimeout;
  int error_number = 0;
  auto connected = connectLoopback(request.port, Clock::now() + timeout, error_number);
  if (!connected.ok())
    return (void)sendResult(connection, failure(request.id, connected.error().message(), error_number));
  agent::AgentResult result;
  result.id = request.id;
  sendResult(connection, result);
}

void handleProbeHttp(FramedConnection& connection, const agent::AgentRequest& request) {
  std::string path = request.path.empty() ? "/" : request.path;
  bool clean_path = path.front() == '/' && std::none_of(path.begin(), path.end(), [](char c) {
                      return static_cast<unsigned char>(c) <= ' ' || c == 0x7f;
                    });
  if (!validPort(request.port) || !clean_path) {
    agent::AgentResult result = failure(request.id, "invalid port or request path", EINVAL);
    result.status = agent::AgentStatus::kBadRequest;
    return (void)sendResult(connection, result);
  }
  auto deadline = Clock::now() + (request.timeout_ms != 0 ? milliseconds(request.timeout_ms) : kDefaultProbeTimeout);
  int error_number = 0;
  auto connected = connectLoopback(request.port, deadline, error_number);
  if (!connected.ok())
    return (void)sendResult(connection, failure(request.id, connected.error().message(), error_number));
  std::string http = "GET " + path + " HTTP/1.0\r\nHost: localhost\r\nUser-Agent: microvm-agent\r\n\r\n";
  std::string_view rest = http;
  std::string response;
  auto timed_out = [&] { return failure(request.id, "no HTTP response within the timeout", ETIMEDOUT); };
  while (!rest.empty()) {
    pollfd watch{connected->get(), POLLOUT, 0};
    if (retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); }) <= 0) {
      return (void)sendResult(connection, timed_out());
    }
    ssize_t sent = retryOnEintr([&] { return ::send(connected->get(), rest.data(), rest.size(), MSG_NOSIGNAL); });
    if (sent <= 0) return (void)sendResult(connection, systemFailure(request.id, "send the HTTP request"));
    rest.remove_prefix(static_cast<size_t>(sent));
  }
  while (response.find('\n') == std::string::npos && response.size() < 1024) {
    pollfd watch{connected->get(), POLLIN, 0};
    if (retryOnEintr([&] { return ::poll(&watch, 1, millisecondsUntil(deadline)); }) <= 0) {
      return (void)sendResult(connection, timed_out());
    }
    char buffer[1024];
    ssize_t got = retryOnEintr([&] { return ::recv(connected->get(), buffer, sizeof buffer, 0); });
    if (got < 0) return (void)sendResult(connection, systemFailure(request.id, "read the HTTP response"));
    if (got == 0) break;
    response.append(buffer, static_cast<size_t>(got));
  }
  auto status = parseStatusLine(response.substr(0, response.find('\r')));
  if (!status) return (void)sendResult(connection, failure(request.id, "not an HTTP response", EPROTO));
  agent::AgentResult result;
  result.id = request.id;
  result.http_status = *status;
  sendResult(connection, result);
}

}  // namespace microvm::guest
