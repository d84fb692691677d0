// Fuzzes the agent protocol's decoders on both sides: the frame reader, the
// agent's request decoder (its input comes from whoever reaches vsock port
// 1024) and the host's decoders of results, directory entries and window
// sizes (their input comes from the guest), and init's decoder of the
// control port's workload spec. Besides crashes it checks that
// whatever decodes encodes back to the same value.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "agent/protocol.h"

namespace {

namespace agent = microvm::agent;

[[noreturn]] void mismatch(const char* what) {
  (void)std::fprintf(stderr, "%s does not round-trip\n", what);
  std::abort();
}

void decodeEverything(std::string_view payload) {
  if (auto request = agent::decodeRequest(payload)) {
    auto again = agent::decodeRequest(agent::encodeRequest(*request));
    if (!again || !(*again == *request)) mismatch("request");
  }
  if (auto result = agent::decodeResult(payload)) {
    auto again = agent::decodeResult(agent::encodeResult(*result));
    if (!again || !(*again == *result)) mismatch("result");
  }
  if (auto entries = agent::decodeEntries(payload)) {
    auto again = agent::decodeEntries(agent::encodeEntries(*entries));
    if (!again || !(*again == *entries)) mismatch("entries");
  }
  if (auto size = agent::decodeWindowSize(payload)) {
    auto again = agent::decodeWindowSize(agent::encodeWindowSize(*size));
    if (!again || again->rows != size->rows || again->cols != size->cols) mismatch("window size");
  }
  if (auto refresh = agent::decodeRefresh(payload)) {
    auto again = agent::decodeRefresh(agent::encodeRefresh(*refresh));
    if (!again || again->realtime_ns != refresh->realtime_ns || again->entropy != refresh->entropy) {
      mismatch("refresh");
    }
  }
  if (auto clock = agent::decodeClock(payload)) {
    auto again = agent::decodeClock(agent::encodeClock(*clock));
    if (!again || again->realtime_ns != clock->realtime_ns || again->echo_ns != clock->echo_ns) mismatch("clock");
    (void)agent::clockFromAnswer(*clock, clock->echo_ns + static_cast<unsigned char>(payload[0]));
  }
  // The control port's spec (init decodes it; the tty fields and injected files among them).
  if (auto spec = agent::decodeSpec(payload)) {
    auto again = agent::decodeSpec(agent::encodeSpec(*spec));
    if (!again || again->argv != spec->argv || again->env != spec->env || again->tty != spec->tty ||
        (spec->tty && (again->tty_rows != spec->tty_rows || again->tty_cols != spec->tty_cols))) {
      mismatch("workload spec");
    }
    if (again->injected.size() != spec->injected.size()) mismatch("injected files");
    if (again->seccomp_program != spec->seccomp_program) mismatch("seccomp program");
    for (size_t i = 0; i < spec->injected.size() && i < again->injected.size(); ++i) {
      const auto& a = spec->injected[i];
      const auto& b = again->injected[i];
      if (a.path != b.path || a.content != b.content || a.directory != b.directory || a.mode != b.mode ||
          a.uid != b.uid || a.gid != b.gid) {
        mismatch("injected file");
      }
    }
  }
  (void)agent::decodeFileInfo(payload);
  (void)agent::decodeU32(payload);
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The bytes as a payload, and as a stream of frames fed in uneven pieces.
  decodeEverything(bytes);
  agent::FrameReader reader;
  size_t step = 1;
  for (size_t offset = 0; offset < bytes.size(); offset += step, step = step * 2 + 1) {
    reader.feed(bytes.substr(offset, step));
    while (auto frame = reader.next()) decodeEverything(frame->payload);
  }
  return 0;
}
