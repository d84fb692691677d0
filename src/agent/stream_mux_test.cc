// The stream multiplexer's endpoints (agent/stream_mux.h), wired back to back
// in memory with the pipe cut at random byte boundaries: opening, refusing,
// data both ways, flow control, shutdown/close/reset, the generation reset
// of a snapshot restore, malformed input and the limits.
#include "agent/stream_mux.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "agent/frame.h"

namespace microvm::agent {
namespace {

using Kind = StreamMuxEvent::Kind;
using Role = StreamMuxEndpoint::Role;

constexpr uint32_t kPort = 1024;

// A host and a guest endpoint and the pipe between them.
class MuxPair {
 public:
  explicit MuxPair(StreamMuxLimits limits = {}, uint64_t generation = 7)
      : host(Role::kHost, generation, limits), guest(Role::kGuest, 0, limits) {}

  // Moves every queued byte both ways, in random chunks, until both are quiet.
  void pump() {
    while (!host.pendingOutput().empty() || !guest.pendingOutput().empty()) {
      deliver(host, guest);
      deliver(guest, host);
    }
    collect();
  }

  // Moves `from`'s output to `to`, cut at random boundaries.
  void deliver(StreamMuxEndpoint& from, StreamMuxEndpoint& to) {
    std::string bytes(from.pendingOutput());
    from.outputWritten(bytes.size());
    size_t at = 0;
    while (at < bytes.size()) {
      size_t chunk = std::min<size_t>(bytes.size() - at, 1 + random_() % 3000);
      to.receive(std::string_view(bytes).substr(at, chunk));
      at += chunk;
      EXPECT_TRUE(to.invariantsHold());
    }
    collect();
  }

  void collect() {
    for (auto& e : host.takeEvents()) host_events.push_back(std::move(e));
    for (auto& e : guest.takeEvents()) guest_events.push_back(std::move(e));
  }

  // A stream opened by the host and accepted by the guest.
  uint32_t openAccepted() {
    auto id = host.open(kPort);
    EXPECT_TRUE(id.ok());
    pump();
    EXPECT_TRUE(guest.accept(*id).ok());
    pump();
    host_events.clear();  // kLive, kOpenRequested, kOpened: the setup's
    guest_events.clear();
    return *id;
  }

  std::mt19937 random_{12345};
  StreamMuxEndpoint host;
  StreamMuxEndpoint guest;
  std::vector<StreamMuxEvent> host_events;
  std::vector<StreamMuxEvent> guest_events;
};

// The events of one kind (and stream, unless 0), taken out of `events`.
std::vector<StreamMuxEvent> take(std::vector<StreamMuxEvent>& events, Kind kind, uint32_t stream = 0) {
  std::vector<StreamMuxEvent> out;
  std::vector<StreamMuxEvent> rest;
  for (auto& e : events) {
    bool match = e.kind == kind && (stream == 0 || e.stream == stream);
    (match ? out : rest).push_back(std::move(e));
  }
  events = std::move(rest);
  return out;
}

// All data of `stream` delivered so far, consumed at once.
std::string drain(StreamMuxEndpoint& end, std::vector<StreamMuxEvent>& events, uint32_t stream) {
  std::string bytes;
  for (auto& e : take(events, Kind::kData, stream)) bytes += e.text;
  if (!bytes.empty()) {
    EXPECT_TRUE(end.consume(stream, bytes.size()).ok());
  }
  return bytes;
}

std::string pattern(size_t size, char seed) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>(seed + i * 7 + i / 251);
  return out;
}

// The messages in a stretch of pipe bytes (padding skipped).
std::vector<MuxMessage> messagesIn(std::string_view bytes) {
  std::vector<MuxMessage> out;
  FrameReader reader;
  reader.feed(bytes);
  while (auto frame = reader.next()) {
    if (frame->type == FrameType{0}) continue;
    auto message = decodeMuxMessage(frame->type, frame->payload);
    EXPECT_TRUE(message.ok());
    if (message) {
      out.push_back(*message);
    }
  }
  return out;
}

TEST(StreamMuxTest, HelloMakesBothEndsLive) {
  MuxPair pair;
  EXPECT_FALSE(pair.host.live());
  EXPECT_GE(pair.host.pendingOutputSize(), kMuxResyncPadding);
  pair.pump();
  EXPECT_TRUE(pair.host.live());
  EXPECT_TRUE(pair.guest.live());
  EXPECT_EQ(pair.guest.generation(), 7u);
  EXPECT_EQ(take(pair.host_events, Kind::kLive).size(), 1u);
  EXPECT_EQ(take(pair.guest_events, Kind::kLive).size(), 1u);
}

TEST(StreamMuxTest, OpenAcceptAndDataBothWays) {
  MuxPair pair;
  auto id = pair.host.open(kPort);
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id % 2, 1u);
  EXPECT_EQ(pair.host.sendRoom(*id), 0u);  // not open until the guest accepts
  pair.pump();
  auto requested = take(pair.guest_events, Kind::kOpenRequested);
  ASSERT_EQ(requested.size(), 1u);
  EXPECT_EQ(requested[0].stream, *id);
  EXPECT_EQ(requested[0].port, kPort);
  ASSERT_TRUE(pair.guest.accept(*id).ok());
  pair.pump();
  ASSERT_EQ(take(pair.host_events, Kind::kOpened, *id).size(), 1u);

