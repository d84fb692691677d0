#include "guest/control_port.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <memory>
#include <string>

#include "agent/tlv.h"
#include "base/eintr.h"

namespace microvm::guest {
namespace {

// How long the host side of the control port may stay closed while init
// wants to write before init gives up on the host.
constexpr milliseconds kHostConnectTimeout{10'000};

constexpr char kVirtioPortsDir[] = "/sys/class/virtio-ports";

Error disconnected() {
  return Error(ErrorCode::kUnavailable, "control port: host disconnected");
}

// The /dev node of the virtio-serial port the host named `wanted`, if it has
// appeared. The name arrives in a control message after the port itself, so
// a port with an empty name may still turn out to be ours.
std::optional<std::string> findPortDevice(std::string_view wanted) {
  struct CloseDir {
    void operator()(DIR* dir) const { ::closedir(dir); }
  };
  std::unique_ptr<DIR, CloseDir> dir(::opendir(kVirtioPortsDir));
  if (!dir) return std::nullopt;
  while (dirent* entry = ::readdir(dir.get())) {
    std::string port = entry->d_name;
    if (port == "." || port == "..") continue;
    auto name = readFileIfExists(std::string(kVirtioPortsDir) + "/" + port + "/name");
    if (!name.ok()) continue;
    std::string_view trimmed = *name;
    while (!trimmed.empty() && (trimmed.back() == '\n' || trimmed.back() == '\0')) trimmed.remove_suffix(1);
    if (trimmed == wanted) return "/dev/" + port;
  }
  return std::nullopt;
}

}  // namespace

Result<void> ControlPort::send(agent::FrameType type, std::string_view payload) {
  if (!connected_) return disconnected();
  // Only an overlong kError text can reach the cut; output comes in chunks
  // far below the limit.
  connection_.queue(type, payload.substr(0, agent::kMaxPayload));
  while (connection_.pending() > 0) {
    if (!connection_.writeSome()) {
      int error_number = connection_.brokenErrno();
      hostGone();
      return Error::fromErrno("write control port", error_number);
    }
    if (connection_.pending() == 0) break;
    if (auto writable = waitWritable(); !writable.ok()) return writable;
  }
  return {};
}

// A slow host is waited for without bound; a host whose side stays closed
// (POLLHUP, which poll reports without being asked, so it cannot be slept on)
// is polled for up to kHostConnectTimeout. The host side may also simply not
// be open yet right after boot.
Result<void> ControlPort::waitWritable() {
  std::optional<Clock::time_point> closed_since;
  for (;;) {
    pollfd watch{fd(), POLLOUT, 0};
    if (retryOnEintr([&] { return ::poll(&watch, 1, -1); }) < 0) return systemError("poll control port");
    if (watch.revents & POLLOUT) return {};
    if (watch.revents & (POLLERR | POLLNVAL)) {
      hostGone();
      return Error(ErrorCode::kIo, "control port: poll reported an error");
    }
    if (!closed_since) closed_since = Clock::now();
    if (Clock::now() - *closed_since >= kHostConnectTimeout) {
      hostGone();
      return Error(ErrorCode::kTimeout,
                   "control port: host side not open after " + std::to_string(kHostConnectTimeout.count()) + " ms");
    }
    sleepFor(kPollInterval);
  }
}

void ControlPort::receive() {
  if (!connected_ || corrupt()) return;
  if (!connection_.readSome()) {
    if (int error_number = connection_.brokenErrno(); error_number != 0) {
      log(Error::fromErrno("read control port", error_number).message());
    }
    hostGone();
  }
}

Result<agent::Frame> ControlPort::waitFor(agent::FrameType type, std::optional<Clock::time_point> deadline,
                                          const std::function<void(const agent::Frame&)>& other) {
  for (;;) {
    while (auto frame = connection_.nextFrame()) {
      if (frame->type == type) return std::move(*frame);
      if (other) other(*frame);
    }
    if (corrupt()) return Error(ErrorCode::kProtocol, "control port: corrupt frame stream from the host: " + corruption());
    if (!connected_) return disconnected();
    pollfd watch{fd(), POLLIN, 0};
    int timeout = deadline ? millisecondsUntil(*deadline) : -1;
    int ready = retryOnEintr([&] { return ::poll(&watch, 1, timeout); });
    if (ready < 0) return systemError("poll control port");
    if (ready == 0) {
      return Error(ErrorCode::kTimeout,
                   "control port: timed out waiting for frame type " + std::to_string(static_cast<unsigned>(type)));
    }
    if (watch.revents & POLLIN) {
      receive();
    } else if (watch.revents & (POLLHUP | POLLERR | POLLNVAL)) {
      hostGone();
    }
  }
}

std::optional<agent::Frame> ControlPort::nextFrame() {
  if (kept_.empty()) return connection_.nextFrame();
  agent::Frame frame = std::move(kept_.front());
  kept_.pop_front();
  return frame;
}

Result<agent::Frame> ControlPort::waitForKeepingOthers(agent::FrameType type, Clock::time_point deadline) {
  return waitFor(type, deadline, [this](const agent::Frame& other) { kept_.push_back(other); });
}

void ControlPort::hostGone() {
  if (connected_) log("control port: host disconnected");
  connected_ = false;
}

Result<UniqueFd> openVirtioPort(std::string_view name, milliseconds timeout) {
  // A port appears a few ms into boot: polled finely, and logged only when
  // it was slow (every console line costs time under emulation).
  constexpr milliseconds kPortPoll{1};
  constexpr long long kSlowPortMs = 100;
  auto start = Clock::now();
  for (;;) {
    if (auto device = findPortDevice(name)) {
      int fd = retryOnEintr([&] { return ::open(device->c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK); });
      if (fd >= 0) {
        if (long long waited = millisecondsSince(start); waited >= kSlowPortMs) {
          log("port " + std::string(name) + " (" + *device + ") found after " + std::to_string(waited) + " ms");
        }
        return UniqueFd(fd);
      }
      if (errno != ENOENT) return systemError("open " + *device);
    }
    if (Clock::now() - start >= timeout) {
      return Error(ErrorCode::kUnavailable, "no virtio-serial port named " + std::string(name) + " after " +
                                                std::to_string(timeout.count()) + " ms");
    }
    sleepFor(kPortPoll);
  }
}

Result<UniqueFd> openControlPort() { return openVirtioPort(agent::kControlPortName, kDeviceTimeout); }

Result<agent::WorkloadSpec> receiveSpec(ControlPort& port, const std::function<void(std::string_view)>& refresh) {
  auto frame = port.waitFor(agent::FrameType::kSpec, std::nullopt, [&](const agent::Frame& other) {
    if (other.type == agent::FrameType::kRefresh && refresh) refresh(other.payload);
  });
  if (!frame.ok()) return frame.error();
  auto spec = agent::decodeSpec(frame->payload);
  if (!spec) {
    return Error(ErrorCode::kProtocol, "malformed " + spec.error().message());
  }
  return std::move(*spec);
}

uint64_t monotonicNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

Result<uint64_t> sendClockProbe(ControlPort& port) {
  uint64_t sent = monotonicNs();
  std::string probe;
  agent::putLe64(probe, sent);
  if (auto asked = port.send(agent::FrameType::kClockProbe, probe); !asked.ok()) return asked.error();
  return sent;
}

Result<int64_t> askHostClock(ControlPort& port, milliseconds timeout) {
  auto sent = sendClockProbe(port);
  if (!sent.ok()) return sent.error();
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto frame = port.waitForKeepingOthers(agent::FrameType::kClock, deadline);
    if (!frame.ok()) return frame.error();
    auto answer = agent::decodeClock(frame->payload);
    if (!answer) return Error(ErrorCode::kProtocol, "malformed " + answer.error().message());
    if (answer->echo_ns == *sent) return agent::clockFromAnswer(*answer, monotonicNs());
    // The answer to an older probe: its round trip is not this one's.
  }
}

}  // namespace microvm::guest
