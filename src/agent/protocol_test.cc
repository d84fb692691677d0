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

TEST(ProtocolTest, HardeningFieldsRoundTrip) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  spec.mounts = {{"vol0", "/data", "9p", "", true}, {"", "/scratch", "tmpfs", "size=64m", false}};
  spec.sysctls = {"kernel.kptr_restrict=2"};
  spec.capabilities = (uint64_t{1} << 40) | 1;
  spec.no_new_privs = true;
  spec.open_stdin = true;
  spec.seccomp_default = "allow";
  spec.seccomp_rules = {"errno:1:unshare", "errno:1:keyctl"};
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.has_value());
  ASSERT_EQ(decoded->mounts.size(), 2u);
  EXPECT_EQ(decoded->mounts[0].target, "/data");
  EXPECT_TRUE(decoded->mounts[0].readonly);
  EXPECT_EQ(decoded->mounts[1].options, "size=64m");
  EXPECT_FALSE(decoded->mounts[1].readonly);
  EXPECT_EQ(decoded->sysctls, spec.sysctls);
  EXPECT_EQ(decoded->capabilities, spec.capabilities);
  EXPECT_TRUE(decoded->no_new_privs);
  EXPECT_TRUE(decoded->open_stdin);
  EXPECT_EQ(decoded->seccomp_default, "allow");
  EXPECT_EQ(decoded->seccomp_rules, spec.seccomp_rules);
}

TEST(ProtocolTest, NetworkFieldsRoundTripAndAreOmittedWhenEmpty) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  std::string without = encodeSpec(spec);
  spec.net_address4 = "10.0.2.15/24";
  spec.net_gateway4 = "10.0.2.2";
  spec.net_address6 = "fd00::15/64";
  spec.net_gateway6 = "fd00::2";
  spec.etc_hosts = "127.0.0.1\tlocalhost\n";
  spec.etc_resolv_conf = "nameserver 10.0.2.3\n";
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->net_address4, spec.net_address4);
  EXPECT_EQ(decoded->net_gateway4, spec.net_gateway4);
  EXPECT_EQ(decoded->net_address6, spec.net_address6);
  EXPECT_EQ(decoded->net_gateway6, spec.net_gateway6);
  EXPECT_EQ(decoded->etc_hosts, spec.etc_hosts);
  EXPECT_EQ(decoded->etc_resolv_conf, spec.etc_resolv_conf);
  // A spec without networking encodes as before: no new tags at all.
  auto plain = decodeSpec(without);
  ASSERT_TRUE(plain.has_value());
  EXPECT_TRUE(plain->net_address4.empty());
  EXPECT_EQ(without.find("10.0.2"), std::string::npos);
}

TEST(ProtocolTest, MalformedMountIsRejected) {
  EXPECT_FALSE(decodeMount(std::string("a\0b\0c\0d", 7)).has_value());
  EXPECT_FALSE(decodeMount(std::string("a\0b\0c\0d\0maybe", 13)).has_value());
  EXPECT_TRUE(decodeMount(std::string("a\0b\0c\0d\0ro", 10)).has_value());
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
