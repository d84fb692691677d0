// Unit tests of init's control port over a socket pair (the framing is
// agent::FramedConnection's; here: what init makes of the host's frames and
// of a host that goes away).
#include "guest/control_port.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "agent/tlv.h"

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

// The host side of a clock probe: reads it, then sends what came before its
// answer (input, the answer to an older probe) and the answer.
void answerClockProbe(int host, int64_t realtime_ns) {
  pollfd watch{host, POLLIN, 0};
  ASSERT_EQ(::poll(&watch, 1, 5000), 1);
  char buffer[64];
  ssize_t got = ::read(host, buffer, sizeof buffer);
  ASSERT_GT(got, 0);
  agent::FrameReader reader;
  reader.feed(std::string_view(buffer, static_cast<size_t>(got)));
  auto probe = reader.next();
  ASSERT_TRUE(probe.has_value());
  ASSERT_EQ(probe->type, agent::FrameType::kClockProbe);
  ASSERT_EQ(probe->payload.size(), 8u);
  uint64_t echo = agent::getLe64(probe->payload.data());
  std::string wire;
  agent::appendFrame(wire, agent::FrameType::kStdin, "typed early");
  agent::appendFrame(wire, agent::FrameType::kClock, agent::encodeClock({realtime_ns - 5'000'000'000, echo - 1}));
  agent::appendFrame(wire, agent::FrameType::kClock, agent::encodeClock({realtime_ns, echo}));
  ASSERT_EQ(::write(host, wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
}

TEST_F(ControlPortTest, AskHostClockTakesItsOwnAnswerPlusHalfTheRoundTripAndKeepsWhatCameFirst) {
  constexpr int64_t kHostTime = 1'765'000'000'000'000'000;
  std::thread host(answerClockProbe, host_.get(), kHostTime);
  auto time = askHostClock(*port_, milliseconds(5000));
  host.join();
  ASSERT_TRUE(time.ok()) << time.error().message();
  EXPECT_GE(*time, kHostTime);  // not the older probe's answer, 5 s earlier
  EXPECT_LT(*time, kHostTime + 500'000'000);
  auto kept = port_->nextFrame();
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(kept->type, agent::FrameType::kStdin);
  EXPECT_EQ(kept->payload, "typed early");
}

TEST_F(ControlPortTest, AskHostClockGivesUpWhenTheHostDoesNotAnswer) {
  auto time = askHostClock(*port_, milliseconds(20));
  ASSERT_FALSE(time.ok());
  EXPECT_EQ(time.error().code(), ErrorCode::kTimeout);
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
