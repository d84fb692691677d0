// A stand-in for the guest agent in the host's unit tests: it listens on a
// real unix socket and answers each connection with a script, the way a
// broken or hostile guest would (silence, too much data, odd listings).
// Header-only; only tests include it.
//
//   FakeAgent fake(dir / "agent.sock", [](const agent::AgentRequest& request, int fd) {
//     fakeAgentSendResult(fd, agent::AgentResult{});   // "ok", whatever was asked
//   });
//   auto client = fake.client();                       // AgentClient::direct, short timeouts
//   EXPECT_TRUE(client.ping().ok());
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "agent/client.h"
#include "agent/protocol.h"
#include "base/unique_fd.h"

namespace microvm::agent {

// Writes one frame, blocking; false once the client is gone.
inline bool fakeAgentSend(int fd, FrameType type, std::string_view payload) {
  std::string wire;
  appendFrame(wire, type, payload);
  std::string_view rest = wire;
  while (!rest.empty()) {
    ssize_t sent = ::send(fd, rest.data(), rest.size(), MSG_NOSIGNAL);
    if (sent <= 0) return false;
    rest.remove_prefix(static_cast<size_t>(sent));
  }
  return true;
}

inline bool fakeAgentSendResult(int fd, const AgentResult& result) {
  return fakeAgentSend(fd, FrameType::kResult, encodeResult(result));
}

// Says nothing and reads nothing until the client hangs up (10 s at most):
// a guest that went silent.
inline void fakeAgentHoldUntilClosed(int fd) {
  pollfd watch{fd, POLLRDHUP, 0};
  (void)::poll(&watch, 1, 10'000);
}

class FakeAgent {
 public:
  enum class Mode {
    kRaw,          // the script gets the connection as accepted (a runner that never answers CONNECT)
    kSilentHello,  // hello and request read; the agent's hello is never sent
    kGreeted,      // hello and request read, the agent's hello sent
  };
  using Script = std::function<void(const AgentRequest& request, int fd)>;

  FakeAgent(std::filesystem::path socket, Script script, Mode mode = Mode::kGreeted)
      : socket_(std::move(socket)), script_(std::move(script)), mode_(mode) {
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, socket_.c_str(), sizeof address.sun_path - 1);
    // SAFETY: sockaddr_un is the sockaddr of AF_UNIX, passed with its size.
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
        ::listen(listener_.get(), 16) != 0) {
      listener_.reset();
      return;
    }
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return;
    stop_read_.reset(fds[0]);
    stop_write_.reset(fds[1]);
    thread_ = std::thread([this] { serve(); });
  }
  FakeAgent(const FakeAgent&) = delete;
  FakeAgent& operator=(const FakeAgent&) = delete;

  ~FakeAgent() {
    stop_write_.reset();  // EOF on the pipe stops the loop
    if (thread_.joinable()) thread_.join();
    for (auto& connection : connection_threads_) connection.join();
    ::unlink(socket_.c_str());
  }

  bool listening() const { return listener_.valid() && thread_.joinable(); }
  int connections() const { return connections_.load(); }

  // A direct client with timeouts short enough for a test.
  AgentClient client(std::chrono::milliseconds reply = std::chrono::milliseconds(300),
                     std::chrono::milliseconds transfer = std::chrono::milliseconds(300)) const {
    AgentClient client = AgentClient::direct(socket_);
    client.setPeerName("VM fake");
    client.setTimeouts(AgentTimeouts{reply, transfer});
    return client;
  }

 private:
  void serve() {
    for (;;) {
      pollfd watch[2] = {{listener_.get(), POLLIN, 0}, {stop_read_.get(), POLLIN, 0}};
      if (::poll(watch, 2, -1) < 0 || watch[1].revents != 0) return;
      int accepted = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (accepted < 0) continue;
      ++connections_;
      // Each connection in a thread of its own: a script that holds one
      // (silence) does not delay the client's next one.
      connection_threads_.emplace_back([this, accepted] { serveOne(UniqueFd(accepted)); });
    }
  }

  void serveOne(UniqueFd connection) {
    if (mode_ == Mode::kRaw) return script_(AgentRequest{}, connection.get());
    auto request = readRequest(connection.get());
    if (!request) return;
    if (mode_ == Mode::kGreeted &&
        !fakeAgentSend(connection.get(), FrameType::kAgentHello, encodeU32(kAgentProtocolVersion))) {
      return;
    }
    script_(*request, connection.get());
  }

  // The client's hello and request, within 5 s.
  static std::optional<AgentRequest> readRequest(int fd) {
    FrameReader reader;
    bool hello = false;
    for (int rounds = 0; rounds < 1000; ++rounds) {
      while (auto frame = reader.next()) {
        if (frame->type == FrameType::kAgentHello) hello = true;
        if (frame->type == FrameType::kRequest && hello) {
          auto request = decodeRequest(frame->payload);
          if (!request) return std::nullopt;
          return std::move(*request);
        }
      }
      pollfd watch{fd, POLLIN, 0};
      if (::poll(&watch, 1, 5'000) <= 0) return std::nullopt;
      char buffer[4096];
      ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
      if (got <= 0) return std::nullopt;
      reader.feed(std::string_view(buffer, static_cast<size_t>(got)));
    }
    return std::nullopt;
  }

  std::filesystem::path socket_;
  Script script_;
  Mode mode_;
  UniqueFd listener_;
  UniqueFd stop_read_;
  UniqueFd stop_write_;
  std::atomic<int> connections_{0};
  std::thread thread_;
  std::vector<std::thread> connection_threads_;
};

}  // namespace microvm::agent
