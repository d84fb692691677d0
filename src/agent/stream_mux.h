// The stream multiplexer: many byte streams over one byte pipe, so that the
// agent's connections can travel over a virtio-serial port (which QEMU can
// migrate and snapshot) instead of vsock (vhost-user-vsock cannot be saved).
// The runner keeps the host API (a client connects to
// <runtime dir>/vsock.sock, writes "CONNECT 1024\n", reads "OK <n>\n") and
// carries each such connection as one stream (runner/agent_gateway.h); the
// guest gives each stream to the agent's per-connection code, one
// socketpair per stream (guest/agent_mux.cc).
//
// StreamMuxEndpoint is one end's pure state machine, with no I/O: the caller
// feeds it bytes read from the pipe and local events (open a stream, send,
// the local reader consumed N bytes, shut down, close, reset), and takes from
// it the bytes to write to the pipe and events for its streams.
//
// Wire (agent/stream_mux_wire.h): HELLO{version, generation}, OPEN{stream,
// port, window}, OPEN_OK{stream, window}, OPEN_REFUSED{stream, reason},
// DATA{stream, bytes}, CREDIT{stream, bytes}, SHUTDOWN_WRITE{stream},
// CLOSE{stream}, RESET{stream, reason}, and the all-zero resync header.
//
// Streams. In version 1 only the host opens streams, with odd ids that only
// increase (the guest fails the mux otherwise). The guest opens none: open()
// on a guest endpoint is kUnsupported and a host refuses every OPEN; even
// ids are kept for guest-opened streams in a later version. The guest's
// caller answers each OPEN with accept() or refuse(). A stream ends with CLOSE (sent or
// received), RESET (either way), or once both sides have sent
// SHUTDOWN_WRITE. Frames for a stream that has ended are dropped quietly
// (they were in flight); frames for an id that was never opened are answered
// with RESET. A RESET is never answered, so two ends cannot ping-pong.
//
// Flow control (per stream and direction, as in HTTP/2 or SSH channels):
// the receiver announces a window (OPEN, OPEN_OK); the sender may have at
// most that many bytes in flight and unconsumed. The receiver grants more
// with CREDIT as its caller consume()s the bytes (once a quarter of the
// window is free, so CREDITs stay few). A stream that is not read therefore
// stops at its window while the others keep flowing; one that sends beyond
// its credit is RESET. sendRoom() tells the caller how much it may read from
// its local socket for a stream, and a kWritable event says when that grew.
//
// Limits (StreamMuxLimits): the window (256 KiB), streams at once (64; an
// OPEN beyond is refused), and the pipe output queue (1 MiB of DATA; control
// frames may go 64 KiB beyond it, and a peer that lets even that fill up is
// not reading: the mux fails). Input is parsed as it arrives, so at most one
// partial frame (8 + kMaxMuxPayload bytes) stays buffered.
//
// Failure and restore. A framing error (a length over kMaxMuxPayload, a
// malformed message, ids that do not increase, an unknown HELLO version)
// fails the whole mux with the reason (event kFailed): every stream ends with
// kReset and that reason, queued output is dropped, and the endpoint goes
// back to scanning the input for a HELLO (its magic marks it). A guest that
// fails writes the resync padding (below), so that the host fails in turn
// instead of waiting on its streams. The host's
// end starts, and restarts (reset()), with a fresh generation: it writes
// kMuxResyncPadding zero bytes, which complete any partial frame the guest
// holds (such a frame ends in 0, not in the end marker, and is dropped as a
// resync) and then read as the resync header, and then HELLO{generation}. A
// guest that sees the resync header or a HELLO of another generation ends
// every stream of the old host with a clear reason and answers HELLO with
// that generation; the host takes only its own generation's answer. So
// after a snapshot restore the new runner's endpoint (a new generation)
// makes the guest drop every old session with an error, never a hang. (The
// runner should also keep the port unconnected until QEMU has loaded the
// snapshot, so that the guest sees a hang-up and calls reset() before any
// new byte; the padding is the fallback.) Generations should be random
// 64-bit values: the host takes a HELLO of its generation wherever it finds
// one while scanning. A host endpoint that failed stays down until its
// caller reset()s it with a new generation.
//
// Windows and credit beyond kMaxMuxCredit (1 GiB) are a broken peer: such an
// OPEN is refused, such an OPEN_OK or CREDIT resets its stream.
//
// Usage (host):
//   StreamMuxEndpoint mux(StreamMuxEndpoint::Role::kHost, generation);
//   auto id = mux.open(kAgentPort);                  // -> kOpened or kRefused
//   mux.receive(bytes_read_from_pipe);
//   for (auto& event : mux.takeEvents()) ...        // kData: write to client, then
//   mux.consume(event.stream, n);                    //   consume what it took
//   mux.send(*id, bytes.substr(0, mux.sendRoom(*id)));
//   write(pipe, mux.pendingOutput()); mux.outputWritten(n);
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "agent/stream_mux_wire.h"
#include "microvm/result.h"