  // 1 MiB each way: four windows, so it takes CREDITs to get through.
  std::string up = pattern(1 << 20, 'a');
  std::string down = pattern(1 << 20, 'z');
  std::string got_up, got_down;
  size_t sent_up = 0, sent_down = 0;
  for (int round = 0; round < 1000 && (got_up.size() < up.size() || got_down.size() < down.size()); ++round) {
    auto n = pair.host.send(*id, std::string_view(up).substr(sent_up));
    ASSERT_TRUE(n.ok());
    sent_up += *n;
    auto m = pair.guest.send(*id, std::string_view(down).substr(sent_down));
    ASSERT_TRUE(m.ok());
    sent_down += *m;
    pair.pump();
    got_up += drain(pair.guest, pair.guest_events, *id);
    got_down += drain(pair.host, pair.host_events, *id);
    pair.pump();
  }
  EXPECT_TRUE(got_up == up);
  EXPECT_TRUE(got_down == down);
  EXPECT_TRUE(take(pair.host_events, Kind::kReset).empty());
  EXPECT_TRUE(take(pair.guest_events, Kind::kReset).empty());
}

// Many streams at once, each way, with small windows, readers of different
// speeds and the pipe cut at random: every byte arrives, in order, on its
// own stream, and every stream ends cleanly.
TEST(StreamMuxTest, ManyStreamsInterleavedKeepEveryByteInOrder) {
  StreamMuxLimits limits;
  limits.window = 8192;
  limits.max_output = 32768;
  MuxPair pair(limits);
  constexpr size_t kStreams = 12;
  struct Side {
    std::string sent, received;
    size_t sent_at = 0, unconsumed = 0;
    bool shut = false, closed = false;
  };
  std::vector<Side> up(kStreams), down(kStreams);  // host -> guest, guest -> host
  std::vector<uint32_t> ids;
  std::mt19937 random(7);
  for (size_t i = 0; i < kStreams; ++i) {
    ids.push_back(pair.openAccepted());
    up[i].sent = pattern(random() % 100000, static_cast<char>('a' + i));
    down[i].sent = pattern(random() % 100000, static_cast<char>('A' + i));
  }
  auto index = [&](uint32_t id) { return static_cast<size_t>(std::find(ids.begin(), ids.end(), id) - ids.begin()); };
  // Events of one end: data goes to `in` (what that end receives).
  auto absorb = [&](std::vector<StreamMuxEvent>& events, std::vector<Side>& in, std::vector<Side>& out) {
    for (const auto& e : events) {
      ASSERT_NE(e.kind, Kind::kReset) << e.text;
      ASSERT_NE(e.kind, Kind::kFailed) << e.text;
      if (e.kind == Kind::kData) {
        in[index(e.stream)].received += e.text;
        in[index(e.stream)].unconsumed += e.text.size();
      }
      if (e.kind == Kind::kClosed) in[index(e.stream)].closed = out[index(e.stream)].closed = true;
    }
    events.clear();
  };
  auto work = [&](StreamMuxEndpoint& end, std::vector<Side>& sending, std::vector<Side>& receiving, size_t i,
                  int round) {
    if (sending[i].closed) return;
    // Reading first: the shutdown below may end the stream on this end.
    Side& r = receiving[i];
    bool slow_reader = i % 4 == 0 && round % 10 != 0;
    if (r.unconsumed > 0 && !slow_reader) {
      size_t count = 1 + random() % r.unconsumed;
      ASSERT_TRUE(end.consume(ids[i], count).ok());
      r.unconsumed -= count;
    }
    Side& s = sending[i];
    if (s.sent_at < s.sent.size()) {
      size_t want = std::min<size_t>(s.sent.size() - s.sent_at, 1 + random() % 20000);
      auto n = end.send(ids[i], std::string_view(s.sent).substr(s.sent_at, want));
      ASSERT_TRUE(n.ok()) << n.error().message();
      s.sent_at += *n;
    }
    if (s.sent_at == s.sent.size() && !s.shut) {
      s.shut = true;
      ASSERT_TRUE(end.shutdownWrite(ids[i]).ok());
    }
  };
  for (int round = 0; round < 20000; ++round) {
    for (size_t i = 0; i < kStreams; ++i) {
      work(pair.host, up, down, i, round);
      work(pair.guest, down, up, i, round);
    }
    pair.pump();
    absorb(pair.guest_events, up, down);
    absorb(pair.host_events, down, up);
    if (pair.host.streamCount() == 0 && pair.guest.streamCount() == 0) break;
  }
  for (size_t i = 0; i < kStreams; ++i) {
    EXPECT_TRUE(up[i].received == up[i].sent) << "stream " << ids[i] << " host -> guest";
    EXPECT_TRUE(down[i].received == down[i].sent) << "stream " << ids[i] << " guest -> host";
  }
  EXPECT_EQ(pair.host.streamCount(), 0u);
  EXPECT_EQ(pair.guest.streamCount(), 0u);
}

