// Fuzzes the stream multiplexer (agent/stream_mux.h) as a hostile peer would
// drive it: raw pipe bytes and well-formed messages with arbitrary fields, in
// any order, mixed with the local caller's operations (accept, refuse,
// consume, send, shutdown, close, reset, partial pipe writes). Besides
// crashes it checks the invariants: every buffer within its limit, the
// per-stream flow-control counts consistent, no stream receiving more than
// its window of unconsumed data, and a re-encoded message decoding the same.
//
// Input: [config: 1 byte][operations]. Config bit 0: a guest endpoint (else
// a host of generation 1); bit 1: a 1 KiB window; bit 2: 2 streams at most;
// bit 3: 4 KiB of pipe output. Each operation is [op: 1 byte][arguments].
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "agent/stream_mux.h"
#include "fuzz/fuzz_input.h"

namespace {

using microvm::agent::FrameType;
using microvm::agent::MuxMessage;
using microvm::agent::StreamMuxEndpoint;
using microvm::agent::StreamMuxEvent;
using microvm::agent::StreamMuxLimits;

[[noreturn]] void fail(const char* what) {
  (void)std::fprintf(stderr, "stream_mux_fuzz: %s\n", what);
  std::abort();
}

// A message of the type the input picks, its fields taken from the input.
MuxMessage messageFrom(microvm::fuzz::Input& in) {
  MuxMessage m;
  m.type = static_cast<FrameType>(96 + in.byte() % 9);
  m.stream = in.u32() % 64;
  m.port = in.u16();
  m.window = in.u32();
  m.grant = in.u32();
  m.version = in.byte() == 0xff ? 2 : 1;
  m.generation = in.byte() % 4;
  m.text = in.bytes(in.u16() % 2048);
  if (m.type == FrameType::kMuxData && m.text.empty()) m.text.push_back('x');
  return m;
}

void checkRoundTrip(const MuxMessage& message) {
  std::string wire;
  appendMuxMessage(wire, message);
  auto decoded = decodeMuxMessage(message.type, std::string_view(wire).substr(microvm::agent::kHeaderSize));
  if (!decoded) return;  // stream id 0 and such: refused, which is the point
  bool same = decoded->type == message.type;
  if (message.type == FrameType::kMuxHello) {
    same = same && decoded->version == message.version && decoded->generation == message.generation;
  } else {
    same = same && decoded->stream == message.stream;
  }
  if (message.type == FrameType::kMuxData) same = same && decoded->text == message.text;
  if (!same) fail("a message does not round-trip");
}

class Harness {
 public:
  Harness(StreamMuxEndpoint::Role role, StreamMuxLimits limits) : mux_(role, 1, limits) {}

  void step(microvm::fuzz::Input& in) {
    switch (in.byte() % 10) {
      case 0: mux_.receive(in.bytes(in.u16() % 8192)); break;
      case 1: {
        MuxMessage message = messageFrom(in);
        checkRoundTrip(message);
        std::string wire;
        appendMuxMessage(wire, message);
        size_t cut = in.byte() == 0 ? in.u16() % (wire.size() + 1) : wire.size();
        mux_.receive(std::string_view(wire).substr(0, cut));
        break;
      }
      case 2: {
        uint32_t id = pick(in, pending_);
        if (id != 0) {
          (void)(in.byte() % 4 == 0 ? mux_.refuse(id, "no") : mux_.accept(id));
          pending_.erase(id);
        }
        break;
      }
      case 3: {
        uint32_t id = pick(in, unread_);
        if (id != 0) {
          size_t count = unread_[id] == 0 ? 0 : in.u32() % (unread_[id] + 1);
          if (!mux_.consume(id, count)) fail("consume of delivered bytes refused");
          unread_[id] -= count;
        }
        break;
      }
      case 4: {
        uint32_t id = in.u32() % 64;  // read in order: arguments are not sequenced
        (void)mux_.send(id, in.bytes(in.u16() % 70000));
        break;
      }
      case 5: (void)mux_.shutdownWrite(in.u32() % 64); break;
      case 6: (void)(in.byte() % 2 ? mux_.close(in.u32() % 64) : mux_.resetStream(in.u32() % 64, "fuzz")); break;
      case 7: mux_.outputWritten(in.u32() % 100000); break;
      case 8: (void)mux_.open(in.u16()); break;
      case 9: mux_.reset("fuzz reset", in.byte() % 4); break;
    }
    absorbEvents();
    check();
  }

 private:
  // An id from `streams`, chosen by the input; 0 if there is none.
  template <typename Map>
  static uint32_t pick(microvm::fuzz::Input& in, const Map& streams) {
    if (streams.empty()) return 0;
    auto it = streams.begin();
    std::advance(it, in.byte() % streams.size());
    return it->first;
  }

  void absorbEvents() {
    for (const StreamMuxEvent& e : mux_.takeEvents()) {
      using Kind = StreamMuxEvent::Kind;
      switch (e.kind) {
        case Kind::kOpenRequested:
          pending_[e.stream] = true;
          unread_[e.stream] = 0;
          break;
        case Kind::kOpened: unread_[e.stream] = 0; break;
        case Kind::kData:
          if (e.text.empty()) fail("an empty kData");
          unread_[e.stream] += e.text.size();
          if (unread_[e.stream] > mux_.limits().window) fail("a stream received beyond its window");
          break;
        case Kind::kClosed:
        case Kind::kReset:
        case Kind::kRefused:
          pending_.erase(e.stream);
          unread_.erase(e.stream);
          break;
        default: break;
      }
    }
    // A stream the caller closed or reset itself raises no event; consuming
    // nothing of it fails.
    for (auto it = unread_.begin(); it != unread_.end();) {
      it = mux_.consume(it->first, 0) ? std::next(it) : unread_.erase(it);
    }
  }

  void check() const {
    if (!mux_.invariantsHold()) fail("an endpoint invariant broke");
    if (mux_.streamCount() > mux_.limits().max_streams) fail("more streams than the limit");
    if (mux_.bufferedInput() > microvm::agent::kHeaderSize + microvm::agent::kMaxMuxPayload) {
      fail("more than one partial frame buffered");
    }
  }

  StreamMuxEndpoint mux_;
  std::map<uint32_t, bool> pending_;   // opened by the peer, not yet answered
  std::map<uint32_t, size_t> unread_;  // delivered, not yet consumed
};

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  microvm::fuzz::Input in(data, size);
  uint8_t config = in.byte();
  StreamMuxLimits limits;
  if (config & 2) limits.window = 1024;
  if (config & 4) limits.max_streams = 2;
  if (config & 8) limits.max_output = 4096;
  Harness harness(config & 1 ? StreamMuxEndpoint::Role::kGuest : StreamMuxEndpoint::Role::kHost, limits);
  for (int steps = 0; !in.empty() && steps < 4096; ++steps) harness.step(in);
  return 0;
}
