// FramedConnection: a non-blocking byte stream that carries protocol frames
// (agent/protocol.h: appendFrame out, FrameReader in) with a write backlog.
// Every framed channel is one: init's control port to the host (a
// virtio-serial character device, read and written with read/write), each
// connection the agent serves (a vsock stream socket, or a unix one in the
// unit tests) and the runner's end of the control port (a socketpair with
// QEMU); sockets are used with send/recv so that a gone peer is EPIPE, not
// SIGPIPE.
//
//   FramedConnection connection(std::move(fd), {.write_idle_timeout = 60s});  // fd is O_NONBLOCK
//   connection.queue(agent::FrameType::kOutput, bytes);  // the backlog grows
//   connection.writeSome();                              // what fits now
//   if (!connection.send(agent::FrameType::kResult, payload)) return;  // everything, waiting
//   auto frame = connection.receive(10s);                // nullopt: gone, corrupt or silent
//
// It keeps no policy about a peer that goes away: callers learn it from
// broken() (and brokenErrno()) and decide.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent/protocol.h"
#include "base/unique_fd.h"

namespace microvm::agent {

class FramedConnection {
 public:
  struct Options {
    // How long flush() waits for room before it takes the peer for gone.
    std::chrono::milliseconds write_idle_timeout{60'000};
    // The most one readSome() takes, so that a peer sending as fast as it is
    // read cannot keep the caller from handling what it sent.
    size_t max_read_round = SIZE_MAX;
  };

  // `fd` must be non-blocking.
  explicit FramedConnection(UniqueFd fd);
  FramedConnection(UniqueFd fd, Options options);

  int fd() const { return fd_.get(); }
  // True once a read reached EOF or a read or write failed; writes are then
  // dropped and reads stop.
  bool broken() const { return broken_; }
  // The errno of the call that broke the connection; 0 for an EOF.
  int brokenErrno() const { return broken_errno_; }
  // True once the peer sent an impossible frame; it stays so.
  bool corrupt() const { return reader_.failed(); }
  // What was wrong with the stream, once corrupt().
  const std::string& corruption() const { return reader_.failure(); }

  // Adds a frame to the write backlog (dropped once broken).
  void queue(FrameType type, std::string_view payload) {
    if (!broken_) appendFrame(out_, type, payload);
  }
  // Bytes of the backlog not yet written.
  size_t pending() const { return out_.size() - out_offset_; }
  // Writes what it can without blocking. False once broken.
  bool writeSome();
  // Writes the whole backlog, waiting for room (the peer's backpressure) up
  // to write_idle_timeout at a time. False once broken.
  bool flush();
  // queue() and flush().
  bool send(FrameType type, std::string_view payload) {
    queue(type, payload);
    return flush();
  }

  // Reads what is available, up to max_read_round, into the frame reader.
  // False once broken (the frames read before the EOF are still delivered).
  bool readSome();
  // The next complete frame read so far.
  std::optional<Frame> nextFrame() { return reader_.next(); }
  // The next frame, reading and waiting up to `timeout` for it; nullopt if
  // the peer went away, corrupted the stream or was silent that long.
  std::optional<Frame> receive(std::chrono::milliseconds timeout);

 private:
  ssize_t writeOnce(const char* data, size_t size);
  ssize_t readOnce(char* buffer, size_t size);
  void breakWith(int error_number);

  UniqueFd fd_;
  Options options_;
  bool socket_ = false;
  FrameReader reader_;
  std::string out_;
  size_t out_offset_ = 0;
  bool broken_ = false;
  int broken_errno_ = 0;
};

}  // namespace microvm::agent