TEST(StreamMuxTest, RefusedOpenEndsTheStreamWithTheReason) {
  MuxPair pair;
  auto id = pair.host.open(9);
  ASSERT_TRUE(id.ok());
  pair.pump();
  ASSERT_TRUE(pair.guest.refuse(*id, "no listener on port 9").ok());
  pair.pump();
  auto refused = take(pair.host_events, Kind::kRefused, *id);
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_EQ(refused[0].text, "no listener on port 9");
  EXPECT_EQ(pair.host.streamCount(), 0u);
  EXPECT_EQ(pair.guest.streamCount(), 0u);
}

TEST(StreamMuxTest, AStreamThatIsNotReadStopsAtItsWindowWhileAnotherFlows) {
  StreamMuxLimits limits;
  limits.window = 4096;
  MuxPair pair(limits);
  uint32_t stuck = pair.openAccepted();
  uint32_t flowing = pair.openAccepted();

  std::string big = pattern(100000, 'q');
  size_t stuck_sent = *pair.host.send(stuck, big);
  EXPECT_EQ(stuck_sent, 4096u);
  EXPECT_EQ(pair.host.sendRoom(stuck), 0u);

  std::string got;
  size_t sent = 0;
  for (int round = 0; round < 1000 && got.size() < big.size(); ++round) {
    sent += *pair.host.send(flowing, std::string_view(big).substr(sent));
    pair.pump();
    got += drain(pair.guest, pair.guest_events, flowing);
    pair.pump();
  }
  EXPECT_TRUE(got == big);
  // The unread stream got exactly its window and no more.
  size_t stuck_delivered = 0;
  for (const auto& e : pair.guest_events) {
    if (e.kind == Kind::kData && e.stream == stuck) stuck_delivered += e.text.size();
  }
  EXPECT_EQ(stuck_delivered, 4096u);
  EXPECT_EQ(pair.host.sendRoom(stuck), 0u);

  // Reading it gives the sender room again.
  EXPECT_EQ(drain(pair.guest, pair.guest_events, stuck), big.substr(0, 4096));
  pair.pump();
  EXPECT_FALSE(take(pair.host_events, Kind::kWritable, stuck).empty());
  EXPECT_EQ(pair.host.sendRoom(stuck), 4096u);
}

