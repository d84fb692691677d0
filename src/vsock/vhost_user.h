// VhostUserServer: the back-end side of the vhost-user protocol (QEMU
// docs/interop/vhost-user.rst) on a unix socket that QEMU connects to. It
// keeps the guest's memory table (one mmap per region fd), the vring
// addresses and eventfds, and QEMU's dirty log while a migration runs; the
// device built on it only sees Virtqueues and kicks.
//
// QEMU blocks on this socket while it starts, stops or migrates the device
// (GET_VRING_BASE, SET_LOG_BASE and REPLY_ACK answers), so a caller that
// waits on QEMU (a QMP command) must keep serving it: controlFd() is one
// pollable fd for the whole control plane and serviceControl() handles
// whatever is ready, without blocking.
//
//   VhostUserServer::Device device{features, config_bytes, 2};
//   auto server = VhostUserServer::create(loop, socket_path, device, callbacks);
//   if (Virtqueue* tx = (*server)->queue(1)) { ...; (*server)->notify(1); }
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/event_loop.h"
#include "base/unique_fd.h"
#include "microvm/result.h"
#include "vsock/virtqueue.h"

namespace microvm::vsock {

// Feature bits (virtio and vhost) the server speaks about.
constexpr uint64_t kVirtioFVersion1 = 1ull << 32;
constexpr uint64_t kVhostFLogAll = 1ull << 26;
constexpr uint64_t kVhostUserFProtocolFeatures = 1ull << 30;

// One mmap of a file descriptor, unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  static Result<Mapping> map(int fd, uint64_t size, uint64_t offset);
  Mapping(Mapping&& other) noexcept { *this = std::move(other); }
  Mapping& operator=(Mapping&& other) noexcept;
  ~Mapping();
  uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// The guest's RAM as QEMU shared it, plus the dirty-page log.
class MemoryTable : public GuestMemory {
 public:
  struct Region {
    uint64_t gpa = 0;
    uint64_t size = 0;
    uint64_t user_addr = 0;  // QEMU's virtual address of the region
    uint8_t* host = nullptr;
    Mapping mapping;
  };

  void setRegions(std::vector<Region> regions) { regions_ = std::move(regions); }
  uint8_t* translate(uint64_t gpa, uint64_t len) override;
  // For vring addresses, which QEMU gives in its own address space.
  uint8_t* translateUser(uint64_t user_addr, uint64_t len);
  // A user address's guest-physical address, for logging the used ring.
  bool userToGuest(uint64_t user_addr, uint64_t& gpa) const;

  void setLog(Mapping log) { log_ = std::move(log); }
  void setLogging(bool on) { logging_ = on; }
  bool logging() const { return logging_ && log_.data() != nullptr; }
  // One bit per 4 KiB guest page, set for every byte the device writes.
  void markDirty(uint64_t gpa, uint64_t len) override;

 private:
  std::vector<Region> regions_;
  Mapping log_;
  bool logging_ = false;
};

class VhostUserServer {
 public:
  struct Device {
    uint64_t features = 0;     // device features besides the vhost ones
    std::string config;        // the virtio config space (GET_CONFIG)
    int queues = 0;
  };
  struct Callbacks {
    std::function<void(int queue)> kicked;  // the guest added buffers (or a queue started)
    std::function<void()> disconnected;     // QEMU went away: drop device state
    std::function<void(const std::string&)> log;
  };
  static constexpr int kMaxQueues = 4;

  static Result<std::unique_ptr<VhostUserServer>> create(EventLoop& loop, const std::filesystem::path& socket,
                                                         Device device, Callbacks callbacks);
  ~VhostUserServer();
  VhostUserServer(const VhostUserServer&) = delete;
  VhostUserServer& operator=(const VhostUserServer&) = delete;

  // A queue the device may use now (started, enabled, mapped), else nullptr.
  Virtqueue* queue(int index);
  // Interrupts the guest for `index` if it wants interrupts.
  void notify(int index);
  MemoryTable& memory() { return memory_; }

  int controlFd() const { return control_epoll_.get(); }
  void serviceControl();
  uint64_t protocolErrors() const { return protocol_errors_; }

 private:
  struct Vring {
    uint32_t num = 0;
    uint32_t flags = 0;
    uint64_t desc = 0, used = 0, avail = 0, log_guest_addr = 0;
    uint16_t base = 0;
    UniqueFd kick;
    UniqueFd call;
    bool started = false;
    bool enabled = false;
    Virtqueue queue;
  };
  struct Message {
    uint32_t request = 0;
    uint32_t flags = 0;
    std::string payload;
    std::vector<UniqueFd> fds;
  };

  VhostUserServer(EventLoop& loop, Device device, Callbacks callbacks)
      : loop_(loop), device_(std::move(device)), callbacks_(std::move(callbacks)) {}

  void accept();
  void readMessages();
  // Handles one message; an error closes the connection.
  Result<void> handle(Message& message);
  Result<void> reply(const Message& request, std::string_view payload);
  Result<void> replyU64(const Message& request, uint64_t value);
  void disconnect(const std::string& why);
  void configureQueue(int index);
  void stopQueue(int index);
  void log(const std::string& message) {
    if (callbacks_.log) callbacks_.log(message);
  }

  EventLoop& loop_;
  Device device_;
  Callbacks callbacks_;
  std::filesystem::path path_;
  UniqueFd listener_;
  UniqueFd connection_;
  UniqueFd control_epoll_;
  std::string in_;
  std::vector<UniqueFd> in_fds_;
  uint64_t features_ = 0;
  uint64_t protocol_features_ = 0;
  MemoryTable memory_;
  UniqueFd log_call_;
  std::array<Vring, kMaxQueues> vrings_;
  uint64_t protocol_errors_ = 0;
};

}  // namespace microvm::vsock
