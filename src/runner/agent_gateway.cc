#include "runner/agent_gateway.h"

#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <utility>
#include <vector>

#include "agent/agent_protocol.h"
#include "base/unix_socket.h"
#include "vsock/vsock_muxer.h"

namespace microvm {
namespace {

using Kind = agent::StreamMuxEvent::Kind;

constexpr size_t kReadChunk = 64 * 1024;
// Read rounds per wake-up, so that one busy client or the guest cannot
// starve the loop's other work.
constexpr int kReadRounds = 4;

}  // namespace

uint64_t randomGeneration() {
  uint64_t value = 0;
  while (value == 0) {
    if (::getrandom(&value, sizeof value, 0) != static_cast<ssize_t>(sizeof value)) value = 0;
  }
  return value;
}

AgentGateway::AgentGateway(EventLoop& loop, Config config)
    : loop_(loop), config_(std::move(config)), mux_(agent::StreamMuxEndpoint::Role::kHost, randomGeneration()) {}

Result<std::unique_ptr<AgentGateway>> AgentGateway::create(EventLoop& loop, Config config) {
  std::unique_ptr<AgentGateway> gateway(new AgentGateway(loop, std::move(config)));
  AgentGateway* self = gateway.get();
  auto listener = listenUnix(self->config_.socket, 64, SOCK_NONBLOCK);
  if (!listener) return std::move(listener).error().withContext("agent gateway");
  self->listener_ = std::move(*listener);
  MICROVM_TRY(loop.add(self->listener_.get(), EPOLLIN, [self](uint32_t) { self->accept(); }));
  self->serial_interest_ = EPOLLIN;
  MICROVM_TRY(loop.add(self->config_.serial_fd.get(), EPOLLIN, [self](uint32_t events) { self->onSerial(events); }));
  self->flushSerial();  // the resync padding and HELLO
  return gateway;
}

AgentGateway::~AgentGateway() {
  for (auto& [id, client] : clients_) {
    loop_.remove(client.fd.get());
    loop_.cancelTimer(client.timer);
  }
  if (listener_.valid()) {
    loop_.remove(listener_.get());
    ::unlink(config_.socket.c_str());
  }
  if (!serial_closed_) loop_.remove(config_.serial_fd.get());
}

void AgentGateway::accept() {
  for (int i = 0; i < 16; ++i) {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!fd.valid()) return;
    if (clients_.size() >= config_.max_clients) continue;  // closed: refused
    uint64_t id = next_client_++;
    Client& client = clients_[id];
    client.fd = std::move(fd);
    client.timer = loop_.addTimer(config_.connect_timeout, [this, id] {
      auto it = clients_.find(id);
      if (it == clients_.end()) return;
      it->second.timer = 0;
      if (it->second.opened) return;
      drop(id, "the guest agent did not answer in time");
      // A guest that never answered our HELLO, or said nothing all that
      // time, may have lost the channel (its agent restarted, say, and waits
      // for a HELLO): start it afresh.
      if (!mux_.live() || EventLoop::Clock::now() - last_input_ >= config_.connect_timeout) {
        restart("the guest agent did not answer");
      }
      flushSerial();
    });
    client.interest = EPOLLIN;
    if (!loop_.add(client.fd.get(), EPOLLIN, [this, id](uint32_t events) { onClient(id, events); })) {
      loop_.cancelTimer(client.timer);
      clients_.erase(id);
    }
  }
}

void AgentGateway::readLine(uint64_t id) {
  Client& client = clients_.at(id);
  // Byte by byte: whatever follows the line is the stream's first data and
  // must stay in the socket until the guest has accepted.
  for (;;) {
    char c;
    ssize_t got = ::read(client.fd.get(), &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) return drop(id);
    if (c != '\n') {
      client.line.push_back(c);
      if (client.line.size() > vsock::kMaxConnectLine) return drop(id);
      continue;
    }
    auto port = vsock::parseConnectLine(client.line);
    if (!port) return drop(id);
    if (*port != agent::kAgentPort) {
      if (!config_.other_port) return drop(id);
      UniqueFd fd = std::move(client.fd);
      loop_.remove(fd.get());
      loop_.cancelTimer(client.timer);
      clients_.erase(id);
      config_.other_port(std::move(fd), *port);
      return;
    }
    auto stream = mux_.open(*port);
    if (!stream) return drop(id, nullptr);
    client.stream = *stream;
    streams_[*stream] = id;
    updateInterest(client);  // nothing until the guest accepts
    return;
  }
}