TEST(StreamMuxTest, ShutdownBothWaysClosesTheStream) {
  MuxPair pair;
  uint32_t id = pair.openAccepted();
  ASSERT_TRUE(pair.host.send(id, "request").ok());
  ASSERT_TRUE(pair.host.shutdownWrite(id).ok());
  EXPECT_EQ(pair.host.sendRoom(id), 0u);
  EXPECT_FALSE(pair.host.send(id, "more").ok());
  pair.pump();
  EXPECT_EQ(drain(pair.guest, pair.guest_events, id), "request");
  EXPECT_EQ(take(pair.guest_events, Kind::kShutdown, id).size(), 1u);

  ASSERT_TRUE(pair.guest.send(id, "answer").ok());
  ASSERT_TRUE(pair.guest.shutdownWrite(id).ok());
  pair.collect();
  EXPECT_EQ(take(pair.guest_events, Kind::kClosed, id).size(), 1u);  // both ways done
  pair.pump();
  auto data = take(pair.host_events, Kind::kData, id);
  ASSERT_EQ(data.size(), 1u);
  EXPECT_EQ(data[0].text, "answer");  // delivered before the stream ended
  EXPECT_EQ(take(pair.host_events, Kind::kShutdown, id).size(), 1u);
  EXPECT_EQ(take(pair.host_events, Kind::kClosed, id).size(), 1u);
  EXPECT_EQ(pair.host.streamCount(), 0u);
  EXPECT_EQ(pair.guest.streamCount(), 0u);
}

TEST(StreamMuxTest, CloseEndsTheStreamAndDataInFlightIsDroppedQuietly) {
  MuxPair pair;
  uint32_t id = pair.openAccepted();
  ASSERT_TRUE(pair.guest.send(id, "in flight").ok());  // crosses the CLOSE
  ASSERT_TRUE(pair.host.close(id).ok());
  EXPECT_EQ(pair.host.streamCount(), 0u);
  pair.pump();
  EXPECT_EQ(take(pair.guest_events, Kind::kClosed, id).size(), 1u);
  EXPECT_TRUE(pair.host_events.empty());   // no event for a stream it closed
  EXPECT_TRUE(pair.guest_events.empty());  // and no RESET for the late DATA
}

TEST(StreamMuxTest, ResetCarriesItsReason) {
  MuxPair pair;
  uint32_t id = pair.openAccepted();
  ASSERT_TRUE(pair.host.resetStream(id, "the client went away").ok());
  pair.pump();
  auto reset = take(pair.guest_events, Kind::kReset, id);
  ASSERT_EQ(reset.size(), 1u);
  EXPECT_EQ(reset[0].text, "reset by the peer: the client went away");
  EXPECT_FALSE(pair.host.resetStream(id, "again").ok());
}

TEST(StreamMuxTest, ANewGenerationEndsEveryStreamOfTheOldHost) {
  MuxPair pair;
  std::vector<uint32_t> ids = {pair.openAccepted(), pair.openAccepted(), pair.openAccepted()};
  pair.host.reset("the runner restarted", 8);
  EXPECT_EQ(take(pair.host_events, Kind::kReset).size(), 0u);  // not collected yet
  pair.collect();
  EXPECT_EQ(take(pair.host_events, Kind::kReset).size(), 3u);
  pair.pump();
  auto reset = take(pair.guest_events, Kind::kReset);
  ASSERT_EQ(reset.size(), 3u);
  for (const auto& e : reset) EXPECT_NE(e.text.find("restarted"), std::string::npos) << e.text;
  EXPECT_EQ(pair.guest.streamCount(), 0u);
  EXPECT_EQ(pair.guest.generation(), 8u);
  EXPECT_TRUE(pair.host.live());
  uint32_t fresh = pair.openAccepted();
  ASSERT_TRUE(pair.host.send(fresh, "after").ok());
  pair.pump();
  EXPECT_EQ(drain(pair.guest, pair.guest_events, fresh), "after");
}

// After a restore the guest may hold part of a frame of the old host, and
// the new host's end (a new endpoint) knows nothing of the old streams.
TEST(StreamMuxTest, ARestoredGuestWithAPartialFrameResyncsToTheNewHost) {
  MuxPair pair;
  uint32_t id = pair.openAccepted();
  std::string half;
  appendMuxMessage(half, MuxMessage::data(id, std::string(30000, 'x')));
  half.resize(half.size() / 2);
  pair.guest.receive(half);
  ASSERT_TRUE(pair.guest.send(id, "old answer").ok());           // lost with the old runner
  pair.guest.outputWritten(pair.guest.pendingOutputSize() / 2);  // half of it did reach the pipe

  StreamMuxEndpoint new_host(Role::kHost, 99);
  pair.guest.receive(new_host.pendingOutput());
  new_host.outputWritten(new_host.pendingOutputSize());
  auto events = pair.guest.takeEvents();
  auto reset = take(events, Kind::kReset, id);
  ASSERT_EQ(reset.size(), 1u);
  EXPECT_NE(reset[0].text.find("restarted"), std::string::npos) << reset[0].text;
  EXPECT_TRUE(take(events, Kind::kData).empty());  // the half frame was never delivered
  EXPECT_EQ(pair.guest.generation(), 99u);
  // The new host skips what is left of the old guest output and takes the answer.
  new_host.receive(pair.guest.pendingOutput());
  EXPECT_TRUE(new_host.live());
}

