#include "net/slirp_network.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

namespace microvm::net {
namespace {

std::span<const uint8_t> bytesOf(const std::string& text) {
  // SAFETY: viewing chars as bytes; uint8_t may alias any object.
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

std::string textOf(std::span<const uint8_t> bytes) {
  // SAFETY: viewing bytes as chars, for comparisons.
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

std::string framed(const std::vector<std::string>& frames) {
  std::string stream;
  for (const auto& frame : frames) appendStreamFrame(stream, bytesOf(frame));
  return stream;
}

void feed(StreamFrameReader& reader, std::string_view bytes) {
  std::span<uint8_t> space = reader.prepare(bytes.size() + 7);  // more room than used, as read() does
  std::memcpy(space.data(), bytes.data(), bytes.size());
  reader.commit(bytes.size());
}

std::vector<std::string> drain(StreamFrameReader& reader) {
  std::vector<std::string> frames;
  while (auto frame = reader.next()) frames.push_back(textOf(*frame));
  return frames;
}

// libslirp 4.7's slirp_connection_info() text: RecvQ is what a connection
// took from the guest and has yet to write to its host socket.
TEST(TcpBytesForHost, AddsTheRecvQOfEveryTcpRow) {
  const char* info =
      "  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\n"
      "  TCP[HOST_FORWARD]  12       127.0.0.1  8080       10.0.2.15    80     0     0\n"
      "  TCP[CLOSE_WAIT]    18       10.0.2.15 47968        10.0.2.2 47126 177665     0\n"
      "  TCP[ESTABLISHED]   19       10.0.2.15 47970        10.0.2.2   443    10  4096\n"
      "  UDP[236 sec]       24       10.0.2.15 35061        10.0.2.3    53   512     0\n";
  EXPECT_EQ(tcpBytesForHost(info), 177665u + 10u);
}

TEST(TcpBytesForHost, NoConnectionsOrRowsItCannotReadCountNothing) {
  EXPECT_EQ(tcpBytesForHost(""), 0u);
  EXPECT_EQ(tcpBytesForHost("  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\n"), 0u);
  EXPECT_EQ(tcpBytesForHost("  TCP[ESTABLISHED]\n  TCP[X] 1 a 2 b 3 -5 0\n  TCP[Y] 1 a 2 b 3 9x 0"), 0u);
}

TEST(StreamFrameReader, SplitsFramesAcrossReadsOfAnySize) {
  std::vector<std::string> frames = {"", "a", std::string(1500, 'b'), std::string(StreamFrameReader::kMaxFrame, 'c')};
  std::string stream = framed(frames);
  EXPECT_EQ(stream.substr(0, 9), std::string("\0\0\0\0\0\0\0\1a", 9));
  for (size_t chunk : {size_t{1}, size_t{3}, size_t{4}, size_t{5}, size_t{1000}, stream.size()}) {
    StreamFrameReader reader;
    std::vector<std::string> got;
    for (size_t at = 0; at < stream.size(); at += chunk) {
      feed(reader, std::string_view(stream).substr(at, chunk));
      for (auto& frame : drain(reader)) got.push_back(std::move(frame));
    }
    EXPECT_EQ(got, frames) << "chunk " << chunk;
    EXPECT_EQ(reader.buffered(), 0u);
    EXPECT_FALSE(reader.corrupt());
  }
}

TEST(StreamFrameReader, KeepsAPartialFrameAndCommitsOnlyWhatWasRead) {
  StreamFrameReader reader;
  std::string stream = framed({"hello", "world"});
  feed(reader, std::string_view(stream).substr(0, 12));
  EXPECT_EQ(drain(reader), std::vector<std::string>{"hello"});
  EXPECT_EQ(reader.buffered(), 3u);
  (void)reader.prepare(100);
  reader.commit(0);  // read() returned nothing
  EXPECT_EQ(reader.buffered(), 3u);
  feed(reader, std::string_view(stream).substr(12));
  EXPECT_EQ(drain(reader), std::vector<std::string>{"world"});
}

TEST(StreamFrameReader, AnOversizedLengthCorruptsTheStreamForGood) {
  StreamFrameReader reader;
  std::string stream = framed({"ok"});
  uint32_t too_long = StreamFrameReader::kMaxFrame + 1;
  stream += std::string{static_cast<char>(too_long >> 24), static_cast<char>(too_long >> 16),
                        static_cast<char>(too_long >> 8), static_cast<char>(too_long)};
  stream += framed({"after"});
  feed(reader, stream);
  EXPECT_EQ(drain(reader), std::vector<std::string>{"ok"});
  EXPECT_TRUE(reader.corrupt());
  feed(reader, framed({"more"}));
  EXPECT_FALSE(reader.next());
  reader.reset();
  EXPECT_FALSE(reader.corrupt());
  EXPECT_EQ(reader.buffered(), 0u);
}

// A reply that fills the queue for QEMU makes the runner write at once; if
// QEMU is gone that write closes the stream in the middle of a batch of
// guest frames. The rest of the batch must not be handled (it used to be
// read from the emptied buffer).
TEST(SlirpNetwork, StopsReadingFramesWhenAWriteClosesTheStream) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int fds[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
  UniqueFd qemu(fds[0]);
  auto network = SlirpNetwork::create(*loop, UniqueFd(fds[1]), {});
  ASSERT_TRUE(network) << network.error().message();
  int handled = 0;
  (*network)->setGuestFrameHook([&](std::span<const uint8_t>, std::vector<std::string>& to_guest) {
    ++handled;
    to_guest.push_back(std::string(512 * 1024, 'x'));  // past the flush threshold
    return false;
  });
  std::string stream = framed({std::string(60, 'a'), std::string(60, 'b'), std::string(60, 'c')});
  ASSERT_EQ(::write(qemu.get(), stream.data(), stream.size()), static_cast<ssize_t>(stream.size()));
  qemu.reset();  // QEMU exits: the frames are still readable, writes fail with EPIPE
  for (int i = 0; i < 10 && (*network)->connected(); ++i) ASSERT_TRUE(loop->runOnce(std::chrono::milliseconds(100)));
  EXPECT_FALSE((*network)->connected());
  EXPECT_EQ(handled, 1);
  EXPECT_EQ((*network)->stats().frames_from_guest, 1u);
}

}  // namespace
}  // namespace microvm::net

namespace microvm::net {
namespace {

TEST(SlirpState, RoundTripsAndRefusesTruncatedCorruptedOrForeignFiles) {
  SlirpState state{4, std::string("libslirp's bytes\0with a nul", 27)};
  std::string file = encodeSlirpState(state);
  auto decoded = decodeSlirpState(file);
  ASSERT_TRUE(decoded) << decoded.error().message();
  EXPECT_EQ(decoded->version, 4);
  EXPECT_EQ(decoded->bytes, state.bytes);

  auto refusal = [](std::string_view bytes) {
    auto result = decodeSlirpState(bytes);
    return result ? std::string("accepted") : result.error().message();
  };
  EXPECT_NE(refusal(file.substr(0, file.size() - 1)).find("truncated"), std::string::npos);
  EXPECT_NE(refusal(file + "x").find("trailing"), std::string::npos);
  std::string flipped = file;
  flipped.back() ^= 0x20;
  EXPECT_NE(refusal(flipped).find("checksum mismatch"), std::string::npos);
  EXPECT_NE(refusal("MVNX" + file.substr(4)).find("not a saved network state"), std::string::npos);
  EXPECT_NE(refusal("").find("not a saved network state"), std::string::npos);
  std::string huge = file;
  huge[8] = huge[9] = huge[10] = huge[11] = '\x7f';
  EXPECT_NE(refusal(huge).find("more than any stack saves"), std::string::npos);
}

// A stack's saved state loads into a new stack, as a restored copy's does.
TEST(SlirpNetwork, ItsStateLoadsIntoANewStack) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  std::vector<std::unique_ptr<SlirpNetwork>> stacks;
  std::vector<UniqueFd> qemu_ends;
  for (int i = 0; i < 2; ++i) {
    int fds[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    qemu_ends.emplace_back(fds[0]);
    auto network = SlirpNetwork::create(*loop, UniqueFd(fds[1]), {});
    ASSERT_TRUE(network) << network.error().message();
    stacks.push_back(std::move(*network));
  }
  SlirpState saved = stacks[0]->saveState();
  EXPECT_GT(saved.version, 0);
  EXPECT_FALSE(saved.bytes.empty());
  auto loaded = stacks[1]->loadState(*decodeSlirpState(encodeSlirpState(saved)));
  EXPECT_TRUE(loaded) << loaded.error().message();
  EXPECT_EQ(stacks[1]->saveState().bytes, saved.bytes);
  // Cut short, libslirp refuses it rather than reading past the end.
  SlirpState cut = saved;
  cut.bytes.resize(cut.bytes.size() / 2);
  EXPECT_FALSE(stacks[1]->loadState(cut));
  SlirpState newer = saved;
  newer.version = saved.version + 1;
  EXPECT_FALSE(stacks[1]->loadState(newer));
}

}  // namespace
}  // namespace microvm::net
