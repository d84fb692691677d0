// The stream multiplexer's wire messages (agent/stream_mux_wire.h): each
// message survives a round trip, and each malformed payload is refused with
// a reason that says what was wrong.
#include "agent/stream_mux_wire.h"

#include <gtest/gtest.h>

#include <string>

#include "agent/frame.h"
#include "agent/tlv.h"

namespace microvm::agent {
namespace {

template <typename T>
std::string reason(const Result<T>& result) {
  if (result.ok()) return "(decoded)";
  EXPECT_EQ(result.error().code(), ErrorCode::kProtocol);
  return result.error().message();
}

// A hand-made payload with the end marker every mux payload ends with.
std::string ended(std::string payload) {
  payload.push_back(kMuxEndMarker);
  return payload;
}

// The message decoded back from its one frame.
MuxMessage roundTrip(const MuxMessage& message) {
  std::string wire;
  appendMuxMessage(wire, message);
  FrameReader reader;
  reader.feed(wire);
  auto frame = reader.next();
  EXPECT_TRUE(frame.has_value());
  EXPECT_FALSE(reader.next().has_value());
  auto decoded = decodeMuxMessage(frame->type, frame->payload);
  EXPECT_TRUE(decoded.ok()) << reason(decoded);
  return decoded.ok() ? *decoded : MuxMessage{};
}

TEST(StreamMuxWireTest, EveryMessageRoundTrips) {
  auto hello = roundTrip(MuxMessage::hello(0x0102030405060708ull));
  EXPECT_EQ(hello.type, FrameType::kMuxHello);
  EXPECT_EQ(hello.version, kMuxVersion);
  EXPECT_EQ(hello.generation, 0x0102030405060708ull);

  auto open = roundTrip(MuxMessage::open(5, 1024, 262144));
  EXPECT_EQ(open.type, FrameType::kMuxOpen);
  EXPECT_EQ(open.stream, 5u);
  EXPECT_EQ(open.port, 1024u);
  EXPECT_EQ(open.window, 262144u);

  auto ok = roundTrip(MuxMessage::openOk(5, 4096));
  EXPECT_EQ(ok.type, FrameType::kMuxOpenOk);
  EXPECT_EQ(ok.window, 4096u);

  auto refused = roundTrip(MuxMessage::openRefused(5, "no listener on port 9"));
  EXPECT_EQ(refused.type, FrameType::kMuxOpenRefused);
  EXPECT_EQ(refused.text, "no listener on port 9");

  auto data = roundTrip(MuxMessage::data(7, std::string("a\0b", 3)));
  EXPECT_EQ(data.type, FrameType::kMuxData);
  EXPECT_EQ(data.stream, 7u);
  EXPECT_EQ(data.text, std::string("a\0b", 3));

  auto credit = roundTrip(MuxMessage::credit(7, 65536));
  EXPECT_EQ(credit.type, FrameType::kMuxCredit);
  EXPECT_EQ(credit.grant, 65536u);

  EXPECT_EQ(roundTrip(MuxMessage::shutdownWrite(9)).type, FrameType::kMuxShutdownWrite);
  EXPECT_EQ(roundTrip(MuxMessage::close(9)).type, FrameType::kMuxClose);
  auto reset = roundTrip(MuxMessage::reset(9, "gone"));
  EXPECT_EQ(reset.type, FrameType::kMuxReset);
  EXPECT_EQ(reset.stream, 9u);
  EXPECT_EQ(reset.text, "gone");
}

TEST(StreamMuxWireTest, DataIsTheStreamIdThenRawBytes) {
  std::string wire;
  appendMuxMessage(wire, MuxMessage::data(3, "hi"));
  EXPECT_EQ(wire, std::string("\x64\x00\x00\x00\x07\x00\x00\x00"
                              "\x03\x00\x00\x00"
                              "hi\xa5",
                              15));
}

TEST(StreamMuxWireTest, HelloStartsWithTheMagic) {
  std::string wire;
  appendMuxMessage(wire, MuxMessage::hello(1));
  EXPECT_EQ(wire.substr(kHeaderSize, kMuxMagic.size()), kMuxMagic);
}

TEST(StreamMuxWireTest, LongReasonsAreCut) {
  auto reset = roundTrip(MuxMessage::reset(1, std::string(5000, 'x')));
  EXPECT_EQ(reset.text.size(), kMaxMuxReason);
}

TEST(StreamMuxWireTest, UnknownTagsAreSkipped) {
  std::string payload;
  TlvWriter tlv(payload);
  tlv.u32(uint16_t{99}, 1);
  tlv.u32(MuxTag::kStream, 3);
  auto close = decodeMuxMessage(FrameType::kMuxClose, ended(payload));
  ASSERT_TRUE(close.ok()) << reason(close);
  EXPECT_EQ(close->stream, 3u);
}

TEST(StreamMuxWireTest, MalformedPayloadsSayWhatIsWrong) {
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxData, ended("ab"))),
            "mux DATA: 2 byte(s) are too few for a stream id");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxData, ended(std::string("\3\0\0\0", 4)))),
            "mux DATA of stream 3: no bytes");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxData, ended(std::string("\0\0\0\0x", 5)))), "mux DATA: stream id 0");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxHello, ended("notmagic"))), "mux HELLO: no magic at the start");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kExit, "")), "mux: frame type 20 is not a mux message");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxData, std::string("\3\0\0\0x\0", 6))),
            "mux DATA: no end marker: the frame was cut short");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxData, std::string(kMaxMuxPayload + 1, 'x'))),
            "mux DATA: payload of 65542 bytes exceeds the 65541-byte limit");

  std::string hello_without_generation(kMuxMagic);
  TlvWriter(hello_without_generation).u32(MuxTag::kVersion, 1);
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxHello, ended(hello_without_generation))),
            "mux HELLO: the generation field is missing");

  std::string open_without_port;
  TlvWriter(open_without_port).u32(MuxTag::kStream, 1);
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxOpen, ended(open_without_port))),
            "mux OPEN: the port field is missing");

  std::string credit_without_bytes;
  TlvWriter(credit_without_bytes).u32(MuxTag::kStream, 1);
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxCredit, ended(credit_without_bytes))),
            "mux CREDIT: the credit field is missing");

  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxClose, ended(""))), "mux CLOSE: the stream field is missing");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxClose, "")), "mux CLOSE: no end marker: the frame was cut short");

  std::string stream_zero;
  TlvWriter(stream_zero).u32(MuxTag::kStream, 0);
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxReset, ended(stream_zero))), "mux RESET: stream id 0");

  std::string short_stream;
  TlvWriter(short_stream).bytes(MuxTag::kStream, "ab");
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxShutdownWrite, ended(short_stream))),
            "mux SHUTDOWN_WRITE: field 3 (stream) at offset 0: a 4-byte integer expected, got 2 byte(s)");

  std::string short_generation(kMuxMagic);
  TlvWriter(short_generation).u32(MuxTag::kGeneration, 1);
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxHello, ended(short_generation))),
            "mux HELLO: field 2 (generation) at offset 0: an 8-byte integer expected, got 4 byte(s)");

  std::string truncated;
  TlvWriter(truncated).u32(MuxTag::kStream, 1);
  truncated.resize(truncated.size() - 1);
  EXPECT_EQ(reason(decodeMuxMessage(FrameType::kMuxOpenOk, ended(truncated))),
            "mux OPEN_OK: field 3 (stream) at offset 0: length 4 exceeds the 3 byte(s) left in the 9-byte payload");
}

}  // namespace
}  // namespace microvm::agent
