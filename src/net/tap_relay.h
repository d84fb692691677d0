// TapRelay: the runner's copy loop between QEMU's `-netdev stream` socket
// (the same framing as the user network's, slirp_network.h) and a TAP device
// (pod_link.h). QEMU keeps the same command line and privileges in every
// network mode: it never opens the TAP, and a VM restored from a boot
// template saved with the user network has the same devices.
//
// A frame from the guest is written to the TAP as it is; a frame read from
// the TAP is queued for QEMU, up to `max_queued_bytes` (then dropped and
// counted: TCP retransmits). Nothing blocks; the loop's other work is not
// starved (reads are bounded per event).
//
//   auto relay = TapRelay::create(loop, std::move(runner_end), std::move(tap.fd));
//   state.net_counters = (*relay)->counters();
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"
#include "net/slirp_network.h"

namespace microvm::net {

class TapRelay {
 public:
  static Result<std::unique_ptr<TapRelay>> create(EventLoop& loop, UniqueFd stream, UniqueFd tap,
                                                  size_t max_queued_bytes = 8u << 20);
  ~TapRelay();
  TapRelay(const TapRelay&) = delete;
  TapRelay& operator=(const TapRelay&) = delete;

  // frames_from_guest, bytes_from_guest, frames_to_guest, bytes_to_guest,
  // frames_to_guest_dropped, frames_to_link_dropped, stream_write_waits.
  std::map<std::string, uint64_t> counters() const;
  bool connected() const { return stream_.valid(); }

 private:
  TapRelay(EventLoop& loop, UniqueFd stream, UniqueFd tap, size_t max_queued_bytes);
  void readStream();
  void readTap();
  void flush();
  void closeStream();

  EventLoop& loop_;
  UniqueFd stream_;
  UniqueFd tap_;
  size_t max_queued_bytes_;
  StreamFrameReader in_;
  StreamFrameWriter out_;
  bool want_write_ = false;
  std::string frame_;  // one TAP read
  uint64_t frames_from_guest_ = 0, bytes_from_guest_ = 0, frames_to_guest_ = 0, bytes_to_guest_ = 0;
  uint64_t frames_to_guest_dropped_ = 0, frames_to_link_dropped_ = 0, stream_write_waits_ = 0;
};

}  // namespace microvm::net
