// Init's end of the control protocol (agent/protocol.h), over the
// virtio-serial port the host names kControlPortName: frames out (hello,
// started, output, exit) and in (spec, stdin, signals, exit ack).
//
//   auto fd = openControlPort();               // waits for the device
//   ControlPort port(std::move(*fd));
//   port.send(agent::FrameType::kHello, agent::encodeU32(agent::kProtocolVersion));
//   auto spec = receiveSpec(port);
//
// The framing and the write backlog are agent::FramedConnection's; what is
// particular to the port is how a missing host shows. virtio-serial blocks
// writers and makes reads return 0 with POLLHUP while the host side of the
// port is closed, so the fd is non-blocking, and init tells "the host is
// slow" (wait without bound: that back-pressure keeps the workload's output
// lossless) from "the host is not there" (give up after kHostConnectTimeout).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string_view>

#include "agent/framed_connection.h"
#include "agent/protocol.h"
#include "base/unique_fd.h"
#include "guest/support.h"
#include "microvm/result.h"

namespace microvm::guest {

class ControlPort {
 public:
  // `fd` is the port, opened O_NONBLOCK.
  explicit ControlPort(UniqueFd fd) : connection_(std::move(fd)) {}

  int fd() const { return connection_.fd(); }
  // False once the host has closed its side; sends then fail at once.
  bool connected() const { return connected_; }
  // True once the host sent an impossible frame; further input is ignored.
  bool corrupt() const { return connection_.corrupt(); }
  // What was wrong with the host's stream, once corrupt().
  const std::string& corruption() const { return connection_.corruption(); }

  // Writes one frame, waiting for room as described above. A payload over
  // kMaxPayload (only an overlong kError text can be) is cut.
  Result<void> send(agent::FrameType type, std::string_view payload);

  // Reads everything the host has sent so far into the frame reader.
  void receive();
  // Frames kept by waitForKeepingOthers come first, in their order.
  std::optional<agent::Frame> nextFrame();

  // The next frame of `type`, or an error if the host goes away, corrupts
  // the stream, or `deadline` passes first. Frames of other types go to
  // `other` if given, and are skipped otherwise.
  Result<agent::Frame> waitFor(agent::FrameType type, std::optional<Clock::time_point> deadline,
                               const std::function<void(const agent::Frame&)>& other = {});
  // As waitFor, but frames of other types stay for nextFrame().
  Result<agent::Frame> waitForKeepingOthers(agent::FrameType type, Clock::time_point deadline);

  // The host closed its side (logged once).
  void hostGone();

 private:
  Result<void> waitWritable();

  agent::FramedConnection connection_;
  std::deque<agent::Frame> kept_;
  bool connected_ = true;
};

// Finds the virtio-serial port the host named `name` among
// /sys/class/virtio-ports and opens it (non-blocking), waiting up to
// `timeout` for it to appear.
Result<UniqueFd> openVirtioPort(std::string_view name, milliseconds timeout);
// The control port (agent::kControlPortName), waiting up to kDeviceTimeout.
Result<UniqueFd> openControlPort();

// The spec the host sends right after kHello. No timeout here: a host that
// never sends it stops the VM by its own deadline. The host sends kRefresh
// before it: the clock alone to a booting guest, the clock and entropy to
// one restored from a boot template (which waits here). `refresh` applies it.
Result<agent::WorkloadSpec> receiveSpec(ControlPort& port,
                                        const std::function<void(std::string_view)>& refresh = {});

// The guest's CLOCK_MONOTONIC in ns: what a kClockProbe carries.
uint64_t monotonicNs();

// Sends a kClockProbe (agent::ControlClock) and returns the monotonicNs()
// it carries, which the answer echoes.
Result<uint64_t> sendClockProbe(ControlPort& port);

// Asks the host for its clock (kClockProbe, agent::ControlClock) and waits
// up to `timeout` for the answer; frames that come before it stay for the
// supervisor. Returns the wall clock to set (agent::clockFromAnswer).
Result<int64_t> askHostClock(ControlPort& port, milliseconds timeout);

}  // namespace microvm::guest
