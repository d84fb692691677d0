// VsockDevice: the runner's virtio-vsock device. QEMU's
// vhost-user-vsock-device connects to `vhost_socket`; the guest gets CID
// `guest_cid`, and its stream connections meet host unix sockets as
// VsockMuxer describes ("<base>", "<base>_P", and the port mappings).
//
// Single-threaded on the runner's EventLoop. QEMU waits on the device while
// it stops, starts or migrates it, so whoever blocks on QEMU must serve
// controlFd() meanwhile (see VhostUserServer).
//
//   VsockConfig config{.vhost_socket = dir / "vhost-vsock.sock", .base = dir / "vsock.sock"};
//   auto device = VsockDevice::create(loop, config);   // before QEMU starts
//   machine.vhost_user_vsock_socket = config.vhost_socket;
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/event_loop.h"
#include "microvm/result.h"
#include "vsock/vhost_user.h"
#include "vsock/virtqueue.h"
#include "vsock/vsock_muxer.h"

namespace microvm::vsock {

struct VsockConfig {
  std::filesystem::path vhost_socket;
  std::filesystem::path base;
  bool serve_base = true;  // see MuxerConfig
  uint64_t guest_cid = 3;
  std::vector<PortMapping> ports;
  std::function<void(const std::string&)> log;
  std::function<Result<UniqueFd>(const std::filesystem::path&)> connect_host;  // see MuxerConfig
};

struct VsockStats {
  uint64_t malformed_chains = 0;    // bad descriptor chains (both queues)
  uint64_t malformed_packets = 0;   // bad headers or lengths on TX, plus the muxer's
  uint64_t credit_violations = 0;
  uint64_t resets_sent = 0;
  uint64_t connections_opened = 0;
  uint64_t control_overflows = 0;   // the guest took nothing for too long: its connections were closed
};

// The TX and RX halves of the device over any guest memory; VsockDevice
// drives them from vhost-user, tests and the fuzzer from fake memory.
// Returns how many chains were used.
size_t processTx(Virtqueue& tx, VsockMuxer& muxer, uint64_t& malformed_packets);
size_t processRx(Virtqueue& rx, GuestMemory& memory, VsockMuxer& muxer);

class VsockDevice {
 public:
  static Result<std::unique_ptr<VsockDevice>> create(EventLoop& loop, VsockConfig config);
  ~VsockDevice();
  VsockDevice(const VsockDevice&) = delete;
  VsockDevice& operator=(const VsockDevice&) = delete;

  // The vhost-user control plane, for QMP waits: poll it, then serve it.
  int controlFd() const;
  void serviceControl();

  VsockStats stats() const;
  // See VsockMuxer::connectClient.
  void connectClient(UniqueFd fd, uint32_t guest_port) { muxer_->connectClient(std::move(fd), guest_port); }

 private:
  VsockDevice(EventLoop& loop, VsockConfig config) : loop_(loop), config_(std::move(config)) {}
  void onKick(int queue);
  void pumpRx();
  void pumpTx();

  EventLoop& loop_;
  VsockConfig config_;
  std::unique_ptr<VsockMuxer> muxer_;
  std::unique_ptr<VhostUserServer> server_;
  uint64_t malformed_packets_ = 0;
  uint64_t malformed_chains_ = 0;
  bool in_tx_ = false;
  EventLoop::TimerId tx_timer_ = 0;
  EventLoop::TimerId rx_timer_ = 0;
};

}  // namespace microvm::vsock