void AgentGateway::onClient(uint64_t id, uint32_t events) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  if (it->second.stream == 0) {
    readLine(id);
  } else if (!it->second.opened) {
    // Waiting for the guest: only a hang-up is news.
    if ((events & (EPOLLHUP | EPOLLERR)) != 0) drop(id);
  } else {
    Client& client = it->second;
    if ((events & EPOLLOUT) != 0 || ((events & (EPOLLHUP | EPOLLERR)) != 0 && !client.to_client.empty())) {
      flushClient(id, client);
    }
    it = clients_.find(id);
    if (it != clients_.end() && (it->second.interest & EPOLLIN) != 0 &&
        (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
      readClient(id, it->second);
    }
    it = clients_.find(id);
    if (it != clients_.end()) {
      if ((events & EPOLLERR) != 0 || ((events & EPOLLHUP) != 0 && it->second.client_eof)) {
        // Gone both ways: nothing more can be written to it.
        drop(id);
      } else {
        updateInterest(it->second);
      }
    }
  }
  handleEvents();
  flushSerial();
}

void AgentGateway::readClient(uint64_t id, Client& client) {
  for (int round = 0; round < kReadRounds; ++round) {
    size_t room = std::min(mux_.sendRoom(client.stream), kReadChunk);
    if (room == 0) return;
    char buffer[kReadChunk];
    ssize_t got = ::read(client.fd.get(), buffer, room);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got < 0) return drop(id);
    if (got == 0) {
      client.client_eof = true;
      (void)mux_.shutdownWrite(client.stream);
      return;
    }
    (void)mux_.send(client.stream, std::string_view(buffer, static_cast<size_t>(got)));
  }
}

void AgentGateway::flushClient(uint64_t id, Client& client) {
  size_t written = 0;
  while (written < client.to_client.size()) {
    ssize_t n = ::send(client.fd.get(), client.to_client.data() + written, client.to_client.size() - written,
                       MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) return drop(id);
    written += static_cast<size_t>(n);
  }
  client.to_client.erase(0, written);
  if (written > 0 && !client.stream_gone) (void)mux_.consume(client.stream, written);
  if (!client.to_client.empty()) return;
  if (client.stream_gone) return drop(id);
  if (client.guest_eof) ::shutdown(client.fd.get(), SHUT_WR);
}

void AgentGateway::updateInterest(Client& client) {
  uint32_t interest = 0;
  if (client.stream == 0) interest = EPOLLIN;
  if (client.opened && !client.client_eof && !client.stream_gone && mux_.sendRoom(client.stream) > 0) {
    interest |= EPOLLIN;
  }
  if (!client.to_client.empty()) interest |= EPOLLOUT;
  if (interest != client.interest) {
    client.interest = interest;
    (void)loop_.modify(client.fd.get(), interest);
  }
}

void AgentGateway::drop(uint64_t id, const char* why) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& client = it->second;
  if (why != nullptr && config_.log) config_.log(std::string("agent connection closed: ") + why);
  if (client.stream != 0 && !client.stream_gone) {
    (void)mux_.resetStream(client.stream, "the host client went away");
    streams_.erase(client.stream);
  }
  loop_.remove(client.fd.get());
  if (client.timer != 0) loop_.cancelTimer(client.timer);
  clients_.erase(it);
}

AgentGateway::Client* AgentGateway::byStream(uint32_t stream, uint64_t* id) {
  auto it = streams_.find(stream);
  if (it == streams_.end()) return nullptr;
  auto client = clients_.find(it->second);
  if (client == clients_.end()) return nullptr;
  if (id != nullptr) *id = it->second;
  return &client->second;
}