TEST(StreamMuxTest, AGuestThatFailsMakesTheHostFailAndRestart) {
  MuxPair pair;
  uint32_t id = pair.openAccepted();
  ASSERT_TRUE(pair.guest.send(id, std::string(5000, 'g')).ok());
  pair.host.receive(pair.guest.pendingOutput().substr(0, 100));  // the host holds part of a frame
  pair.guest.outputWritten(100);
  pair.guest.receive(std::string(8, '\xff'));  // garbage: a length far over the limit
  pair.collect();
  EXPECT_EQ(take(pair.guest_events, Kind::kFailed).size(), 1u);
  EXPECT_EQ(take(pair.guest_events, Kind::kReset, id).size(), 1u);
  pair.pump();
  auto failed = take(pair.host_events, Kind::kFailed);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].text, "mux DATA: no end marker: the frame was cut short (frame at pipe offset 70)");
  auto reset = take(pair.host_events, Kind::kReset, id);
  ASSERT_EQ(reset.size(), 1u);
  EXPECT_EQ(reset[0].text, "the stream mux failed: " + failed[0].text);
  EXPECT_TRUE(take(pair.host_events, Kind::kData).empty());  // the cut frame was not delivered

  pair.host.reset("restart after a failure", 8);
  pair.pump();
  EXPECT_TRUE(pair.host.live());
  EXPECT_TRUE(pair.guest.live());
  uint32_t fresh = pair.openAccepted();
  ASSERT_TRUE(pair.host.send(fresh, "again").ok());
  pair.pump();
  EXPECT_EQ(drain(pair.guest, pair.guest_events, fresh), "again");
}

TEST(StreamMuxTest, TheHostTakesOnlyItsOwnGenerationsHello) {
  StreamMuxEndpoint host(Role::kHost, 5);
  std::string stale;
  appendMuxMessage(stale, MuxMessage::hello(4));
  appendMuxMessage(stale, MuxMessage::data(1, "old"));
  host.receive(stale);
  EXPECT_FALSE(host.live());
  EXPECT_TRUE(host.takeEvents().empty());
  std::string answer;
  appendMuxMessage(answer, MuxMessage::hello(5));
  host.receive(answer);
  EXPECT_TRUE(host.live());
}

// A live guest fed raw frames; its events and what it answers.
class GuestUnderTest {
 public:
  explicit GuestUnderTest(StreamMuxLimits limits = {}) : guest(Role::kGuest, 0, limits) {
    std::string hello;
    appendMuxMessage(hello, MuxMessage::hello(1));
    guest.receive(hello);
    guest.takeEvents();
    guest.outputWritten(guest.pendingOutputSize());
  }
  void feed(const MuxMessage& message) {
    std::string wire;
    appendMuxMessage(wire, message);
    guest.receive(wire);
  }
  std::vector<MuxMessage> answers() {
    auto out = messagesIn(guest.pendingOutput());
    guest.outputWritten(guest.pendingOutputSize());
    return out;
  }
  std::string failure() {
    for (const auto& e : guest.takeEvents()) {
      if (e.kind == Kind::kFailed) return e.text;
    }
    return "(not failed)";
  }
  StreamMuxEndpoint guest;
};

