// Fuzzes the vhost-user back-end as a compromised QEMU can drive it: the
// runner's real VsockDevice listens, the fuzzer connects as the front-end
// and plays a script of vhost-user messages (any request, flags, size and
// payload) carrying the file descriptors a front-end passes: memfds for the
// memory table and the dirty log (sealed ones as QEMU makes them, and
// unsealed ones shorter than claimed), and eventfds for the rings. Between
// messages it writes into the shared guest memory, kicks the rings and
// turns the event loop, so that a table and rings that make sense reach the
// device's TX and RX paths.
//
// Input: records, each one opcode byte then its fields (little-endian):
//   0  message  u8 request, u8 flags (bit 0: NEED_REPLY, bit 1: size from
//               the input instead of the payload's), [u16 size], u16 length,
//               payload, u8 fds (count in bits 0-2, kind in bits 3-4:
//               0 sealed 256 KiB memfd, 1 unsealed 4 KiB memfd, 2 eventfd)
//   1  memory   u32 offset, u16 length, bytes (into the 256 KiB memfd)
//   2  kick     u8 eventfd index: signal one passed eventfd
//   3  loop     turn the runner's event loop once
//   4  reconnect
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/temp_dir.h"
#include "base/unix_socket.h"
#include "fuzz/fuzz_input.h"
#include "vsock/vsock_device.h"

namespace {

using namespace microvm::vsock;
using microvm::UniqueFd;

constexpr size_t kMemorySize = 256 * 1024;
constexpr size_t kShortMemorySize = 4096;

[[noreturn]] void fail(const char* what) {
  (void)std::fprintf(stderr, "vhost_user_fuzz: %s\n", what);
  std::abort();
}

using microvm::fuzz::Input;

UniqueFd makeMemfd(size_t size, bool sealed) {
  UniqueFd fd(::memfd_create("vhost-user-fuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid() || ::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) fail("memfd");
  if (sealed && ::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) fail("seal");
  return fd;
}

struct Fixture {
  std::optional<microvm::TempDir> dir;
  Fixture() {
    auto made = microvm::TempDir::create("vhost-user-fuzz");
    if (!made) fail("temp dir");
    dir.emplace(std::move(*made));
  }
};

class Session {
 public:
  Session(Fixture& fixture, microvm::EventLoop& loop) : fixture_(fixture), loop_(loop) {}

  void start() {
    VsockConfig config;
    config.vhost_socket = fixture_.dir->path() / "vhost.sock";
    config.base = fixture_.dir->path() / "v.sock";
    auto device = VsockDevice::create(loop_, config);
    if (!device) fail("device");
    device_ = std::move(*device);
    memory_ = makeMemfd(kMemorySize, /*sealed=*/true);
    reconnect();
  }

  void run(Input& input) {
    for (int step = 0; step < 512 && !input.empty(); ++step) {
      switch (input.byte() % 5) {
        case 0: message(input); break;
        case 1: {
          uint32_t offset = input.u32() % kMemorySize;
          std::string bytes = input.bytes(std::min<size_t>(input.u16(), kMemorySize - offset));
          if (::pwrite(memory_.get(), bytes.data(), bytes.size(), offset) != static_cast<ssize_t>(bytes.size())) {
            fail("pwrite");
          }
          break;
        }
        case 2: {
          uint8_t index = input.byte();
          if (!eventfds_.empty()) {
            uint64_t one = 1;
            (void)::write(eventfds_[index % eventfds_.size()].get(), &one, sizeof one);
          }
          serve();
          break;
        }
        case 3: serve(); break;
        case 4: reconnect(); break;
      }
    }
  }

 private:
  void reconnect() {
    auto client = microvm::connectUnix(fixture_.dir->path() / "vhost.sock", SOCK_NONBLOCK);
    if (!client) fail("connect to the vhost-user socket");
    front_end_ = std::move(*client);
    serve();
  }

  // What the runner does between messages: serve the control plane, run the
  // loop (kicks), and what QEMU does: read the answers.
  void serve() {
    device_->serviceControl();
    (void)loop_.runOnce(std::chrono::milliseconds(0));
    char buffer[4096];
    while (::recv(front_end_.get(), buffer, sizeof buffer, MSG_DONTWAIT) > 0) {
    }
  }

  void message(Input& input) {
    uint32_t request = input.byte();
    uint8_t flags = input.byte();
    std::optional<uint32_t> size;
    if ((flags & 2) != 0) size = input.u16();
    std::string payload = input.bytes(std::min<uint16_t>(input.u16(), 1024));
    uint8_t fd_spec = input.byte();

    std::vector<UniqueFd> fds;
    for (int i = 0; i < (fd_spec & 7); ++i) {
      switch ((fd_spec >> 3) & 3) {
        case 0: fds.emplace_back(::dup(memory_.get())); break;
        case 1: fds.push_back(makeMemfd(kShortMemorySize, /*sealed=*/false)); break;
        default: {
          UniqueFd event(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
          if (!event.valid()) fail("eventfd");
          fds.emplace_back(::dup(event.get()));
          if (eventfds_.size() < 16) eventfds_.push_back(std::move(event));
          break;
        }
      }
    }

    std::string wire(12, '\0');
    uint32_t header[3] = {request, 1u | ((flags & 1) != 0 ? 1u << 3 : 0u),
                          size.value_or(static_cast<uint32_t>(payload.size()))};
    std::memcpy(wire.data(), header, sizeof header);
    wire += payload;
    std::vector<int> raw;
    for (const auto& fd : fds) raw.push_back(fd.get());
    // The back-end dropped us (a protocol error): a new QEMU connects.
    if (!microvm::sendWithFds(front_end_.get(), wire, raw, MSG_DONTWAIT)) return reconnect();
    serve();
  }

  Fixture& fixture_;
  microvm::EventLoop& loop_;
  std::unique_ptr<VsockDevice> device_;
  UniqueFd memory_;
  UniqueFd front_end_;
  std::vector<UniqueFd> eventfds_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {  // NOLINT(readability-identifier-naming)
  static Fixture fixture;
  auto loop = microvm::EventLoop::create();
  if (!loop) fail("event loop");
  Session session(fixture, *loop);
  session.start();
  Input input(data, size);
  session.run(input);
  return 0;
}
