// The wire messages of the stream multiplexer (agent/stream_mux.h): many byte
// streams carried over one byte pipe (a virtio-serial port). Frames use the
// shared framing (agent/frame.h: {u16 type, u16 flags, u32 length} + payload)
// with types kMuxHello..kMuxReset; control payloads are TLV fields
// (agent/tlv.h), DATA is a raw stream id and the bytes, and HELLO starts with
// a fixed magic so that a reader that lost its place can find it again.
// Every mux payload ends with the end marker byte 0xA5: a frame that a
// restarted host's zero padding completed (stream_mux.h) ends in 0 instead,
// and is never taken for a real one.
//
//   type  message          payload
//   0     (resync)         an all-zero 8-byte header, length 0: the host's
//                          end restarted; see stream_mux.h
//   (payload, then the end marker 0xA5)
//   96    HELLO            "microvmX" magic, then TLV {1 version, 2 generation u64}
//   97    OPEN             TLV {3 stream, 4 port, 5 window}
//   98    OPEN_OK          TLV {3 stream, 5 window}
//   99    OPEN_REFUSED     TLV {3 stream, 7 reason}
//   100   DATA             u32 stream id, then 1..kMaxMuxDataChunk bytes
//   101   CREDIT           TLV {3 stream, 6 bytes}
//   102   SHUTDOWN_WRITE   TLV {3 stream}
//   103   CLOSE            TLV {3 stream}
//   104   RESET            TLV {3 stream, 7 reason}
//
// Integers are u32 unless noted. Unknown tags are skipped; a missing required
// field, a field of the wrong width, stream id 0 or a payload over
// kMaxMuxPayload makes the message malformed (ErrorCode::kProtocol, saying
// what and where).
//
// Usage:
//   std::string wire;
//   appendMuxMessage(wire, MuxMessage::open(1, kAgentPort, 256 * 1024));
//   auto message = decodeMuxMessage(frame.type, frame.payload);
//   if (!message) fail(message.error().message());
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "agent/frame.h"
#include "microvm/result.h"

namespace microvm::agent {

inline constexpr uint32_t kMuxVersion = 1;
// Starts every HELLO payload; what a reader that lost its place scans for.
inline constexpr std::string_view kMuxMagic{"microvmX", 8};
// DATA carries at most this much, so one stream's frame delays the others by
// at most 64 KiB of pipe.
inline constexpr size_t kMaxMuxDataChunk = 64 * 1024;
// The last byte of every mux payload.
inline constexpr char kMuxEndMarker = '\xa5';
// The largest payload of any mux frame: a full DATA chunk, its stream id and
// the end marker.
inline constexpr uint32_t kMaxMuxPayload = 4 + kMaxMuxDataChunk + 1;
// Reasons (OPEN_REFUSED, RESET) are cut to this length when sent.
inline constexpr size_t kMaxMuxReason = 1024;

enum class MuxTag : uint16_t {
  kVersion = 1,
  kGeneration = 2,
  kStream = 3,
  kPort = 4,
  kWindow = 5,
  kCredit = 6,
  kReason = 7,
};

const char* muxTagName(uint16_t tag);
// "HELLO", "OPEN", ...; "frame type <n>" for another type.
std::string muxTypeName(FrameType type);

// One decoded message; the fields its type does not use are zero or empty.
struct MuxMessage {
  FrameType type = FrameType::kMuxHello;
  uint32_t stream = 0;
  uint32_t port = 0;        // OPEN
  uint32_t window = 0;      // OPEN, OPEN_OK: the sender's receive window
  uint32_t grant = 0;       // CREDIT: more bytes the receiver may send
  uint32_t version = 0;     // HELLO
  uint64_t generation = 0;  // HELLO
  std::string text;         // DATA: the bytes; OPEN_REFUSED, RESET: the reason

  static MuxMessage hello(uint64_t generation);
  static MuxMessage open(uint32_t stream, uint32_t port, uint32_t window);
  static MuxMessage openOk(uint32_t stream, uint32_t window);
  static MuxMessage openRefused(uint32_t stream, std::string_view reason);
  static MuxMessage data(uint32_t stream, std::string_view bytes);
  static MuxMessage credit(uint32_t stream, uint32_t bytes);
  static MuxMessage shutdownWrite(uint32_t stream);
  static MuxMessage close(uint32_t stream);
  static MuxMessage reset(uint32_t stream, std::string_view reason);
};

// Appends the message as one frame. DATA must hold 1..kMaxMuxDataChunk bytes
// (the endpoint chunks); reasons longer than kMaxMuxReason are cut.
void appendMuxMessage(std::string& out, const MuxMessage& message);

// Decodes the payload of a frame of a mux type (kMuxHello..kMuxReset); an
// error for any other type, and for anything malformed.
Result<MuxMessage> decodeMuxMessage(FrameType type, std::string_view payload);

}  // namespace microvm::agent