void AgentGateway::onSerial(uint32_t events) {
  if ((events & EPOLLOUT) != 0) flushSerial();
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLERR)) != 0) {
    for (int round = 0; round < kReadRounds; ++round) {
      char buffer[kReadChunk];
      ssize_t got = ::read(config_.serial_fd.get(), buffer, sizeof buffer);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && errno == EAGAIN) break;
      if (got <= 0) {
        // QEMU closed its end: it is exiting, and the VM with it.
        loop_.remove(config_.serial_fd.get());
        serial_closed_ = true;
        break;
      }
      last_input_ = EventLoop::Clock::now();
      mux_.receive(std::string_view(buffer, static_cast<size_t>(got)));
      handleEvents();
    }
  }
  handleEvents();
  flushSerial();
}

void AgentGateway::handleEvents() {
  for (;;) {
    auto events = mux_.takeEvents();
    if (events.empty()) return;
    for (auto& event : events) {
      uint64_t id = 0;
      Client* client = event.stream != 0 ? byStream(event.stream, &id) : nullptr;
      switch (event.kind) {
        case Kind::kLive:
        case Kind::kOpenRequested:  // a host refuses these itself
          break;
        case Kind::kOpened: {
          if (client == nullptr) break;
          client->opened = true;
          if (client->timer != 0) loop_.cancelTimer(client->timer);
          client->timer = 0;
          std::string ok = "OK " + std::to_string(event.stream) + "\n";
          // A fresh socket's buffer takes a line; anything else is a client
          // not worth waiting for.
          if (::send(client->fd.get(), ok.data(), ok.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(ok.size())) {
            drop(id);
            break;
          }
          updateInterest(*client);
          break;
        }
        case Kind::kRefused:
          if (client != nullptr) {
            streams_.erase(event.stream);
            client->stream_gone = true;
            drop(id, ("the guest refused it: " + event.text).c_str());
          }
          break;
        case Kind::kData:
          if (client == nullptr) break;
          client->to_client += event.text;
          flushClient(id, *client);
          if (auto* still = byStream(event.stream); still != nullptr) updateInterest(*still);
          break;
        case Kind::kWritable:
          if (client != nullptr) updateInterest(*client);
          break;
        case Kind::kShutdown:
          if (client == nullptr) break;
          client->guest_eof = true;
          flushClient(id, *client);
          break;
        case Kind::kClosed:
        case Kind::kReset:
          if (client == nullptr) break;
          streams_.erase(event.stream);
          client->stream_gone = true;
          if (event.kind == Kind::kReset) {
            drop(id);
          } else {
            flushClient(id, *client);
          }
          break;
        case Kind::kFailed:
          restart("the guest broke the agent channel (" + event.text + ")");
          break;
      }
    }
  }
}

void AgentGateway::restart(const std::string& why) {
  ++restarts_;
  if (config_.log) config_.log(why + "; restarting the channel");
  mux_.reset(why, randomGeneration());
  handleEvents();
}

void AgentGateway::flushSerial() {
  if (serial_closed_) return;
  for (;;) {
    std::string_view pending = mux_.pendingOutput();
    if (pending.empty()) break;
    ssize_t n = ::send(config_.serial_fd.get(), pending.data(), pending.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) {
      loop_.remove(config_.serial_fd.get());
      serial_closed_ = true;
      return;
    }
    mux_.outputWritten(static_cast<size_t>(n));
  }
  uint32_t interest = mux_.pendingOutput().empty() ? EPOLLIN : EPOLLIN | EPOLLOUT;
  if (interest != serial_interest_) {
    serial_interest_ = interest;
    (void)loop_.modify(config_.serial_fd.get(), interest);
  }
  // Room in the mux's queue may have opened for clients that stopped reading.
  for (auto& [id, client] : clients_) {
    if (client.opened) updateInterest(client);
  }
}

}  // namespace microvm
