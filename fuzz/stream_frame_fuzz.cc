// Fuzzes the framing of the network stream from QEMU (net::StreamFrameReader,
// what SlirpNetwork reads the guest's frames with): a 4-byte big-endian
// length and the frame, repeated, arriving in reads of any size. Besides
// crashes it checks the frames against a second, whole-buffer parser: the
// same frames in the same order, corruption at the same length, nothing
// lost or invented, and that re-encoding them gives the bytes back.
//
// Input: [seed: 1 byte][stream]. The seed picks the sizes of the reads the
// stream is cut into (1 byte to 64 KiB), and how much room each read offers.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "net/slirp_network.h"

namespace {

using microvm::net::StreamFrameReader;

[[noreturn]] void fail(const char* what) {
  (void)std::fprintf(stderr, "stream_frame_fuzz: %s\n", what);
  std::abort();
}

struct Expected {
  std::vector<std::span<const uint8_t>> frames;
  size_t consumed = 0;
  bool corrupt = false;
};

// The framing, read from one buffer: the reference the reader must agree with.
Expected parseWhole(std::span<const uint8_t> stream) {
  Expected out;
  size_t at = 0;
  while (stream.size() - at >= 4) {
    uint32_t length = 0;
    for (int i = 0; i < 4; ++i) length = length << 8 | stream[at + i];
    if (length > StreamFrameReader::kMaxFrame) {
      out.corrupt = true;
      break;
    }
    if (stream.size() - at - 4 < length) break;
    out.frames.push_back(stream.subspan(at + 4, length));
    at += 4 + length;
  }
  out.consumed = at;
  return out;
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  uint32_t state = 0x9e3779b9u ^ data[0];
  std::span<const uint8_t> stream(data + 1, size - 1);
  auto random = [&state] {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
  };
  Expected expected = parseWhole(stream);

  StreamFrameReader reader;
  std::vector<std::string> got;  // copies: a frame's span lives until the next prepare()
  size_t at = 0;
  while (at < stream.size()) {
    uint32_t pick = random();
    size_t chunk = (pick & 3) == 0 ? 1 + pick % 65536 : 1 + (pick >> 2) % 64;
    size_t room = chunk + (random() % 4 == 0 ? random() % 512 : 0);  // read() may fill less than it was offered
    chunk = std::min(chunk, stream.size() - at);
    std::span<uint8_t> space = reader.prepare(room);
    if (space.size() != room) fail("prepare() offered a different amount of room");
    std::memcpy(space.data(), stream.data() + at, chunk);
    reader.commit(chunk);
    at += chunk;
    while (auto frame = reader.next()) {
      if (frame->size() > StreamFrameReader::kMaxFrame) fail("a frame longer than the maximum");
      got.emplace_back(reinterpret_cast<const char*>(frame->data()), frame->size());
    }
  }
  if (got.size() != expected.frames.size()) fail("a different number of frames than the reference parser");
  std::string encoded;
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].size() != expected.frames[i].size() ||
        std::memcmp(got[i].data(), expected.frames[i].data(), got[i].size()) != 0) {
      fail("a frame differs from the reference parser's");
    }
    // SAFETY: viewing chars as bytes; uint8_t may alias any object.
    microvm::net::appendStreamFrame(encoded, {reinterpret_cast<const uint8_t*>(got[i].data()), got[i].size()});
  }
  if (encoded.size() != expected.consumed || std::memcmp(encoded.data(), stream.data(), encoded.size()) != 0) {
    fail("re-encoding the frames does not give the stream back");
  }
  if (reader.corrupt() != expected.corrupt) fail("the reader and the reference disagree on corruption");
  if (!expected.corrupt && reader.buffered() != stream.size() - expected.consumed) fail("bytes lost or invented");
  return 0;
}
