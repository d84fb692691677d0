#include "agent/protocol.h"

#include <gtest/gtest.h>

namespace microvm::agent {
namespace {

TEST(ProtocolTest, FrameRoundTripsAcrossArbitraryChunks) {
  std::string wire;
  appendFrame(wire, FrameType::kStdout, "hello");
  appendFrame(wire, FrameType::kExit, encodeU32(3));
  appendFrame(wire, FrameType::kStderr, "");

  FrameReader reader;
  std::vector<Frame> frames;
  for (char byte : wire) {  // worst case: one byte at a time
    reader.feed(std::string_view(&byte, 1));
    while (auto frame = reader.next()) frames.push_back(*frame);
  }
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].type, FrameType::kStdout);
  EXPECT_EQ(frames[0].payload, "hello");
  EXPECT_EQ(decodeU32(frames[1].payload), 3u);
  EXPECT_EQ(frames[2].payload, "");
  EXPECT_FALSE(reader.failed());
}

TEST(ProtocolTest, OversizedLengthFailsTheStreamInsteadOfAllocating) {
  std::string wire;
  putLe16(wire, static_cast<uint16_t>(FrameType::kStdout));
  putLe16(wire, 0);
  putLe32(wire, kMaxPayload + 1);
  FrameReader reader;
  reader.feed(wire);
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_TRUE(reader.failed());
  reader.feed("more");
  EXPECT_FALSE(reader.next().has_value());
}

TEST(ProtocolTest, UnknownFrameTypesAreDeliveredForTheCallerToIgnore) {
  std::string wire;
  appendFrame(wire, static_cast<FrameType>(999), "x");
  FrameReader reader;
  reader.feed(wire);
  auto frame = reader.next();
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(static_cast<uint16_t>(frame->type), 999);
}

TEST(ProtocolTest, SpecRoundTrips) {
  WorkloadSpec spec;
  spec.argv = {"/bin/sh", "-c", std::string("a\0b", 3)};
  spec.env = {"A=1", "B="};
  spec.workdir = "/srv";
  spec.user = "app:staff";
  spec.hostname = "box";
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->argv, spec.argv);
  EXPECT_EQ(decoded->env, spec.env);
  EXPECT_EQ(decoded->workdir, "/srv");
  EXPECT_EQ(decoded->user, "app:staff");
  EXPECT_EQ(decoded->hostname, "box");
  EXPECT_EQ(decoded->root_device, "/dev/vda");
}

TEST(ProtocolTest, TruncatedSpecIsRejectedAtEveryLength) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  std::string wire = encodeSpec(spec);
  // Dropping the last field's bytes one by one must never read past the end.
  for (size_t cut = 1; cut < 6 + spec.argv[0].size(); ++cut) {
    auto decoded = decodeSpec(std::string_view(wire).substr(0, 6 + spec.argv[0].size() - cut));
    EXPECT_FALSE(decoded.has_value()) << "cut " << cut;
  }
}

TEST(ProtocolTest, SpecWithoutArgvIsRejected) {
  WorkloadSpec spec;
  EXPECT_FALSE(decodeSpec(encodeSpec(spec)).has_value());
}

TEST(ProtocolTest, DecodeU32NeedsExactlyFourBytes) {
  EXPECT_FALSE(decodeU32("abc").has_value());
  EXPECT_FALSE(decodeU32("abcde").has_value());
  EXPECT_EQ(decodeU32(encodeU32(0xdeadbeef)), 0xdeadbeefu);
}

}  // namespace
}  // namespace microvm::agent
