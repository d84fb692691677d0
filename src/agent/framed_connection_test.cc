#include "agent/framed_connection.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>

namespace microvm::agent {
namespace {

using std::chrono::milliseconds;

struct Pair {
  UniqueFd ours;
  UniqueFd theirs;
};

Pair socketPair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// A pipe stands for the virtio-serial port: not a socket, so read/write.
Pair pipePair() {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
  return {UniqueFd(fds[1]), UniqueFd(fds[0])};  // ours writes, theirs reads
}

std::string readAvailable(int fd) {
  std::string bytes;
  char buffer[65536];
  for (;;) {
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got <= 0) return bytes;
    bytes.append(buffer, static_cast<size_t>(got));
  }
}

TEST(FramedConnection, SendsFramesAndReceivesThemWhateverTheChunking) {
  auto [ours, theirs] = socketPair();
  FramedConnection sender(std::move(ours));
  ASSERT_TRUE(sender.send(FrameType::kSignal, encodeU32(15)));
  ASSERT_TRUE(sender.send(FrameType::kStdin, "hello"));
  EXPECT_EQ(sender.pending(), 0u);

  FramedConnection receiver(std::move(theirs));
  auto first = receiver.receive(milliseconds(1000));
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->type, FrameType::kSignal);
  EXPECT_EQ(*decodeU32(first->payload), 15u);
  auto second = receiver.receive(milliseconds(1000));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->type, FrameType::kStdin);
  EXPECT_EQ(second->payload, "hello");
  EXPECT_FALSE(receiver.broken());
}

TEST(FramedConnection, QueuedFramesWaitForWriteSome) {
  auto [ours, theirs] = pipePair();
  FramedConnection connection(std::move(ours));
  connection.queue(FrameType::kStdout, "abc");
  EXPECT_EQ(connection.pending(), kHeaderSize + 3);
  EXPECT_EQ(readAvailable(theirs.get()), "");
  ASSERT_TRUE(connection.writeSome());
  EXPECT_EQ(connection.pending(), 0u);
  std::string expected;
  appendFrame(expected, FrameType::kStdout, "abc");
  EXPECT_EQ(readAvailable(theirs.get()), expected);
}

TEST(FramedConnection, ABacklogThePeerDoesNotTakeStaysPending) {
  auto [ours, theirs] = pipePair();
  FramedConnection connection(std::move(ours), {.write_idle_timeout = milliseconds(50)});
  std::string big(kMaxPayload, 'x');
  for (int i = 0; i < 4; ++i) connection.queue(FrameType::kStdout, big);
  ASSERT_TRUE(connection.writeSome());
  EXPECT_GT(connection.pending(), 0u);  // the pipe holds far less than 4 MiB
  // Nobody reads: flush gives up after the idle timeout and calls it broken.
  EXPECT_FALSE(connection.flush());
  EXPECT_TRUE(connection.broken());
  EXPECT_EQ(connection.brokenErrno(), ETIMEDOUT);
}

TEST(FramedConnection, FramesSentBeforeAnEofAreStillDelivered) {
  auto [ours, theirs] = socketPair();
  std::string wire;
  appendFrame(wire, FrameType::kData, "last words");
  ASSERT_EQ(::write(theirs.get(), wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  theirs.reset();
  FramedConnection connection(std::move(ours));
  auto frame = connection.receive(milliseconds(1000));
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(frame->payload, "last words");
  EXPECT_FALSE(connection.receive(milliseconds(1000)).has_value());
  EXPECT_TRUE(connection.broken());
  EXPECT_EQ(connection.brokenErrno(), 0);  // an orderly EOF
}

TEST(FramedConnection, AWriteToAGonePeerBreaksTheConnectionWithoutSigpipe) {
  auto [ours, theirs] = socketPair();
  theirs.reset();
  FramedConnection connection(std::move(ours));
  EXPECT_FALSE(connection.send(FrameType::kResult, "x"));  // MSG_NOSIGNAL: EPIPE, not a signal
  EXPECT_TRUE(connection.broken());
  EXPECT_EQ(connection.brokenErrno(), EPIPE);
  // Nothing waits for a peer that is gone: the backlog is dropped, and so is
  // what is queued later (the runner stops reading stdin on a full backlog).
  EXPECT_EQ(connection.pending(), 0u);
  connection.queue(FrameType::kStdin, "more");
  EXPECT_EQ(connection.pending(), 0u);
}

TEST(FramedConnection, AnOversizedFrameMarksTheStreamCorrupt) {
  auto [ours, theirs] = socketPair();
  std::string header;
  putLe16(header, static_cast<uint16_t>(FrameType::kData));
  putLe16(header, 0);
  putLe32(header, kMaxPayload + 1);
  ASSERT_EQ(::write(theirs.get(), header.data(), header.size()), static_cast<ssize_t>(header.size()));
  FramedConnection connection(std::move(ours));
  EXPECT_FALSE(connection.receive(milliseconds(1000)).has_value());
  EXPECT_TRUE(connection.corrupt());
  EXPECT_NE(connection.corruption().find("exceeds"), std::string::npos) << connection.corruption();
}

TEST(FramedConnection, AReadRoundIsBounded) {
  auto [ours, theirs] = socketPair();
  std::string wire;
  for (int i = 0; i < 40; ++i) appendFrame(wire, FrameType::kData, std::string(4096, 'y'));
  ASSERT_EQ(::write(theirs.get(), wire.data(), wire.size()), static_cast<ssize_t>(wire.size()));
  FramedConnection connection(std::move(ours), {.max_read_round = 1});
  ASSERT_TRUE(connection.readSome());
  int frames = 0;
  while (connection.nextFrame()) ++frames;
  // One read of at most 64 KiB, not all 40 frames (about 164 KiB).
  EXPECT_GT(frames, 0);
  EXPECT_LT(frames, 40);
}

}  // namespace
}  // namespace microvm::agent
