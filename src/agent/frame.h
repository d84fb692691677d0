// The framing both host<->guest protocols share (agent/protocol.h documents
// the wire format): an 8-byte little-endian header {u16 type, u16 flags,
// u32 length} and then `length` payload bytes, at most kMaxPayload.
//
// Usage:
//   std::string wire;
//   appendFrame(wire, FrameType::kSignal, encodeU32(15));
//   FrameReader reader;
//   reader.feed(bytes);
//   while (auto frame = reader.next()) handle(*frame);
//   if (reader.failed()) log(reader.failure());
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "agent/tlv.h"
#include "microvm/result.h"

namespace microvm::agent {

inline constexpr uint32_t kMaxPayload = 1u << 20;
inline constexpr size_t kHeaderSize = 8;

enum class FrameType : uint16_t {
  // The control port (agent/control_protocol.h).
  kSpec = 1,
  kSignal = 2,
  kExitAck = 3,
  kStdin = 4,
  kStdinClose = 5,
  kRefresh = 6,  // host -> init after a restore: encodeRefresh()
  kTerminalSize = 7,  // host -> init: the workload's tty size, encodeWindowSize()
  kClock = 8,         // host -> init: the answer to kClockProbe, encodeClock()
  kHello = 16,
  kStarted = 17,
  kStdout = 18,
  kStderr = 19,
  kExit = 20,
  kError = 21,
  kClockProbe = 22,  // init -> host after a kRefresh: its CLOCK_MONOTONIC, u64 ns, echoed in kClock

  // The agent protocol (agent/agent_protocol.h); never on the control port.
  kAgentHello = 64,
  kRequest = 65,
  kResult = 66,
  kInput = 67,
  kOutput = 68,
  kErrorOutput = 69,
  kResize = 70,
  kExecSignal = 71,
  kExited = 72,
  kData = 73,
  kEntries = 74,

  // The stream multiplexer (agent/stream_mux_wire.h); only on its own port.
  kMuxHello = 96,
  kMuxOpen = 97,
  kMuxOpenOk = 98,
  kMuxOpenRefused = 99,
  kMuxData = 100,
  kMuxCredit = 101,
  kMuxShutdownWrite = 102,
  kMuxClose = 103,
  kMuxReset = 104,
};

struct Frame {
  FrameType type;
  std::string payload;
};

void appendFrame(std::string& out, FrameType type, std::string_view payload);

// The payload of the frames that carry one u32 (kHello, kSignal, kExit, ...).
std::string encodeU32(uint32_t value);
// An error unless the payload is exactly four bytes.
Result<uint32_t> decodeU32(std::string_view payload);

// Reassembles frames from arbitrary chunks of the byte stream.
class FrameReader {
 public:
  // Appends bytes received from the peer.
  void feed(std::string_view bytes) { buffer_.append(bytes); }

  // The next complete frame, or nullopt if more bytes are needed or the
  // stream is corrupt (then failed() is true and stays true).
  std::optional<Frame> next();

  bool failed() const { return !failure_.empty(); }
  // Why the stream is corrupt, and where; empty while it is not.
  const std::string& failure() const { return failure_; }

 private:
  std::string buffer_;
  size_t offset_ = 0;     // of the next frame in buffer_
  size_t discarded_ = 0;  // stream bytes erased from the front of buffer_
  std::string failure_;
};

}  // namespace microvm::agent