namespace microvm::agent {

// Zero bytes the host writes before each HELLO: enough to complete the
// largest frame a guest may hold a part of, and then a whole resync header.
inline constexpr size_t kMuxResyncPadding = 2 * kHeaderSize + kMaxMuxPayload;
// More credit than this on one stream is a broken peer (the stream is reset).
inline constexpr uint64_t kMaxMuxCredit = uint64_t{1} << 30;

struct StreamMuxLimits {
  uint32_t window = 256 * 1024;  // per stream and direction
  size_t max_streams = 64;
  size_t max_output = 1024 * 1024;   // queued pipe output that send() fills
  size_t control_slack = 64 * 1024;  // control frames beyond max_output
};

struct StreamMuxEvent {
  enum class Kind {
    kLive,           // the HELLO exchange is done (stream 0)
    kOpenRequested,  // guest: the host opened `stream` to `port`; accept() or refuse()
    kOpened,         // host: the guest accepted the stream
    kRefused,        // host: the guest refused it (`text`: why); the stream is gone
    kData,           // `text` arrived on `stream`; consume() it once delivered
    kWritable,       // `stream` got credit: sendRoom() grew
    kShutdown,       // the peer sends no more on `stream` (EOF)
    kClosed,         // `stream` ended normally; it is gone
    kReset,          // `stream` was reset (`text`: why); it is gone
    kFailed,         // the mux failed (`text`: why); every stream was reset
  };
  Kind kind;
  uint32_t stream = 0;
  uint32_t port = 0;
  std::string text;
};

class StreamMuxEndpoint {
 public:
  enum class Role { kHost, kGuest };

  // A host endpoint queues the resync padding and HELLO{generation} at once;
  // a guest endpoint waits for the host's HELLO (generation is unused).
  StreamMuxEndpoint(Role role, uint64_t generation, StreamMuxLimits limits = {});

  // Bytes read from the pipe, in any chunks.
  void receive(std::string_view bytes);
  // The events so far, oldest first; clears them.
  std::vector<StreamMuxEvent> takeEvents();

  // The bytes to write to the pipe, and how many of them were written.
  std::string_view pendingOutput() const { return std::string_view(output_).substr(output_offset_); }
  void outputWritten(size_t count);

  // Host: opens a stream to `port` of the guest; its id. Sending waits for
  // kOpened. kUnavailable when max_streams are open; kUnsupported on a guest.
  Result<uint32_t> open(uint32_t port);
  // Guest: answers kOpenRequested.
  Result<void> accept(uint32_t stream);
  Result<void> refuse(uint32_t stream, std::string_view reason);

  // How many bytes send() would take now for `stream` (0 until it is open,
  // after shutdownWrite(), or while the credit or the output queue is full).
  size_t sendRoom(uint32_t stream) const;
  // Queues up to sendRoom() bytes as DATA; how many it took.
  Result<size_t> send(uint32_t stream, std::string_view bytes);
  // The caller delivered `count` bytes of kData to the stream's reader.
  Result<void> consume(uint32_t stream, size_t count);
  // No more sending on `stream` (the peer sees kShutdown). If the peer had
  // shut down too, the stream is finished: kClosed, and it is gone.
  Result<void> shutdownWrite(uint32_t stream);
  // The stream is done both ways (CLOSE), or abandoned with a reason (RESET).
  // Neither raises an event; the stream is gone at once.
  Result<void> close(uint32_t stream);
  Result<void> resetStream(uint32_t stream, std::string_view reason);

  // The pipe broke or was reconnected: every stream ends with kReset and
  // `reason`, buffered input and output are dropped. A host restarts with
  // `new_generation` (padding, HELLO); a guest scans for the next HELLO.
  void reset(std::string_view reason, uint64_t new_generation = 0);

  bool live() const { return live_; }
  uint64_t generation() const { return generation_; }
  size_t streamCount() const { return streams_.size(); }
  size_t bufferedInput() const { return input_.size(); }
  size_t pendingOutputSize() const { return output_.size() - output_offset_; }
  const StreamMuxLimits& limits() const { return limits_; }

  // For tests and the fuzz target: false if any per-stream count broke its
  // invariant (credit + unread + unannounced == window, bounds).
  bool invariantsHold() const;

 private:
  struct Stream {
    uint32_t port = 0;
    bool open = false;  // OPEN_OK sent or received
    bool sent_shutdown = false;
    bool received_shutdown = false;
    uint64_t send_credit = 0;  // bytes we may still send
    uint32_t peer_credit = 0;  // bytes the peer may still send
    uint32_t unread = 0;       // delivered in kData, not yet consumed
    uint32_t unannounced = 0;  // consumed, not yet granted by CREDIT
  };

  void startHost();
  void scanForHello();
  void parseFrames();
  void handle(const MuxMessage& message);
  void handleHello(const MuxMessage& message);
  void handleOpen(const MuxMessage& message);
  void handleData(const MuxMessage& message);
  void handleStreamMessage(const MuxMessage& message);
  // True for an id that was opened once (by either side) and has ended.
  bool endedEarlier(uint32_t stream) const;
  void fail(const std::string& reason);
  // Guest: the host restarted (resync header, or a frame its padding completed).
  void resync();
  void endAll(StreamMuxEvent::Kind kind, const std::string& reason);
  void endStream(uint32_t stream, StreamMuxEvent::Kind kind, std::string text);
  // Queues a control frame; fails the mux beyond outputLimit().
  void queue(const MuxMessage& message);
  size_t outputLimit() const;
  void event(StreamMuxEvent::Kind kind, uint32_t stream, std::string text = {}, uint32_t port = 0);

  Role role_;
  uint64_t generation_;
  StreamMuxLimits limits_;
  bool live_ = false;     // else scanning for a HELLO, skipping the rest
  bool greeted_ = false;  // guest: a HELLO was taken since the last reset
  std::string input_;
  uint64_t input_offset_ = 0;  // pipe offset of input_[0], for messages
  std::string output_;
  size_t output_offset_ = 0;
  std::map<uint32_t, Stream> streams_;
  uint32_t next_stream_ = 1;          // host: the next id it opens
  uint32_t highest_peer_stream_ = 0;  // guest: the last id the host opened
  std::vector<StreamMuxEvent> events_;
};

}  // namespace microvm::agent