TEST(StreamMuxTest, MalformedFramesFailTheMuxWithTheReason) {
  {
    GuestUnderTest t;
    std::string header;
    putLe16(header, static_cast<uint16_t>(FrameType::kMuxData));
    putLe16(header, 0);
    putLe32(header, kMaxMuxPayload + 1);
    t.guest.receive(header);
    EXPECT_EQ(t.failure(), "frame at pipe offset 41 (DATA): length 65542 exceeds the 65541-byte limit");
    EXPECT_FALSE(t.guest.live());
  }
  {
    GuestUnderTest t;
    std::string wire;
    appendFrame(wire, FrameType::kMuxData, "ab\x01");
    t.guest.receive(wire);
    EXPECT_EQ(t.failure(), "mux DATA: no end marker: the frame was cut short (frame at pipe offset 41)");
  }
  {
    GuestUnderTest t;
    t.feed(MuxMessage::open(2, kPort, 100));
    EXPECT_EQ(t.failure(), "OPEN of stream 2: the host opens odd stream ids");
  }
  {
    GuestUnderTest t;
    t.feed(MuxMessage::open(5, kPort, 100));
    t.feed(MuxMessage::open(3, kPort, 100));
    auto events = t.guest.takeEvents();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.back().text, "OPEN of stream 3: stream ids must increase (the last was 5)");
    EXPECT_EQ(events[1].kind, Kind::kReset);  // stream 5 ended with the mux
    EXPECT_EQ(events[1].text, "the stream mux failed: OPEN of stream 3: stream ids must increase (the last was 5)");
  }
  {
    GuestUnderTest t;
    MuxMessage hello = MuxMessage::hello(2);
    hello.version = 9;
    t.feed(hello);
    EXPECT_EQ(t.failure(), "the peer speaks mux version 9, this end 1");
  }
}

TEST(StreamMuxTest, StreamViolationsAreAnsweredWithReset) {
  StreamMuxLimits limits;
  limits.window = 100;
  GuestUnderTest t(limits);

  t.feed(MuxMessage::data(7, "to nowhere"));
  auto answers = t.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].type, FrameType::kMuxReset);
  EXPECT_EQ(answers[0].text, "DATA for unknown stream 7");

  t.feed(MuxMessage::credit(9, 5));
  answers = t.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].text, "CREDIT for unknown stream 9");

  t.feed(MuxMessage::reset(11, "x"));  // a RESET is never answered
  EXPECT_TRUE(t.answers().empty());

  // Data beyond the window it was given.
  t.feed(MuxMessage::open(13, kPort, 100));
  ASSERT_TRUE(t.guest.accept(13).ok());
  t.answers();
  t.feed(MuxMessage::data(13, std::string(101, 'x')));
  answers = t.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].text, "stream 13: 101 bytes of DATA exceed the credit of 100 bytes");
  auto events = t.guest.takeEvents();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].kind, Kind::kReset);
  EXPECT_EQ(events[1].text, "the peer broke the protocol: stream 13: 101 bytes of DATA exceed the credit of 100 bytes");

  // Data before the guest accepted: no credit at all.
  t.feed(MuxMessage::open(15, kPort, 100));
  t.feed(MuxMessage::data(15, "early"));
  answers = t.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].text, "stream 15: 5 bytes of DATA exceed the credit of 0 bytes");

  // Data after the peer's own shutdown.
  t.feed(MuxMessage::open(17, kPort, 100));
  ASSERT_TRUE(t.guest.accept(17).ok());
  t.feed(MuxMessage::shutdownWrite(17));
  t.feed(MuxMessage::data(17, "late"));
  answers = t.answers();
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[1].text, "stream 17: DATA after SHUTDOWN_WRITE");

  // Credit without bound.
  t.feed(MuxMessage::open(19, kPort, 100));
  ASSERT_TRUE(t.guest.accept(19).ok());
  t.feed(MuxMessage::credit(19, 0xffffffffu));
  answers = t.answers();
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[1].text, "stream 19: credit beyond 1073741824 bytes");

  // Windows beyond any sane size.
  t.feed(MuxMessage::open(21, kPort, 0x80000000u));
  answers = t.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].type, FrameType::kMuxOpenRefused);
  EXPECT_EQ(answers[0].text, "a window of 2147483648 bytes is beyond the 1073741824-byte limit");

  // A stream that ended earlier: late frames are dropped, not answered.
  t.feed(MuxMessage::data(13, "late"));
  EXPECT_TRUE(t.answers().empty());
  EXPECT_EQ(t.guest.streamCount(), 0u);  // every stream above was reset
  EXPECT_TRUE(t.guest.live());
}

