// Unit tests of init's control port over a socket pair (the framing is
// agent::FramedConnection's; here: what init makes of the host's frames and
// of a host that goes away).
#include "guest/control_port.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace microvm::guest {
namespace {

class ControlPortTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
    port_.emplace(UniqueFd(fds[0]));
    host_.reset(fds[1]);
  }

  void hostSends(agent::FrameType type, std::string_view payload) {
    std::string wire;
    agent::appendFrame(wire, type, payload);
    ASSERT_EQ(::write(host_.get(), wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  }

  std::optional<ControlPort> port_;
  UniqueFd host_;
};

TEST_F(ControlPortTest, SendsFramesTheHostCanRead) {
  ASSERT_TRUE(port_->send(agent::FrameType::kHello, agent::encodeU32(agent::kProtocolVersion)).ok());
  char buffer[64];
  ssize_t got = ::read(host_.get(), buffer, sizeof buffer);
  ASSERT_GT(got, 0);
  agent::FrameReader reader;
  reader.feed(std::string_view(buffer, static_cast<size_t>(got)));
  auto frame = reader.next();
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(frame->type, agent::FrameType::kHello);
  EXPECT_EQ(*agent::decodeU32(frame->payload), agent::kProtocolVersion);
}

TEST_F(ControlPortTest, ReceiveSpecSkipsFramesBeforeItAndKeepsThoseAfter) {
  agent::WorkloadSpec sent;
  sent.argv = {"/bin/true"};
  sent.hostname = "box";
  hostSends(agent::FrameType::kSignal, agent::encodeU32(15));
  hostSends(agent::FrameType::kSpec, agent::encodeSpec(sent));
  hostSends(agent::FrameType::kStdin, "early input");
  auto spec = receiveSpec(*port_);
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_EQ(spec->argv, sent.argv);
  EXPECT_EQ(spec->hostname, "box");
  // What came with the spec stays in the reader for the supervisor.
  port_->receive();
  auto after = port_->nextFrame();
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->type, agent::FrameType::kStdin);
  EXPECT_EQ(after->payload, "early input");
}

TEST_F(ControlPortTest, AMalformedSpecIsAProtocolError) {
  hostSends(agent::FrameType::kSpec, std::string(3, '\xff'));
  auto spec = receiveSpec(*port_);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.error().code(), ErrorCode::kProtocol);
}

TEST_F(ControlPortTest, WaitForTimesOut) {
  auto ack = port_->waitFor(agent::FrameType::kExitAck, Clock::now() + milliseconds(20));
  ASSERT_FALSE(ack.ok());
  EXPECT_EQ(ack.error().message(), "control port: timed out waiting for frame type " +
                                       std::to_string(static_cast<unsigned>(agent::FrameType::kExitAck)));
  EXPECT_TRUE(port_->connected());
}

TEST_F(ControlPortTest, AHostThatClosesIsGoneAndSendsThenFail) {
  host_.reset();
  auto ack = port_->waitFor(agent::FrameType::kExitAck, std::nullopt);
  ASSERT_FALSE(ack.ok());
  EXPECT_EQ(ack.error().message(), "control port: host disconnected");
  EXPECT_FALSE(port_->connected());
  auto sent = port_->send(agent::FrameType::kExit, agent::encodeU32(0));
  ASSERT_FALSE(sent.ok());
  EXPECT_EQ(sent.error().message(), "control port: host disconnected");
}

TEST_F(ControlPortTest, ACorruptStreamStopsInput) {
  std::string header;
  agent::putLe16(header, static_cast<uint16_t>(agent::FrameType::kStdin));
  agent::putLe16(header, 0);
  agent::putLe32(header, agent::kMaxPayload + 1);
  ASSERT_EQ(::write(host_.get(), header.data(), header.size()), static_cast<ssize_t>(header.size()));
  auto spec = receiveSpec(*port_);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.error().message().rfind("control port: corrupt frame stream from the host: frame at stream offset 0", 0), 0u)
      << spec.error().message();
  EXPECT_TRUE(port_->corrupt());
}

}  // namespace
}  // namespace microvm::guest
