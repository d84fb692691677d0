// The agent gateway: how host clients reach the guest agent over the
// microvm.agent virtio-serial port, which QEMU can save in a snapshot (its
// vhost-user-vsock device cannot).
//
// Clients do what they always did: connect to <runtime dir>/vsock.sock,
// write "CONNECT 1024\n", read "OK <n>\n", then speak the agent protocol.
// The gateway listens there, reads the line, and carries each agent
// connection as one stream of an agent::StreamMuxEndpoint (src/agent/
// stream_mux.h) over the port; a CONNECT to any other port goes to the vsock
// device when the VM has one (`other_port`), and is closed otherwise.
//
// A fresh gateway starts the mux with a random generation, so that a guest
// restored from a snapshot (whose agent still holds the old runner's
// streams) ends those sessions with an error and answers the new runner.
// If the guest breaks the mux (a framing error), or says nothing while a
// client waits out its connect_timeout for the agent to accept (its agent
// restarted and waits for a HELLO, say), every stream is reset and the host
// restarts the mux with a new generation.
//
// Bounds, whatever the guest does: at most `max_clients` clients (each one's
// guest-to-client backlog is bounded by the mux window, 256 KiB), reads of at
// most 64 KiB per round, the mux's own output bound, and a client that is
// not through CONNECT and OK within `connect_timeout` is closed.
//
//   AgentGateway::Config config;
//   config.socket = vsock_sock;
//   config.serial_fd = std::move(runner_end_of_the_port);
//   auto gateway = AgentGateway::create(loop, std::move(config));
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "agent/stream_mux.h"
#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

class AgentGateway {
 public:
  struct Config {
    std::filesystem::path socket;  // where CONNECT clients come
    UniqueFd serial_fd;            // the runner's end of the microvm.agent port (non-blocking)
    // A client that asked for another port; empty: it is closed.
    std::function<void(UniqueFd fd, uint32_t port)> other_port;
    std::function<void(const std::string&)> log;
    size_t max_clients = 64;
    std::chrono::milliseconds connect_timeout = std::chrono::seconds(5);
  };

  static Result<std::unique_ptr<AgentGateway>> create(EventLoop& loop, Config config);
  ~AgentGateway();
  AgentGateway(const AgentGateway&) = delete;
  AgentGateway& operator=(const AgentGateway&) = delete;

  size_t clientCount() const { return clients_.size(); }
  // How many times the guest broke the mux and it was restarted.
  uint64_t restarts() const { return restarts_; }

 private:
  struct Client {
    UniqueFd fd;
    std::string line;         // the CONNECT line, until it is whole
    uint32_t stream = 0;      // 0: no stream yet
    bool opened = false;      // the guest accepted: OK sent, bytes flow
    bool client_eof = false;  // the client shut down its writing side
    bool guest_eof = false;   // the guest shut down its side: shutdown(SHUT_WR) once flushed
    bool stream_gone = false; // the stream ended; close once flushed
    std::string to_client;    // from the guest, not yet written
    uint32_t interest = 0;
    EventLoop::TimerId timer = 0;
  };

  AgentGateway(EventLoop& loop, Config config);
  void accept();
  void readLine(uint64_t id);
  void onClient(uint64_t id, uint32_t events);
  void readClient(uint64_t id, Client& client);
  void flushClient(uint64_t id, Client& client);
  void updateInterest(Client& client);
  void drop(uint64_t id, const char* why = nullptr);
  void onSerial(uint32_t events);
  void handleEvents();
  void flushSerial();
  // A new generation: every stream ends, the guest is greeted again.
  void restart(const std::string& why);
  Client* byStream(uint32_t stream, uint64_t* id = nullptr);

  EventLoop& loop_;
  Config config_;
  UniqueFd listener_;
  agent::StreamMuxEndpoint mux_;
  std::map<uint64_t, Client> clients_;
  std::map<uint32_t, uint64_t> streams_;  // stream id -> client id
  uint64_t next_client_ = 1;
  uint32_t serial_interest_ = 0;
  bool serial_closed_ = false;
  uint64_t restarts_ = 0;
  EventLoop::Clock::time_point last_input_{};
};

// A random mux generation (getrandom).
uint64_t randomGeneration();

}  // namespace microvm