TEST(StreamMuxTest, TheHostResetsAStreamWhoseAcceptanceIsBroken) {
  StreamMuxEndpoint host(Role::kHost, 3);
  auto early = host.open(kPort);
  auto huge = host.open(kPort);
  ASSERT_TRUE(early.ok() && huge.ok());
  host.outputWritten(host.pendingOutputSize());
  std::string wire;
  appendMuxMessage(wire, MuxMessage::hello(3));
  appendMuxMessage(wire, MuxMessage::data(*early, "before OPEN_OK"));
  appendMuxMessage(wire, MuxMessage::openOk(*huge, 0xffffffffu));
  host.receive(wire);
  auto answers = messagesIn(host.pendingOutput());
  ASSERT_EQ(answers.size(), 2u);
  EXPECT_EQ(answers[0].text, "stream 1: DATA before OPEN_OK");
  EXPECT_EQ(answers[1].text, "stream 3: a window of 4294967295 bytes is beyond the 1073741824-byte limit");
  EXPECT_EQ(host.streamCount(), 0u);
}

TEST(StreamMuxTest, UnknownFrameTypesAreIgnored) {
  GuestUnderTest t;
  std::string wire;
  appendFrame(wire, FrameType{200}, "whatever");
  appendFrame(wire, FrameType::kExit, "1234");
  t.guest.receive(wire);
  EXPECT_TRUE(t.guest.takeEvents().empty());
  EXPECT_TRUE(t.answers().empty());
  EXPECT_TRUE(t.guest.live());
}

TEST(StreamMuxTest, OnlyTheHostOpensStreams) {
  StreamMuxEndpoint guest(Role::kGuest, 0);
  auto id = guest.open(kPort);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().code(), ErrorCode::kUnsupported);

  StreamMuxEndpoint host(Role::kHost, 3);
  std::string wire;
  appendMuxMessage(wire, MuxMessage::hello(3));
  appendMuxMessage(wire, MuxMessage::open(2, kPort, 100));
  host.outputWritten(host.pendingOutputSize());
  host.receive(wire);
  auto answers = messagesIn(host.pendingOutput());
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].type, FrameType::kMuxOpenRefused);
  EXPECT_EQ(answers[0].text, "the host accepts no streams (mux version 1)");
}

TEST(StreamMuxTest, StreamCountIsBoundedOnBothEnds) {
  StreamMuxLimits limits;
  limits.max_streams = 3;
  MuxPair pair(limits);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pair.host.open(kPort).ok());
  auto fourth = pair.host.open(kPort);
  ASSERT_FALSE(fourth.ok());
  EXPECT_EQ(fourth.error().message(), "too many streams (3 open)");

  GuestUnderTest t(limits);
  for (uint32_t id = 1; id <= 7; id += 2) t.feed(MuxMessage::open(id, kPort, 100));
  auto answers = t.answers();
  ASSERT_EQ(answers.size(), 1u);
  EXPECT_EQ(answers[0].type, FrameType::kMuxOpenRefused);
  EXPECT_EQ(answers[0].stream, 7u);
  EXPECT_EQ(answers[0].text, "too many streams (3 open)");
  EXPECT_EQ(t.guest.streamCount(), 3u);
}

TEST(StreamMuxTest, PipeOutputIsBounded) {
  StreamMuxLimits limits;
  limits.max_output = 200000;
  limits.control_slack = 4096;
  MuxPair pair(limits);
  uint32_t id = pair.openAccepted();
  // Nobody writes the host's output to the pipe: send() stops at max_output.
  std::string big(1 << 20, 'b');
  size_t taken = 0;
  while (true) {
    size_t n = *pair.host.send(id, big);
    if (n == 0) break;
    taken += n;
  }
  EXPECT_LE(taken, limits.window);
  EXPECT_LE(pair.host.pendingOutputSize(), limits.max_output + 64);

  // A guest whose answers are never written fails rather than grow.
  GuestUnderTest t(limits);
  for (uint32_t id2 = 2; id2 < 100000 && t.guest.live(); id2 += 2) {
    t.feed(MuxMessage::data(id2, "x"));
    EXPECT_TRUE(t.guest.invariantsHold());
  }
  EXPECT_EQ(t.failure(), "the pipe output queue is over " + std::to_string(limits.max_output + limits.control_slack) +
                             " bytes: the peer is not reading the pipe");
}

TEST(StreamMuxTest, LocalMistakesAreErrorsNotCrashes) {
  MuxPair pair;
  uint32_t id = pair.openAccepted();
  auto consumed = pair.guest.consume(id, 1);
  ASSERT_FALSE(consumed.ok());
  EXPECT_EQ(consumed.error().message(), "consume 1 bytes of stream 1: only 0 are unread");
  EXPECT_EQ(pair.guest.accept(id).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(pair.host.send(99, "x").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(pair.host.close(99).error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(pair.host.accept(id).error().code(), ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace microvm::agent
