#include "guest/init.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <poll.h>
#include <seccomp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <optional>
#include <string_view>

#include "agent/protocol.h"
#include "guest/agent.h"
#include "guest/fd.h"
#include "guest/spawn.h"

namespace microvm::guest {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Devices (the control port, the root disk) can appear a little after PID 1
// starts; they are polled for at this interval, up to these bounds.
constexpr milliseconds kPollInterval{5};
constexpr milliseconds kDeviceTimeout{10'000};
// How long the host side of the control port may stay closed while init
// wants to write before init gives up on the host.
constexpr milliseconds kHostConnectTimeout{10'000};
// After the workload exits: how long its leftover processes get to die and
// close their output pipes, and how long the host gets to acknowledge kExit.
constexpr milliseconds kOutputDrainTimeout{500};
constexpr milliseconds kExitAckTimeout{3'000};

constexpr size_t kOutputChunk = size_t{64} * 1024;
static_assert(kOutputChunk <= agent::kMaxPayload);
// Bounds the pre-kill drain of one pipe so a chatty orphan cannot hold init.
constexpr size_t kDrainBudget = 1 << 20;
// Stdin bytes init holds for a workload that is not reading; beyond this, init
// stops reading the control port, so that the host's writes back up instead.
constexpr size_t kStdinBacklog = size_t{256} * 1024;

// Docker's code for "the runtime failed before the workload could run".
constexpr int kInitFailureCode = 125;
// Docker's code for "the workload exists but could not be started".
constexpr int kCannotRunCode = 126;

constexpr char kNewRoot[] = "/mnt/root";
constexpr char kVirtioPortsDir[] = "/sys/class/virtio-ports";

// ---------------------------------------------------------------------------
// Small OS helpers.

// strerror() in the lower case that microvm's messages use.
std::string errnoText(int error_number) {
  std::string text = std::strerror(error_number);
  if (!text.empty()) text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  return text;
}

// "WHAT: <errno text>", for the errno of the call that just failed.
Error systemError(std::string_view what) {
  int saved = errno;
  return Error{std::string(what) + ": " + errnoText(saved)};
}

void writeFully(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t written = retryOnEintr([&] { return ::write(fd, bytes.data(), bytes.size()); });
    if (written <= 0) return;  // Nowhere left to report it.
    bytes.remove_prefix(static_cast<size_t>(written));
  }
}

// A diagnostic line on `console_fd`, a copy of init's stderr.
void logTo(int console_fd, std::string_view message) {
  std::string line = "microvm-init: ";
  line += message;
  line += '\n';
  writeFully(console_fd, line);
}

// Diagnostics go to init's stderr, the console (console.log on the host),
// which never carries the workload's output.
void log(std::string_view message) {
  logTo(STDERR_FILENO, message);
}

void sleepFor(milliseconds duration) {
  timespec left{static_cast<time_t>(duration.count() / 1000), static_cast<long>(duration.count() % 1000) * 1'000'000};
  while (::nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

int millisecondsUntil(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, 1'000'000));
}

long long millisecondsSince(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

// The whole file, or "" if it does not exist (a root without /etc/group).
Result<std::string> readFileIfExists(const std::string& path) {
  UniqueFd fd(retryOnEintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!fd.valid()) {
    if (errno == ENOENT) return std::string();
    return systemError("open " + path);
  }
  std::string content;
  char buffer[4096];
  for (;;) {
    ssize_t got = retryOnEintr([&] { return ::read(fd.get(), buffer, sizeof buffer); });
    if (got < 0) return systemError("read " + path);
    if (got == 0) return content;
    content.append(buffer, static_cast<size_t>(got));
  }
}

Status makeDirectory(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) == 0 || errno == EEXIST) return Ok{};
  return systemError("mkdir " + path);
}

// mkdir -p.
Status makeDirectories(const std::string& path, mode_t mode) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    if (auto made = makeDirectory(path.substr(0, slash), mode); !made.ok()) return made;
  }
  return makeDirectory(path, mode);
}

Status mountFilesystem(const std::string& source, const std::string& target, const char* type, unsigned long flags,
                       const char* options) {
  if (::mount(source.c_str(), target.c_str(), type, flags, options) == 0) return Ok{};
  std::string what = (flags & MS_MOVE) ? "move mount " + source : "mount " + source + " (" + type + ")";
  return systemError(what + " on " + target);
}

Status waitForPath(const std::string& path, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (::access(path.c_str(), F_OK) != 0) {
    if (Clock::now() >= deadline) {
      return Error{path + " did not appear within " + std::to_string(timeout.count()) + " ms"};
    }
    sleepFor(kPollInterval);
  }
  return Ok{};
}

// ---------------------------------------------------------------------------
// The control port.

// The host end of the protocol, over the virtio-serial port. The fd is
// non-blocking so that init can tell "the host is slow" (wait) from "the host
// is not there" (give up): virtio-serial blocks writers, and makes reads
// return 0 with POLLHUP, while the host side of the port is closed.
class ControlPort {
 public:
  explicit ControlPort(UniqueFd fd) : fd_(std::move(fd)) {}

  int fd() const { return fd_.get(); }
  // False once the host has closed its side; sends then fail at once.
  bool connected() const { return connected_; }
  // True once the host sent an impossible frame; further input is ignored.
  bool corrupt() const { return reader_.failed(); }

  Status send(agent::FrameType type, std::string_view payload) {
    if (!connected_) return Error{"control port: host disconnected"};
    std::string wire;
    // Only an overlong kError text can reach the cut; output comes in chunks
    // far below the limit.
    agent::appendFrame(wire, type, payload.substr(0, agent::kMaxPayload));
    return writeAll(wire);
  }

  // Reads everything the host has sent so far into the frame reader.
  void receive() {
    char buffer[kOutputChunk];
    while (connected_ && !reader_.failed()) {
      ssize_t got = retryOnEintr([&] { return ::read(fd_.get(), buffer, sizeof buffer); });
      if (got > 0) {
        reader_.feed(std::string_view(buffer, static_cast<size_t>(got)));
      } else if (got < 0 && errno == EAGAIN) {
        return;
      } else {
        if (got < 0) log(systemError("read control port").message);
        hostGone();
      }
    }
  }

  std::optional<agent::Frame> nextFrame() { return reader_.next(); }

  // The next frame of `type`, skipping frames of other types, or an error if
  // the host goes away, corrupts the stream, or `deadline` passes first.
  Result<agent::Frame> waitFor(agent::FrameType type, std::optional<Clock::time_point> deadline) {
    for (;;) {
      while (auto frame = reader_.next()) {
        if (frame->type == type) return std::move(*frame);
      }
      if (reader_.failed()) return Error{"control port: corrupt frame stream from the host"};
      if (!connected_) return Error{"control port: host disconnected"};
      pollfd watch{fd_.get(), POLLIN, 0};
      int timeout = deadline ? millisecondsUntil(*deadline) : -1;
      int ready = retryOnEintr([&] { return ::poll(&watch, 1, timeout); });
      if (ready < 0) return systemError("poll control port");
      if (ready == 0)
        return Error{"control port: timed out waiting for frame type " + std::to_string(static_cast<unsigned>(type))};
      if (watch.revents & POLLIN) {
        receive();
      } else if (watch.revents & (POLLHUP | POLLERR | POLLNVAL)) {
        hostGone();
      }
    }
  }

  void hostGone() {
    if (connected_) log("control port: host disconnected");
    connected_ = false;
  }

 private:
  Status writeAll(std::string_view bytes) {
    while (!bytes.empty()) {
      ssize_t written = retryOnEintr([&] { return ::write(fd_.get(), bytes.data(), bytes.size()); });
      if (written > 0) {
        bytes.remove_prefix(static_cast<size_t>(written));
      } else if (written < 0 && errno == EAGAIN) {
        if (auto writable = waitWritable(); !writable.ok()) return writable;
      } else {
        hostGone();
        return systemError("write control port");
      }
    }
    return Ok{};
  }

  // Waits for room in the port. A slow host is waited for without bound (that
  // back-pressure is what keeps the workload's output lossless); a host whose
  // side stays closed (POLLHUP, which poll reports without being asked, so it
  // cannot be slept on) is polled for up to kHostConnectTimeout. The host side
  // may also simply not be open yet right after boot.
  Status waitWritable() {
    std::optional<Clock::time_point> closed_since;
    for (;;) {
      pollfd watch{fd_.get(), POLLOUT, 0};
      if (retryOnEintr([&] { return ::poll(&watch, 1, -1); }) < 0) return systemError("poll control port");
      if (watch.revents & POLLOUT) return Ok{};
      if (watch.revents & (POLLERR | POLLNVAL)) {
        hostGone();
        return Error{"control port: poll reported an error"};
      }
      if (!closed_since) closed_since = Clock::now();
      if (Clock::now() - *closed_since >= kHostConnectTimeout) {
        hostGone();
        return Error{"control port: host side not open after " + std::to_string(kHostConnectTimeout.count()) + " ms"};
      }
      sleepFor(kPollInterval);
    }
  }

  UniqueFd fd_;
  agent::FrameReader reader_;
  bool connected_ = true;
};

// The /dev node of the virtio-serial port the host named kControlPortName, if
// it has appeared. The name arrives in a control message after the port
// itself, so a port with an empty name may still turn out to be ours.
std::optional<std::string> findControlPortDevice() {
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
    if (trimmed == agent::kControlPortName) return "/dev/" + port;
  }
  return std::nullopt;
}

Result<UniqueFd> openControlPort() {
  auto start = Clock::now();
  for (;;) {
    if (auto device = findControlPortDevice()) {
      int fd = retryOnEintr([&] { return ::open(device->c_str(), O_RDWR | O_CLOEXEC | O_NONBLOCK); });
      if (fd >= 0) {
        log("control port " + *device + " found after " + std::to_string(millisecondsSince(start)) + " ms");
        return UniqueFd(fd);
      }
      if (errno != ENOENT) return systemError("open " + *device);
    }
    if (Clock::now() - start >= kDeviceTimeout) {
      return Error{std::string("no virtio-serial port named ") + agent::kControlPortName + " after " +
                   std::to_string(kDeviceTimeout.count()) + " ms"};
    }
    sleepFor(kPollInterval);
  }
}

// The host sends the spec right after kHello. No timeout here: a host that
// never does stops the VM by its own deadline.
Result<agent::WorkloadSpec> receiveSpec(ControlPort& port) {
  auto frame = port.waitFor(agent::FrameType::kSpec, std::nullopt);
  if (!frame.ok()) return frame.error();
  auto spec = agent::decodeSpec(frame->payload);
  if (!spec) return Error{"malformed " + spec.error().message()};
  return std::move(*spec);
}

// ---------------------------------------------------------------------------
// Boot: the initramfs, then the root disk.

// Makes fds 0-2 the console. The kernel leaves them closed when the initramfs
// has no /dev/console, and until they are open every new fd (the control
// port!) would land on 0-2 and receive init's diagnostics.
Status attachConsole() {
  int fd = retryOnEintr([] { return ::open("/dev/console", O_RDWR | O_NOCTTY); });
  if (fd < 0) fd = retryOnEintr([] { return ::open("/dev/null", O_RDWR); });
  if (fd < 0) return systemError("open /dev/console and /dev/null");
  for (int target = 0; target <= 2; ++target) {
    if (fd != target && ::dup2(fd, target) < 0) return systemError("dup2 console");
  }
  if (fd > 2) ::close(fd);
  return Ok{};
}

// /dev, the console, /proc and /sys, in the initramfs.
Status setUpEarlyUserspace() {
  ::umask(022);
  (void)makeDirectory("/dev", 0755);  // If this failed, the mount says why.
  auto dev = mountFilesystem("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  // Even without devtmpfs the kernel's built-in initramfs may have a
  // /dev/console node: attach it first so that the failure can be logged.
  if (auto console = attachConsole(); !console.ok()) return console;
  if (!dev.ok()) return dev;
  for (const char* dir : {"/proc", "/sys"}) {
    if (auto made = makeDirectory(dir, 0555); !made.ok()) return made;
  }
  if (auto proc = mountFilesystem("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr); !proc.ok()) {
    return proc;
  }
  return mountFilesystem("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
}

Status mountRoot(const agent::WorkloadSpec& spec) {
  if (auto made = makeDirectories(kNewRoot, 0755); !made.ok()) return made;
  if (auto appeared = waitForPath(spec.root_device, kDeviceTimeout); !appeared.ok()) return appeared;
  // noatime: reading the image's files must not dirty its inodes, which
  // would cost disk writes into the VM's overlay and a flush at power-off.
  return mountFilesystem(spec.root_device, kNewRoot, spec.root_fstype.c_str(), MS_NOATIME, nullptr);
}

std::vector<std::string_view> split(std::string_view text, char separator);
std::optional<uint32_t> parseId(std::string_view text);

// Opens (creating if missing) the directory `name` under `parent`, refusing
// a symlink: a hook's path must not lead out of where it says.
Result<UniqueFd> openChildDirectory(int parent, const std::string& name, const std::string& shown) {
  struct stat info {};
  if (::fstatat(parent, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT) return systemError("stat " + shown);
    if (::mkdirat(parent, name.c_str(), 0755) != 0 && errno != EEXIST) return systemError("mkdir " + shown);
  } else if (S_ISLNK(info.st_mode)) {
    return Error{shown + " is a symlink"};
  } else if (!S_ISDIR(info.st_mode)) {
    return Error{shown + " is not a directory"};
  }
  UniqueFd fd(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return systemError("open " + shown);
  return fd;
}

Status copyInjectedFile(int parent, const std::string& name, const InjectEntry& entry) {
  std::string data_path = std::string(kInjectDir) + "/" + std::to_string(entry.index);
  UniqueFd source(::open(data_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!source.valid()) return systemError("open " + data_path);
  struct stat info {};
  if (::fstatat(parent, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(info.st_mode)) {
    return Error{entry.path + (S_ISLNK(info.st_mode) ? " is a symlink" : " exists and is not a regular file")};
  }
  UniqueFd target(::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!target.valid()) return systemError("create " + entry.path);
  switch (copyToEnd(source.get(), target.get())) {
    case CopyResult::kReadFailed: return systemError("read " + data_path);
    case CopyResult::kWriteFailed: return systemError("write " + entry.path);
    case CopyResult::kDone: break;
  }
  // Owner before mode: chown clears set-id bits.
  if (::fchown(target.get(), entry.uid, entry.gid) != 0) return systemError("chown " + entry.path);
  if (::fchmod(target.get(), entry.mode) != 0) return systemError("chmod " + entry.path);
  return Ok{};
}

// Writes the rootfs hooks' files (kInjectDir in the initramfs) into the root
// disk mounted at `root`. No manifest: nothing to do.
Status applyInjectedFiles(const std::string& root) {
  auto manifest = readFileIfExists(std::string(kInjectDir) + "/manifest");
  if (!manifest.ok()) return manifest.error();
  if (manifest->empty()) return Ok{};
  auto entries = parseInjectManifest(*manifest);
  if (!entries.ok()) return entries.error();
  for (const InjectEntry& entry : *entries) {
    UniqueFd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir.valid()) return systemError("open " + root);
    auto parts = split(std::string_view(entry.path).substr(1), '/');
    std::string shown;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      shown += "/" + std::string(parts[i]);
      auto child = openChildDirectory(dir.get(), std::string(parts[i]), shown);
      if (!child.ok()) return Error{"rootfs hook: " + entry.path + ": " + child.error().message};
      dir = std::move(*child);
    }
    std::string leaf(parts.back());
    if (entry.directory) {
      auto made = openChildDirectory(dir.get(), leaf, entry.path);
      if (!made.ok()) return Error{"rootfs hook: " + made.error().message};
      if (::fchown(made->get(), entry.uid, entry.gid) != 0 || ::fchmod(made->get(), entry.mode) != 0) {
        return systemError("rootfs hook: chown/chmod " + entry.path);
      }
    } else if (auto copied = copyInjectedFile(dir.get(), leaf, entry); !copied.ok()) {
      return Error{"rootfs hook: " + copied.error().message};
    }
  }
  log("rootfs hooks: wrote " + std::to_string(entries->size()) + " entries");
  return Ok{};
}

// switch_root without exec: the kernel mounts move into the root disk, which
// then replaces the initramfs as "/". (pivot_root cannot leave the initramfs.)
// Init keeps running from the old root's /init, which stays in memory.
// Missing mountpoints are created: the root disk is the VM's own
// copy-on-write overlay, never the image itself.
Status switchRoot() {
  for (std::string dir : {"/dev", "/proc", "/sys"}) {
    std::string target = kNewRoot + dir;
    if (auto made = makeDirectory(target, 0755); !made.ok()) return made;
    if (auto moved = mountFilesystem(dir, target, nullptr, MS_MOVE, nullptr); !moved.ok()) return moved;
  }
  if (::chdir(kNewRoot) != 0) return systemError(std::string("chdir ") + kNewRoot);
  if (auto moved = mountFilesystem(".", "/", nullptr, MS_MOVE, nullptr); !moved.ok()) return moved;
  if (::chroot(".") != 0) return systemError("chroot " + std::string(kNewRoot));
  if (::chdir("/") != 0) return systemError("chdir /");
  return Ok{};
}

Status mountDevpts() {
  if (auto made = makeDirectory("/dev/pts", 0755); !made.ok()) return made;
  // gid=5 is the conventional "tty" group. Should the option be refused,
  // ptys still work without it; they are then owned by the opener's group.
  auto with_tty_group = mountFilesystem("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                                        "newinstance,ptmxmode=0666,mode=0620,gid=5");
  if (with_tty_group.ok()) return with_tty_group;
  return mountFilesystem("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
}

Status makeSymlink(const char* target, const char* path) {
  if (::symlink(target, path) == 0 || errno == EEXIST) return Ok{};
  return systemError(std::string("symlink ") + path + " -> " + target);
}

// The mounts and /dev links that programs in a container expect.
Status mountRuntimeFilesystems() {
  if (auto pts = mountDevpts(); !pts.ok()) return pts;
  struct Tmpfs {
    const char* path;
    const char* options;
  };
  for (const Tmpfs& tmpfs : {Tmpfs{"/dev/shm", "mode=1777"}, Tmpfs{"/tmp", "mode=1777"}, Tmpfs{"/run", "mode=0755"}}) {
    if (auto made = makeDirectory(tmpfs.path, 0755); !made.ok()) return made;
    auto mounted = mountFilesystem("tmpfs", tmpfs.path, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs.options);
    if (!mounted.ok()) return mounted;
  }
  // Only workloads that manage cgroups themselves need this; a kernel without
  // cgroup2 must not stop the others.
  auto cgroup = mountFilesystem("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr);
  if (!cgroup.ok()) log(cgroup.error().message);

  struct Link {
    const char* path;
    const char* target;
  };
  for (const Link& link :
       {Link{"/dev/ptmx", "pts/ptmx"}, Link{"/dev/fd", "/proc/self/fd"}, Link{"/dev/stdin", "/proc/self/fd/0"},
        Link{"/dev/stdout", "/proc/self/fd/1"}, Link{"/dev/stderr", "/proc/self/fd/2"}}) {
    if (auto made = makeSymlink(link.target, link.path); !made.ok()) return made;
  }
  return Ok{};
}

Status enterRoot(const agent::WorkloadSpec& spec) {
  if (auto mounted = mountRoot(spec); !mounted.ok()) return mounted;
  if (auto injected = applyInjectedFiles(kNewRoot); !injected.ok()) return injected;
  if (auto switched = switchRoot(); !switched.ok()) return switched;
  return mountRuntimeFilesystems();
}

// Brings the loopback interface up, as Docker's network namespace has it.
Status bringLoopbackUp() {
  UniqueFd socket_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_fd.valid()) return systemError("socket for lo");
  ifreq request{};
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only `request`, an ifreq
  // that outlives the calls.
  if (::ioctl(socket_fd.get(), SIOCGIFFLAGS, &request) != 0) return systemError("get flags of lo");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(socket_fd.get(), SIOCSIFFLAGS, &request) != 0) return systemError("bring lo up");
  return Ok{};
}

// The kernel's struct in6_ifreq (linux/ipv6.h, which clashes with glibc's
// netinet/in.h): the argument of SIOCSIFADDR on an AF_INET6 socket.
struct In6Ifreq {
  in6_addr address;
  uint32_t prefix_length;
  int ifindex;
};

constexpr char kGuestInterface[] = "eth0";

Status writeSysctl(const std::string& assignment);

Status configureIpv4(const agent::WorkloadSpec& spec) {
  auto address = parseInterfaceAddress(spec.net_address4);
  if (!address.ok()) return address.error();
  if (address->ipv6) return Error{"network: " + spec.net_address4 + " is not an IPv4 address"};
  UniqueFd socket_fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_fd.valid()) return systemError("socket for eth0");
  ifreq request{};
  std::strncpy(request.ifr_name, kGuestInterface, IFNAMSIZ - 1);
  sockaddr_in in{};
  in.sin_family = AF_INET;
  ::inet_pton(AF_INET, address->address.c_str(), &in.sin_addr);
  std::memcpy(&request.ifr_addr, &in, sizeof in);
  // SAFETY: SIOCSIFADDR/SIOCSIFNETMASK/SIOCGIFFLAGS/SIOCSIFFLAGS read and write
  // only `request`, an ifreq that outlives the calls.
  if (::ioctl(socket_fd.get(), SIOCSIFADDR, &request) != 0) return systemError("set address of eth0");
  in.sin_addr.s_addr = address->prefix_length == 0 ? 0 : htonl(~uint32_t{0} << (32 - address->prefix_length));
  std::memcpy(&request.ifr_netmask, &in, sizeof in);
  if (::ioctl(socket_fd.get(), SIOCSIFNETMASK, &request) != 0) return systemError("set netmask of eth0");
  if (::ioctl(socket_fd.get(), SIOCGIFFLAGS, &request) != 0) return systemError("get flags of eth0");
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP);
  if (::ioctl(socket_fd.get(), SIOCSIFFLAGS, &request) != 0) return systemError("bring eth0 up");
  // The stack (libslirp) has no TCP window scaling, so the guest offers at
  // most 64 KiB of window, and the link's MTU makes one 64 KiB segment fill
  // it. With the default receive buffer (128 KiB, half of it window) one
  // unread segment's truesize leaves less than a segment of room: the guest
  // advertises a zero or sub-segment window, which libslirp's sender
  // silly-window avoidance does not use until its persist timer (5 s or
  // more) fires. A larger buffer keeps a whole segment of window open
  // (docs/NETWORKING.md, "Stalls"). --sysctl may still set its own.
  if (auto rmem = writeSysctl("net.ipv4.tcp_rmem=4096 1048576 6291456"); !rmem.ok()) log(rmem.error().message);
  if (spec.net_gateway4.empty()) return Ok{};
  rtentry route{};
  sockaddr_in any{};
  any.sin_family = AF_INET;
  sockaddr_in gateway{};
  gateway.sin_family = AF_INET;
  if (::inet_pton(AF_INET, spec.net_gateway4.c_str(), &gateway.sin_addr) != 1) {
    return Error{"network: bad IPv4 gateway " + spec.net_gateway4};
  }
  std::memcpy(&route.rt_dst, &any, sizeof any);
  std::memcpy(&route.rt_genmask, &any, sizeof any);
  std::memcpy(&route.rt_gateway, &gateway, sizeof gateway);
  route.rt_flags = RTF_UP | RTF_GATEWAY;
  char device[IFNAMSIZ] = {};
  std::strncpy(device, kGuestInterface, IFNAMSIZ - 1);
  route.rt_dev = device;
  // SAFETY: SIOCADDRT reads `route` and the device name it points to, both alive here.
  if (::ioctl(socket_fd.get(), SIOCADDRT, &route) != 0) return systemError("add default route via " + spec.net_gateway4);
  return Ok{};
}

Status configureIpv6(const agent::WorkloadSpec& spec) {
  auto address = parseInterfaceAddress(spec.net_address6);
  if (!address.ok()) return address.error();
  if (!address->ipv6) return Error{"network: " + spec.net_address6 + " is not an IPv6 address"};
  // Duplicate address detection would keep the address unusable for a
  // second; nothing else is on this link.
  if (auto dad = writeSysctl("net.ipv6.conf.eth0.accept_dad=0"); !dad.ok()) log(dad.error().message);
  UniqueFd socket_fd(::socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!socket_fd.valid()) return systemError("socket for eth0 (IPv6)");
  ifreq index_request{};
  std::strncpy(index_request.ifr_name, kGuestInterface, IFNAMSIZ - 1);
  // SAFETY: SIOCGIFINDEX writes only into `index_request`.
  if (::ioctl(socket_fd.get(), SIOCGIFINDEX, &index_request) != 0) return systemError("index of eth0");
  In6Ifreq request{};
  ::inet_pton(AF_INET6, address->address.c_str(), &request.address);
  request.prefix_length = static_cast<uint32_t>(address->prefix_length);
  request.ifindex = index_request.ifr_ifindex;
  // SAFETY: on an AF_INET6 socket SIOCSIFADDR reads a struct in6_ifreq, whose layout In6Ifreq has.
  if (::ioctl(socket_fd.get(), SIOCSIFADDR, &request) != 0) return systemError("set IPv6 address of eth0");
  if (spec.net_gateway6.empty()) return Ok{};
  in6_rtmsg route{};
  if (::inet_pton(AF_INET6, spec.net_gateway6.c_str(), &route.rtmsg_gateway) != 1) {
    return Error{"network: bad IPv6 gateway " + spec.net_gateway6};
  }
  route.rtmsg_flags = RTF_UP | RTF_GATEWAY;
  route.rtmsg_metric = 1;
  route.rtmsg_ifindex = index_request.ifr_ifindex;
  // SAFETY: on an AF_INET6 socket SIOCADDRT reads a struct in6_rtmsg that outlives the call.
  if (::ioctl(socket_fd.get(), SIOCADDRT, &route) != 0) return systemError("add IPv6 default route via " + spec.net_gateway6);
  return Ok{};
}

// Puts `content` at `path` in the new root. Where the image has the file,
// ours is staged on /dev (init's tmpfs) and bind-mounted over it, as Docker
// bind-mounts its own: the root disk is not written, so nothing is left to
// flush at power-off, and even a read-only root gets the file. Where the
// image lacks it or has a symlink there, the file is written on the root
// disk instead (replacing the symlink), if the root is writable.
Status writeEtcFile(const std::string& path, const std::string& content) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) == 0 && S_ISREG(info.st_mode)) {
    std::string staged = "/dev/.microvm-" + path.substr(path.rfind('/') + 1);
    UniqueFd fd(retryOnEintr(
        [&] { return ::open(staged.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644); }));
    if (fd.valid() && ::fchmod(fd.get(), 0644) == 0) {
      writeFully(fd.get(), content);
      fd.reset();
      bool bound = ::mount(staged.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) == 0;
      ::unlink(staged.c_str());  // the mount keeps the file
      if (bound) return Ok{};
    }
  }
  if (auto made = makeDirectories("/etc", 0755); !made.ok()) return made;
  ::unlink(path.c_str());
  UniqueFd fd(retryOnEintr([&] { return ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644); }));
  if (!fd.valid()) return systemError("create " + path);
  writeFully(fd.get(), content);
  return Ok{};
}

// The guest's interfaces as the host decided: lo always, eth0 with static
// addresses when the VM has a network. A failure here stops the VM: the
// workload was promised a network.
Status configureNetwork(const agent::WorkloadSpec& spec) {
  if (auto lo = bringLoopbackUp(); !lo.ok()) return lo;
  if (!spec.net_address4.empty()) {
    if (auto done = configureIpv4(spec); !done.ok()) return done;
  }
  if (!spec.net_address6.empty()) {
    if (auto done = configureIpv6(spec); !done.ok()) return done;
  }
  // A read-only root keeps the image's files; that is not worth a failure.
  if (!spec.etc_hosts.empty()) {
    if (auto written = writeEtcFile("/etc/hosts", spec.etc_hosts); !written.ok()) log(written.error().message);
  }
  if (!spec.etc_resolv_conf.empty()) {
    if (auto written = writeEtcFile("/etc/resolv.conf", spec.etc_resolv_conf); !written.ok()) {
      log(written.error().message);
    }
  }
  return Ok{};
}

// Not needed to run the workload, so a failure is only logged.
void configureSystem(const agent::WorkloadSpec& spec) {
  if (!spec.hostname.empty() && ::sethostname(spec.hostname.data(), spec.hostname.size()) != 0) {
    log(systemError("sethostname " + spec.hostname).message);
  }
}

// ---------------------------------------------------------------------------
// Volumes and sysctls: PID 1 applies them once the root is in place. The host
// sent each one to be enforced, so none is skipped: the first failure stops
// the VM.

Status mountVolume(const agent::MountSpec& volume) {
  auto call = planVolumeMount(volume);
  if (!call.ok()) return call.error();
  if (auto made = makeDirectories(call->target, 0755); !made.ok()) {
    return Error{"mount " + call->description + ": " + made.error().message};
  }
  if (::mount(call->source.c_str(), call->target.c_str(), call->fstype.c_str(), call->flags, call->data.c_str()) == 0) {
    return Ok{};
  }
  int saved = errno;
  // The kernel answers ENOENT for a tag that no virtio-9p device carries,
  // which would read as if the target were missing.
  std::string why = saved == ENOENT && call->fstype == "9p" ? "no virtio-9p device has the mount tag " + call->source
                                                            : errnoText(saved);
  return Error{"mount " + call->description + ": " + why};
}

Status mountVolumes(const agent::WorkloadSpec& spec) {
  for (const agent::MountSpec& volume : spec.mounts) {
    if (auto mounted = mountVolume(volume); !mounted.ok()) return mounted;
  }
  return Ok{};
}

Status writeSysctl(const std::string& assignment) {
  auto sysctl = parseSysctl(assignment);
  if (!sysctl.ok()) return sysctl.error();
  std::string what = "sysctl " + assignment + ": ";
  UniqueFd fd(retryOnEintr([&] { return ::open(sysctl->path.c_str(), O_WRONLY | O_CLOEXEC); }));
  if (!fd.valid()) return Error{what + systemError("open " + sysctl->path).message};
  // As `echo VALUE > FILE` and sysctl(8) write it; the kernel ends a string
  // value at the newline and skips it after a number.
  std::string line = sysctl->value + "\n";
  ssize_t written = retryOnEintr([&] { return ::write(fd.get(), line.data(), line.size()); });
  if (written < 0) return Error{what + systemError("write " + sysctl->path).message};
  if (static_cast<size_t>(written) != line.size()) return Error{what + "short write to " + sysctl->path};
  return Ok{};
}

Status writeSysctls(const agent::WorkloadSpec& spec) {
  for (const std::string& assignment : spec.sysctls) {
    if (auto written = writeSysctl(assignment); !written.ok()) return written;
  }
  return Ok{};
}

// ---------------------------------------------------------------------------
// The workload process.

struct Pipe {
  UniqueFd read;
  UniqueFd write;
};

// A pipe whose read end (init's) is non-blocking and whose write end (the
// workload's stdout or stderr) stays blocking, as programs expect.
Result<Pipe> makeOutputPipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return systemError("pipe");
  Pipe result{UniqueFd(fds[0]), UniqueFd(fds[1])};
  if (::fcntl(result.read.get(), F_SETFL, O_NONBLOCK) != 0) return systemError("fcntl O_NONBLOCK");
  return result;
}

// SIGCHLD is blocked from before the first fork, so that no exit is missed,
// and read through a signalfd, so that the event loop needs no handler.
// Blocking also matters because PID 1 discards unblocked default signals.
Result<UniqueFd> blockChildSignals() {
  sigset_t child;
  sigemptyset(&child);
  sigaddset(&child, SIGCHLD);
  if (::sigprocmask(SIG_BLOCK, &child, nullptr) != 0) return systemError("sigprocmask");
  UniqueFd fd(::signalfd(-1, &child, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!fd.valid()) return systemError("signalfd");
  return fd;
}

// The workload starts with default signal dispositions and nothing blocked,
// whatever init inherited or set up for itself.
void resetSignals() {
  struct sigaction default_action {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);
  // SIGKILL, SIGSTOP and glibc's internal signals refuse; that is fine.
  for (int sig = 1; sig < NSIG; ++sig) ::sigaction(sig, &default_action, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

// In the child, after stderr became the workload's stderr pipe: the message
// reaches the host as the workload's own stderr, as Docker shows it.
[[noreturn]] void failWorkload(std::string_view message, int exit_code) {
  writeFully(STDERR_FILENO, "microvm: " + std::string(message) + "\n");
  ::_exit(exit_code);
}

// `stdin_fd` -1: /dev/null.
Status redirectStdio(int stdin_fd, int stdout_fd, int stderr_fd) {
  if (stdin_fd < 0) stdin_fd = retryOnEintr([] { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); });
  if (stdin_fd < 0) return systemError("open /dev/null");
  if (::dup2(stdin_fd, STDIN_FILENO) < 0 || ::dup2(stdout_fd, STDOUT_FILENO) < 0 ||
      ::dup2(stderr_fd, STDERR_FILENO) < 0) {
    return systemError("dup2 stdio");
  }
  return Ok{};
}

// Docker creates a missing working directory rather than failing.
Status enterWorkdir(const std::string& workdir) {
  if (auto made = makeDirectories(workdir, 0755); !made.ok()) return made;
  if (::chdir(workdir.c_str()) != 0) return systemError("chdir " + workdir);
  return Ok{};
}

Status switchUser(const ExecUser& user) {
  if (::setgroups(user.supplementary_groups.size(), user.supplementary_groups.data()) != 0) {
    return systemError("setgroups");
  }
  if (::setgid(user.gid) != 0) return systemError("setgid " + std::to_string(user.gid));
  if (::setuid(user.uid) != 0) return systemError("setuid " + std::to_string(user.uid));
  return Ok{};
}

Result<int> readLastCapability() {
  constexpr char kPath[] = "/proc/sys/kernel/cap_last_cap";
  auto text = readFileIfExists(kPath);
  if (!text.ok()) return text.error();
  return parseLastCapability(*text);
}

// Needs CAP_SETPCAP in the effective set: done while the child still has all
// of init's capabilities.
Status dropBoundingCapabilities(const CapabilityPlan& plan) {
  for (int capability : plan.bounding_drops) {
    if (::prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0) {
      return systemError("drop capability " + std::to_string(capability) + " from the bounding set");
    }
  }
  // Init sets none, but the workload must not start with any it did not ask for.
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return systemError("clear ambient capabilities");
  return Ok{};
}

// After the user switch. Only ever lowers the sets (the inheritable one stays
// within the bounding set dropped above), so it needs no capability itself.
// No securebits are set: SECBIT_KEEP_CAPS is off, so setuid() to a non-zero
// uid has already cleared permitted and effective, and whatever a later
// execve() could grant (setuid-root or file capabilities) is capped by the
// bounding set, or refused altogether under no_new_privs.
Status setCapabilitySets(const CapabilityPlan& plan) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  for (int word = 0; word < _LINUX_CAPABILITY_U32S_3; ++word) {
    int shift = 32 * word;
    data[word].permitted = static_cast<uint32_t>(plan.permitted >> shift);
    data[word].effective = static_cast<uint32_t>(plan.effective >> shift);
    data[word].inheritable = static_cast<uint32_t>(plan.inheritable >> shift);
  }
  // SAFETY: glibc has no capset() wrapper. With version 3 the kernel reads
  // one header and _LINUX_CAPABILITY_U32S_3 data structs, both live here.
  if (::syscall(SYS_capset, &header, data) != 0) return systemError("capset");
  return Ok{};
}

std::string joined(const std::vector<std::string>& strings, std::string_view separator) {
  std::string result;
  for (const std::string& string : strings) {
    if (!result.empty()) result += separator;
    result += string;
  }
  return result;
}

// Confines the child and makes it the workload's user, in the only order that
// works: the bounding set shrinks while the child still has CAP_SETPCAP; the
// user switch needs CAP_SETUID/CAP_SETGID, which capset() may then take away;
// the seccomp filter comes last, so that it does not filter init's own set-up,
// unless loading it needs a CAP_SYS_ADMIN the workload will not keep.
Status confineWorkload(const agent::WorkloadSpec& spec, const ExecUser& user, const PreparedConfinement& prepared) {
  CapabilityPlan plan = planCapabilities(spec.capabilities, prepared.last_capability, user.uid);
  const auto& filter = prepared.seccomp;
  if (auto dropped = dropBoundingCapabilities(plan); !dropped.ok()) return dropped;
  bool load_early = filter && loadSeccompBeforeUserSwitch(plan, spec.no_new_privs);
  if (load_early) {
    if (auto loaded = installSeccompProgram(*filter); !loaded.ok()) return loaded;
  }
  if (auto switched = switchUser(user); !switched.ok()) return switched;
  if (auto set = setCapabilitySets(plan); !set.ok()) return set;
  if (spec.no_new_privs && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return systemError("set no_new_privs");
  if (filter && !load_early) return installSeccompProgram(*filter);
  return Ok{};
}

std::vector<char*> cStringArray(std::vector<std::string>& strings) {
  std::vector<char*> array;
  array.reserve(strings.size() + 1);
  for (auto& string : strings) array.push_back(string.data());
  array.push_back(nullptr);
  return array;
}

[[noreturn]] void execWorkload(const agent::WorkloadSpec& spec, int console_fd, bool confine,
                               const PreparedConfinement* prepared) {
  auto passwd = readFileIfExists("/etc/passwd");
  if (!passwd.ok()) failWorkload(passwd.error().message, kCannotRunCode);
  auto group = readFileIfExists("/etc/group");
  if (!group.ok()) failWorkload(group.error().message, kCannotRunCode);
  auto user = resolveUser(spec.user, *passwd, *group);
  if (!user.ok()) failWorkload(user.error().message, kCannotRunCode);
  if (auto entered = enterWorkdir(spec.workdir); !entered.ok()) failWorkload(entered.error().message, kCannotRunCode);

  // Everything execvp needs is ready before the seccomp filter is loaded.
  std::vector<std::string> env = workloadEnvironment(spec.env, spec.hostname, user->home);
  std::vector<std::string> argv = spec.argv;
  std::vector<char*> envp = cStringArray(env);
  std::vector<char*> argp = cStringArray(argv);
  std::optional<PreparedConfinement> own;
  if (confine && prepared == nullptr) {
    auto made = prepareConfinement(spec, console_fd);
    if (!made.ok()) failWorkload(made.error().message, kCannotRunCode);
    own = std::move(*made);
    prepared = &*own;
  }
  if (confine) {
    if (auto confined = confineWorkload(spec, *user, *prepared); !confined.ok()) {
      failWorkload(confined.error().message, kCannotRunCode);
    }
  }
  // execvp searches the PATH of `environ`: pointing it at the workload's
  // environment makes the search use the workload's PATH, as Docker does.
  environ = envp.data();
  ::execvp(argp[0], argp.data());
  ExecFailure failure = describeExecFailure(spec.argv[0], errno);
  failWorkload(failure.message, failure.exit_code);
}

[[noreturn]] void runWorkloadChild(const agent::WorkloadSpec& spec, const PreparedConfinement* prepared, int stdin_fd,
                                   int stdout_fd, int stderr_fd) {
  try {
    resetSignals();
    // Its own session and process group, like a container's first process.
    ::setsid();
    // The console stays reachable for init's diagnostics; it closes at exec.
    int console_fd = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
    if (!redirectStdio(stdin_fd, stdout_fd, stderr_fd).ok()) ::_exit(kCannotRunCode);
    execWorkload(spec, console_fd, /*confine=*/true, prepared);
  } catch (...) {
    // Never unwind into a copy of init's own stack frames.
    ::_exit(kCannotRunCode);
  }
}

struct Workload {
  pid_t pid;
  UniqueFd stdin_write;  // invalid unless the spec opens stdin
  UniqueFd stdout_read;
  UniqueFd stderr_read;
};

// `prepared`: the confinement, compiled already; nullptr: the child compiles it.
Result<Workload> startWorkload(const agent::WorkloadSpec& spec, const PreparedConfinement* prepared) {
  auto out = makeOutputPipe();
  if (!out.ok()) return out.error();
  auto err = makeOutputPipe();
  if (!err.ok()) return err.error();
  Pipe in;
  if (spec.open_stdin) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return systemError("pipe");
    in = Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
    // Init's end never blocks: a workload that does not read must not stall
    // the loop that forwards its output.
    if (::fcntl(in.write.get(), F_SETFL, O_NONBLOCK) != 0) return systemError("fcntl O_NONBLOCK");
  }
  pid_t pid = spawnSharingMemory(
      [&] { runWorkloadChild(spec, prepared, in.read.get(), out->write.get(), err->write.get()); });
  if (pid < 0) return systemError("clone");
  // The child's ends close here, so that the pipes reach EOF once every
  // process holding them has gone.
  return Workload{pid, std::move(in.write), std::move(out->read), std::move(err->read)};
}

// ---------------------------------------------------------------------------
// The agent (guest/agent.h): exec, files and probes over vsock.

// Starts the agent before the workload, restarts it after a crash, and hands
// it the workload's exit code.
class AgentProcess {
 public:
  AgentProcess(const agent::WorkloadSpec& spec, int control_fd, std::shared_ptr<const PreparedConfinement> confinement)
      : control_fd_(control_fd) {
    options_.workload = spec;
    options_.confine = true;
    options_.confinement = std::move(confinement);
  }

  // A failure here costs exec and cp, not the workload: it is logged.
  void start() {
    if (!channel_) {
      auto channel = WorkloadExitChannel::create();
      if (!channel.ok()) log("agent: " + channel.error().message);
      if (channel.ok()) channel_.emplace(std::move(*channel));
      options_.exit_channel = channel_ ? &*channel_ : nullptr;
    }
    pid_ = ::fork();
    if (pid_ < 0) {
      log(systemError("fork the agent").message);
      return;
    }
    if (pid_ == 0) {
      // The control port is init's alone.
      ::close(control_fd_);
      runAgentProcess(options_);
    }
  }

  // Every reaped pid other than the workload's passes through here.
  void childExited(pid_t pid, int status) {
    if (pid != pid_) return;
    pid_ = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == kAgentNoTransport) return;  // It said why.
    log("agent exited (" + std::to_string(exitCodeFromWaitStatus(status)) + ")");
    if (restarts_ < kMaxAgentRestarts) {
      ++restarts_;
      start();
    }
  }

  void publishExit(int code) {
    if (channel_) channel_->publish(code);
  }

  // kWait connections answer between the workload's exit and the end of
  // every process; they get a moment to do so.
  void letWaitersAnswer() {
    if (!channel_) return;
    auto deadline = Clock::now() + kWaitersTimeout;
    while (channel_->waiters() > 0 && Clock::now() < deadline) sleepFor(kPollInterval);
  }

 private:
  static constexpr int kMaxAgentRestarts = 3;
  static constexpr milliseconds kWaitersTimeout{1'000};

  AgentOptions options_;
  std::optional<WorkloadExitChannel> channel_;
  int control_fd_;
  pid_t pid_ = -1;
  int restarts_ = 0;
};

// ---------------------------------------------------------------------------
// Supervising the workload.

// Runs the event loop while the workload lives: forwards its output and the
// host's signals, and reaps every child (orphans reparent to PID 1). Once the
// workload is gone, it ends the rest of the VM's processes, as a container
// ends with its main process.
class Supervisor {
 public:
  Supervisor(ControlPort& port, Workload workload, UniqueFd child_signals, AgentProcess& agent)
      : port_(port),
        agent_(agent),
        workload_pid_(workload.pid),
        stdin_{std::move(workload.stdin_write), {}, false},
        stdout_{std::move(workload.stdout_read), agent::FrameType::kStdout},
        stderr_{std::move(workload.stderr_read), agent::FrameType::kStderr},
        child_signals_(std::move(child_signals)) {}

  // Returns the workload's exit code once its output has been forwarded.
  int run() {
    // Frames that arrived with the spec (stdin, an early signal) are already
    // in the reader, and no POLLIN will announce them.
    handleControlFrames();
    while (!exit_code_) pollOnce(-1);
    agent_.publishExit(*exit_code_);
    // What the workload wrote before it exited is delivered in full...
    drain(stdout_);
    drain(stderr_);
    agent_.letWaitersAnswer();
    // ...then whatever it left behind is killed, and what those processes
    // wrote before dying is forwarded until the pipes close, for a bounded time.
    ::kill(-1, SIGKILL);
    auto deadline = Clock::now() + kOutputDrainTimeout;
    while ((stdout_.fd.valid() || stderr_.fd.valid() || children_left_) && Clock::now() < deadline) {
      pollOnce(millisecondsUntil(deadline));
    }
    if (stdout_.fd.valid() || stderr_.fd.valid()) {
      log("output pipes still open after the workload's processes were killed");
    }
    return *exit_code_;
  }

 private:
  struct Output {
    UniqueFd fd;
    agent::FrameType type;
  };
  struct Input {
    UniqueFd fd;
    std::string pending;  // received from the host, not yet taken by the workload
    bool close_requested = false;
  };

  void pollOnce(int timeout) {
    enum { kControl, kStdin, kStdout, kStderr, kChildSignals, kWatchCount };
    pollfd watch[kWatchCount] = {};
    // A negative fd makes poll() skip the entry.
    bool take_control = port_.connected() && !port_.corrupt() && stdin_.pending.size() < kStdinBacklog;
    watch[kControl] = {take_control ? port_.fd() : -1, POLLIN, 0};
    watch[kStdin] = {stdin_.pending.empty() ? -1 : stdin_.fd.get(), POLLOUT, 0};
    watch[kStdout] = {stdout_.fd.get(), POLLIN, 0};
    watch[kStderr] = {stderr_.fd.get(), POLLIN, 0};
    watch[kChildSignals] = {child_signals_.get(), POLLIN, 0};
    if (::poll(watch, kWatchCount, timeout) < 0) {
      if (errno != EINTR) log(systemError("poll").message);
      return;
    }
    if (watch[kControl].revents & POLLIN) {
      port_.receive();
      handleControlFrames();
    } else if (watch[kControl].revents & (POLLHUP | POLLERR | POLLNVAL)) {
      port_.hostGone();
    }
    if (watch[kStdin].revents) flushStdin();
    if (watch[kStdout].revents) forwardChunk(stdout_);
    if (watch[kStderr].revents) forwardChunk(stderr_);
    if (watch[kChildSignals].revents) {
      signalfd_siginfo info[8];
      while (::read(child_signals_.get(), info, sizeof info) > 0) {
      }
      reapChildren();
    }
  }

  void handleControlFrames() {
    while (auto frame = port_.nextFrame()) {
      // Other types are ignored, for forward compatibility.
      if (frame->type == agent::FrameType::kSignal) forwardSignal(frame->payload);
      if (frame->type == agent::FrameType::kStdin && stdin_.fd.valid()) stdin_.pending += frame->payload;
      if (frame->type == agent::FrameType::kStdinClose) stdin_.close_requested = true;
    }
    flushStdin();
    if (port_.corrupt()) log("control port: corrupt frame stream from the host; ignoring further input");
  }

  // The workload is a session leader; like Docker, only it gets the signal.
  void forwardSignal(std::string_view payload) {
    auto sig = agent::decodeU32(payload);
    if (!sig || *sig == 0 || *sig >= static_cast<uint32_t>(NSIG)) {
      log("ignoring a malformed kSignal frame");
      return;
    }
    if (exit_code_) return;  // Already reaped: the pid may belong to another process now.
    if (::kill(workload_pid_, static_cast<int>(*sig)) != 0) {
      log(systemError("kill " + std::to_string(workload_pid_) + " " + std::to_string(*sig)).message);
    }
  }

  // Hands the workload what it will take now; the rest waits for POLLOUT. A
  // workload that closed its stdin makes the rest moot (EPIPE: PID 1 ignores
  // SIGPIPE).
  void flushStdin() {
    while (stdin_.fd.valid() && !stdin_.pending.empty()) {
      ssize_t written =
          retryOnEintr([&] { return ::write(stdin_.fd.get(), stdin_.pending.data(), stdin_.pending.size()); });
      if (written < 0 && errno == EAGAIN) return;
      if (written <= 0) {
        stdin_.fd.reset();
        break;
      }
      stdin_.pending.erase(0, static_cast<size_t>(written));
    }
    if (!stdin_.fd.valid()) stdin_.pending.clear();
    if (stdin_.close_requested && stdin_.pending.empty()) stdin_.fd.reset();
  }

  // Reads one chunk from the pipe and forwards it. Returns false when nothing
  // was read (empty for now, closed, or failed).
  bool forwardChunk(Output& output) {
    if (!output.fd.valid()) return false;
    char buffer[kOutputChunk];
    ssize_t got = retryOnEintr([&] { return ::read(output.fd.get(), buffer, sizeof buffer); });
    if (got < 0 && errno == EAGAIN) return false;
    if (got <= 0) {
      if (got < 0) log(systemError("read workload output").message);
      output.fd.reset();
      return false;
    }
    // With the host gone the output has nowhere to go, but it is still read
    // so that the workload does not block on a full pipe.
    if (port_.connected()) {
      auto sent = port_.send(output.type, std::string_view(buffer, static_cast<size_t>(got)));
      if (!sent.ok()) log(sent.error().message);
    }
    return true;
  }

  void drain(Output& output) {
    for (size_t drained = 0; drained < kDrainBudget && forwardChunk(output); drained += kOutputChunk) {
    }
  }

  void reapChildren() {
    for (;;) {
      int status = 0;
      pid_t pid = ::waitpid(-1, &status, WNOHANG);
      if (pid > 0) {
        if (pid == workload_pid_) {
          exit_code_ = exitCodeFromWaitStatus(status);
        } else if (!exit_code_) {
          agent_.childExited(pid, status);
        }
        continue;
      }
      if (pid < 0 && errno == EINTR) continue;
      children_left_ = pid == 0;
      return;
    }
  }

  ControlPort& port_;
  AgentProcess& agent_;
  pid_t workload_pid_;
  Input stdin_;
  Output stdout_;
  Output stderr_;
  UniqueFd child_signals_;
  std::optional<int> exit_code_;
  bool children_left_ = true;
};

// ---------------------------------------------------------------------------
// The whole life of PID 1.

[[noreturn]] void powerOff() {
  ::sync();
  // With reboot=t a reset triple-faults the CPU, and with -no-reboot that
  // ends QEMU: there is no ACPI in a microvm guest to power off through.
  ::reboot(RB_AUTOBOOT);
  log(systemError("reboot").message);
  // PID 1 must not exit: the kernel would panic.
  for (;;) ::pause();
}

class Init {
 public:
  [[noreturn]] void run() {
    if (auto early = setUpEarlyUserspace(); !early.ok()) fail(early.error());
    auto port_fd = openControlPort();
    if (!port_fd.ok()) fail(port_fd.error());
    port_.emplace(std::move(*port_fd));
    if (auto hello = port_->send(agent::FrameType::kHello, agent::encodeU32(agent::kProtocolVersion)); !hello.ok()) {
      fail(hello.error());
    }
    auto spec = receiveSpec(*port_);
    if (!spec.ok()) fail(spec.error());
    if (auto entered = enterRoot(*spec); !entered.ok()) fail(entered.error());
    if (auto volumes = mountVolumes(*spec); !volumes.ok()) fail(volumes.error());
    if (auto network = configureNetwork(*spec); !network.ok()) fail(network.error());
    if (auto sysctls = writeSysctls(*spec); !sysctls.ok()) fail(sysctls.error());
    configureSystem(*spec);

    auto child_signals = blockChildSignals();
    if (!child_signals.ok()) fail(child_signals.error());
    // The seccomp filter and the rest of the confinement are compiled once,
    // here: the workload and the agent (for every exec) only install them.
    // Should that fail, each compiles its own and reports the error.
    std::shared_ptr<const PreparedConfinement> confinement;
    if (auto prepared = prepareConfinement(*spec, STDERR_FILENO); prepared.ok()) {
      confinement = std::make_shared<const PreparedConfinement>(std::move(*prepared));
    }
    // Before the workload, so that the agent holds none of its pipes, and so
    // that a workload's readiness can be probed from its first moment.
    AgentProcess agent(*spec, port_->fd(), confinement);
    agent.start();
    auto workload = startWorkload(*spec, confinement.get());
    if (!workload.ok()) fail(workload.error());
    pid_t pid = workload->pid;
    if (auto started = port_->send(agent::FrameType::kStarted, agent::encodeU32(static_cast<uint32_t>(pid)));
        !started.ok()) {
      fail(started.error());
    }
    int code = Supervisor(*port_, std::move(*workload), std::move(*child_signals), agent).run();
    log("workload exited with code " + std::to_string(code));
    reportExitAndPowerOff(code);
  }

  // Logs `error`, tells the host if it can, and powers off. Processes still
  // running (a workload, if one started) die with the VM.
  [[noreturn]] void fail(const Error& error) {
    log(error.message);
    if (port_ && port_->connected()) {
      if (auto sent = port_->send(agent::FrameType::kError, error.message); !sent.ok()) log(sent.error().message);
    }
    ::kill(-1, SIGKILL);
    reportExitAndPowerOff(kInitFailureCode);
  }

 private:
  // The host acknowledges kExit so that the code is not lost in a virtqueue
  // when the VM resets; a silent host only delays the power off.
  [[noreturn]] void reportExitAndPowerOff(int code) {
    if (port_ && port_->connected()) {
      auto sent = port_->send(agent::FrameType::kExit, agent::encodeU32(static_cast<uint32_t>(code)));
      if (!sent.ok()) {
        log(sent.error().message);
      } else if (auto ack = port_->waitFor(agent::FrameType::kExitAck, Clock::now() + kExitAckTimeout); !ack.ok()) {
        log(ack.error().message);
      }
    }
    powerOff();
  }

  std::optional<ControlPort> port_;
};

// --- Pure helpers for resolveUser.

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

std::vector<std::string_view> split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  for (;;) {
    size_t at = text.find(separator);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

// A uid or gid as runc accepts it: decimal, 0 to 2^31-1.
std::optional<uint32_t> parseId(std::string_view text) {
  uint32_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > 0x7fffffffu) {
    return std::nullopt;
  }
  return value;
}

// The non-empty, non-comment lines of an /etc/passwd-style file, split at ':'.
std::vector<std::vector<std::string_view>> databaseRecords(std::string_view text) {
  std::vector<std::vector<std::string_view>> records;
  for (std::string_view line : split(text, '\n')) {
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    records.push_back(split(line, ':'));
  }
  return records;
}

struct PasswdEntry {
  std::string_view name;
  uint32_t uid;
  uint32_t gid;
  std::string_view home;
};

// name:password:uid:gid:gecos:home:shell; lines with bad ids are skipped.
std::vector<PasswdEntry> parsePasswd(std::string_view text) {
  std::vector<PasswdEntry> entries;
  for (const auto& fields : databaseRecords(text)) {
    if (fields.size() < 4) continue;
    auto uid = parseId(fields[2]);
    auto gid = parseId(fields[3]);
    if (!uid || !gid) continue;
    entries.push_back({fields[0], *uid, *gid, fields.size() > 5 ? fields[5] : std::string_view()});
  }
  return entries;
}

struct GroupEntry {
  std::string_view name;
  uint32_t gid;
  std::vector<std::string_view> members;
};

// name:password:gid:member,member; lines with a bad gid are skipped.
std::vector<GroupEntry> parseGroup(std::string_view text) {
  std::vector<GroupEntry> entries;
  for (const auto& fields : databaseRecords(text)) {
    if (fields.size() < 3) continue;
    auto gid = parseId(fields[2]);
    if (!gid) continue;
    GroupEntry entry{fields[0], *gid, {}};
    if (fields.size() > 3 && !fields[3].empty()) {
      for (std::string_view member : split(fields[3], ',')) entry.members.push_back(trim(member));
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}

}  // namespace

// ---------------------------------------------------------------------------
// Public functions.

Result<std::vector<InjectEntry>> parseInjectManifest(std::string_view text) {
  std::vector<InjectEntry> entries;
  for (std::string_view line : split(text, '\n')) {
    if (line.empty()) continue;
    auto bad = [&](const char* why) { return Error{"rootfs hook manifest: " + std::string(why) + ": " + std::string(line.substr(0, 200))}; };
    std::vector<std::string_view> fields;
    size_t start = 0;
    for (int i = 0; i < 5; ++i) {
      size_t space = line.find(' ', start);
      if (space == std::string_view::npos) return bad("too few fields");
      fields.push_back(line.substr(start, space - start));
      start = space + 1;
    }
    InjectEntry entry;
    if (fields[0] != "f" && fields[0] != "d") return bad("unknown type");
    entry.directory = fields[0] == "d";
    unsigned mode = 0;
    auto [end, error] = std::from_chars(fields[1].data(), fields[1].data() + fields[1].size(), mode, 8);
    if (error != std::errc() || end != fields[1].data() + fields[1].size() || mode > 07777) return bad("bad mode");
    entry.mode = mode;
    auto uid = parseId(fields[2]);
    auto gid = parseId(fields[3]);
    auto index = parseId(fields[4]);
    if (!uid || !gid || !index) return bad("bad number");
    entry.uid = *uid;
    entry.gid = *gid;
    entry.index = *index;
    entry.path = std::string(line.substr(start));
    if (entry.path.size() < 2 || entry.path[0] != '/' || entry.path.size() > 4096) return bad("bad path");
    for (std::string_view part : split(std::string_view(entry.path).substr(1), '/')) {
      if (part.empty() || part == "." || part == "..") return bad("path not normalized");
    }
    entries.push_back(std::move(entry));
  }
  return entries;
}


void runInit() {
  if (::getpid() != 1) {
    log("refusing to run: microvm-init must be PID 1 of a microvm guest");
    ::_exit(2);
  }
  Init init;
  try {
    init.run();
  } catch (const std::exception& exception) {
    init.fail(Error{std::string("unexpected exception: ") + exception.what()});
  } catch (...) {
    init.fail(Error{"unexpected exception"});
  }
}

void resetChildSignals() { resetSignals(); }

void execConfined(const agent::WorkloadSpec& spec, int console_fd, bool confine, const PreparedConfinement* prepared) {
  execWorkload(spec, console_fd, confine, prepared);
}

Result<PreparedConfinement> prepareConfinement(const agent::WorkloadSpec& spec, int console_fd) {
  PreparedConfinement prepared;
  auto profile = parseSeccompProfile(spec.seccomp_default, spec.seccomp_rules);
  if (!profile.ok()) return profile.error();
  if (*profile) {
    auto filter = buildSeccompFilter(**profile);
    if (!filter.ok()) return filter.error();
    if (!filter->skippedSyscalls().empty()) {
      logTo(console_fd, "seccomp: skipping syscalls unknown to libseccomp " + seccompLibraryVersion() + ": " +
                            joined(filter->skippedSyscalls(), ", "));
    }
    auto program = filter->program();
    if (!program.ok()) return program.error();
    prepared.seccomp = std::move(*program);
  }
  auto last_capability = readLastCapability();
  if (!last_capability.ok()) return last_capability.error();
  prepared.last_capability = *last_capability;
  return prepared;
}

std::string describeErrno(int error_number) { return errnoText(error_number); }

Result<ExecUser> resolveUser(std::string_view user, std::string_view passwd, std::string_view group) {
  std::string_view user_arg = user;
  std::string_view group_arg;
  if (size_t colon = user.find(':'); colon != std::string_view::npos) {
    user_arg = user.substr(0, colon);
    group_arg = user.substr(colon + 1);
  }
  if (user_arg.empty()) user_arg = "0";  // Docker: no user means root.

  ExecUser result;
  std::string_view matched_name;
  std::optional<uint32_t> uid = parseId(user_arg);
  std::vector<PasswdEntry> users = parsePasswd(passwd);
  auto entry = std::find_if(users.begin(), users.end(), [&](const PasswdEntry& candidate) {
    return uid ? candidate.uid == *uid : candidate.name == user_arg;
  });
  if (entry != users.end()) {
    result.uid = entry->uid;
    result.gid = entry->gid;
    if (!entry->home.empty()) result.home = std::string(entry->home);
    matched_name = entry->name;
  } else if (uid) {
    result.uid = *uid;
  } else {
    return Error{"unable to find user " + std::string(user_arg) + ": no matching entries in passwd file"};
  }

  std::vector<GroupEntry> groups = parseGroup(group);
  if (!group_arg.empty()) {
    std::optional<uint32_t> gid = parseId(group_arg);
    auto found = std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& candidate) {
      return candidate.name == group_arg || (gid && candidate.gid == *gid);
    });
    if (found != groups.end()) {
      result.gid = found->gid;
    } else if (gid) {
      result.gid = *gid;
    } else {
      return Error{"unable to find group " + std::string(group_arg) + ": no matching entries in group file"};
    }
  } else if (!matched_name.empty()) {
    for (const GroupEntry& candidate : groups) {
      if (std::find(candidate.members.begin(), candidate.members.end(), matched_name) != candidate.members.end()) {
        result.supplementary_groups.push_back(candidate.gid);
      }
    }
  }
  return result;
}

std::vector<std::string> workloadEnvironment(const std::vector<std::string>& env, std::string_view hostname,
                                             std::string_view home) {
  std::vector<std::string> result;
  auto key_of = [](std::string_view variable) { return variable.substr(0, variable.find('=')); };
  auto find_key = [&](std::string_view key) {
    return std::find_if(result.begin(), result.end(),
                        [&](const std::string& variable) { return key_of(variable) == key; });
  };
  for (const std::string& variable : env) {
    if (auto existing = find_key(key_of(variable)); existing != result.end()) {
      *existing = variable;
    } else {
      result.push_back(variable);
    }
  }
  auto add_default = [&](std::string_view key, std::string_view value) {
    if (find_key(key) == result.end()) result.push_back(std::string(key) + "=" + std::string(value));
  };
  add_default("PATH", kDefaultPath);
  if (!hostname.empty()) add_default("HOSTNAME", hostname);
  add_default("HOME", home);
  return result;
}

ExecFailure describeExecFailure(std::string_view argv0, int error_number) {
  std::string prefix = "exec \"" + std::string(argv0) + "\": ";
  if (error_number == ENOENT) {
    bool is_path = argv0.find('/') != std::string_view::npos;
    return {prefix + (is_path ? "no such file or directory" : "executable file not found in $PATH"), 127};
  }
  return {prefix + errnoText(error_number), kCannotRunCode};
}

int exitCodeFromWaitStatus(int status) {
  return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

Result<MountCall> planVolumeMount(const agent::MountSpec& volume) {
  bool is_9p = volume.fstype == "9p";
  MountCall call;
  call.description = "volume " + (is_9p ? volume.source : volume.fstype) + " on " + volume.target;
  auto refuse = [&](std::string_view why) { return Error{"mount " + call.description + ": " + std::string(why)}; };
  if (volume.target.empty() || volume.target.front() != '/') return refuse("the target must be an absolute path");
  bool names_root = true;
  for (std::string_view component : split(volume.target, '/')) {
    if (component == "..") return refuse("the target must not contain '..'");
    if (!component.empty() && component != ".") names_root = false;
  }
  if (names_root) return refuse("cannot mount over /");
  call.target = volume.target;
  call.flags = volume.readonly ? MS_RDONLY : 0;
  if (is_9p) {
    if (volume.source.empty()) return refuse("a 9p volume needs a mount tag");
    call.source = volume.source;
    call.fstype = "9p";
    call.data = k9pMountOptions;
    if (!volume.options.empty()) call.data += "," + volume.options;
  } else if (volume.fstype == "tmpfs") {
    call.source = "tmpfs";
    call.fstype = "tmpfs";
    call.flags |= MS_NOSUID | MS_NODEV;
    call.data = volume.options;
  } else {
    return refuse("unknown filesystem type \"" + volume.fstype + "\" (want 9p or tmpfs)");
  }
  return call;
}

Result<InterfaceAddress> parseInterfaceAddress(std::string_view text) {
  size_t slash = text.find('/');
  auto bad = Error{"network: bad interface address \"" + std::string(text) + "\" (want ADDRESS/PREFIX)"};
  if (slash == std::string_view::npos) return bad;
  InterfaceAddress out;
  out.address = std::string(text.substr(0, slash));
  std::string_view prefix = text.substr(slash + 1);
  auto [end, ec] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), out.prefix_length);
  if (prefix.empty() || ec != std::errc() || end != prefix.data() + prefix.size()) return bad;
  in6_addr v6{};
  in_addr v4{};
  if (::inet_pton(AF_INET, out.address.c_str(), &v4) == 1) {
    if (out.prefix_length < 0 || out.prefix_length > 32) return bad;
  } else if (::inet_pton(AF_INET6, out.address.c_str(), &v6) == 1) {
    out.ipv6 = true;
    if (out.prefix_length < 0 || out.prefix_length > 128) return bad;
  } else {
    return bad;
  }
  return out;
}

Result<SysctlWrite> parseSysctl(std::string_view assignment) {
  auto refuse = [&](std::string_view why) {
    return Error{"sysctl \"" + std::string(assignment) + "\": " + std::string(why)};
  };
  size_t equals = assignment.find('=');
  if (equals == std::string_view::npos) return refuse("want KEY=VALUE");
  std::string_view key = assignment.substr(0, equals);
  if (key.empty()) return refuse("empty key");
  if (key.find('/') != std::string_view::npos) return refuse("the key must not contain '/'");
  if (key.find("..") != std::string_view::npos) return refuse("the key must not contain '..'");
  if (key.find('\0') != std::string_view::npos) return refuse("the key must not contain a NUL byte");
  SysctlWrite write{"/proc/sys", std::string(assignment.substr(equals + 1))};
  for (std::string_view component : split(key, '.')) {
    if (component.empty()) return refuse("the key has an empty component");
    write.path += '/';
    write.path += component;
  }
  return write;
}

CapabilityPlan planCapabilities(uint64_t mask, int last_capability, uid_t uid) {
  last_capability = std::clamp(last_capability, -1, 63);
  uint64_t known = last_capability == 63 ? ~uint64_t{0} : (uint64_t{1} << (last_capability + 1)) - 1;
  CapabilityPlan plan;
  for (int capability = 0; capability <= last_capability; ++capability) {
    if ((mask >> capability & 1) == 0) plan.bounding_drops.push_back(capability);
  }
  if (uid == 0) plan.permitted = plan.effective = plan.inheritable = mask & known;
  return plan;
}

Result<int> parseLastCapability(std::string_view text) {
  text = trim(text);
  int value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value < 0) {
    return Error{"cannot parse /proc/sys/kernel/cap_last_cap: \"" + std::string(text) + "\""};
  }
  if (value > 63) {
    return Error{"/proc/sys/kernel/cap_last_cap is " + std::to_string(value) +
                 ": capabilities above 63 do not fit the workload's capability mask"};
  }
  return value;
}

bool loadSeccompBeforeUserSwitch(const CapabilityPlan& plan, bool no_new_privs) {
  return !no_new_privs && (plan.effective >> CAP_SYS_ADMIN & 1) == 0;
}

Result<SeccompAction> parseSeccompAction(std::string_view text) {
  using Kind = SeccompAction::Kind;
  if (text == "allow") return SeccompAction{Kind::kAllow, 0};
  if (text == "kill") return SeccompAction{Kind::kKill, 0};
  constexpr std::string_view kErrnoPrefix = "errno:";
  if (text.starts_with(kErrnoPrefix)) {
    std::string_view digits = text.substr(kErrnoPrefix.size());
    int value = 0;
    auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    // 4095 is the kernel's MAX_ERRNO; from_chars would also take a '-'.
    if (!digits.empty() && std::isdigit(static_cast<unsigned char>(digits.front())) && error == std::errc() &&
        end == digits.data() + digits.size() && value <= 4095) {
      return SeccompAction{Kind::kErrno, value};
    }
  }
  return Error{"unknown seccomp action \"" + std::string(text) + "\" (want allow, kill or errno:N with N <= 4095)"};
}

Result<std::optional<SeccompProfile>> parseSeccompProfile(std::string_view default_action,
                                                          const std::vector<std::string>& rules) {
  if (default_action.empty()) {
    if (rules.empty()) return std::optional<SeccompProfile>();
    return Error{"seccomp: " + std::to_string(rules.size()) + " rules but no default action"};
  }
  auto parsed_default = parseSeccompAction(default_action);
  if (!parsed_default.ok()) return Error{"seccomp default action: " + parsed_default.error().message};
  SeccompProfile profile{*parsed_default, {}};
  for (const std::string& text : rules) {
    auto refuse = [&](std::string_view why) { return Error{"seccomp rule \"" + text + "\": " + std::string(why)}; };
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return refuse("want ACTION:SYSCALL");
    std::string_view syscall = std::string_view(text).substr(colon + 1);
    int arg = -1;
    uint32_t value = 0;
    if (size_t bracket = syscall.find('['); bracket != std::string_view::npos) {
      // "socket[0]=40": one digit, "]=", a decimal value.
      std::string_view condition = syscall.substr(bracket);
      syscall = syscall.substr(0, bracket);
      std::string_view digits = condition.size() > 4 ? condition.substr(4) : std::string_view();
      auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
      if (condition.size() <= 4 || condition[1] < '0' || condition[1] > '5' || condition.substr(2, 2) != "]=" ||
          digits.empty() || !std::isdigit(static_cast<unsigned char>(digits.front())) || error != std::errc() ||
          end != digits.data() + digits.size()) {
        return refuse("want SYSCALL[ARG]=VALUE with ARG 0 to 5 and a 32-bit VALUE");
      }
      arg = condition[1] - '0';
    }
    bool valid_name = !syscall.empty() && std::all_of(syscall.begin(), syscall.end(), [](char c) {
      return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_';
    });
    if (!valid_name) return refuse("not a syscall name: \"" + std::string(syscall) + "\"");
    auto action = parseSeccompAction(std::string_view(text).substr(0, colon));
    if (!action.ok()) return refuse(action.error().message);
    auto same_syscall = std::find_if(profile.rules.begin(), profile.rules.end(), [&](const SeccompRule& rule) {
      return rule.syscall == syscall && rule.arg == arg && rule.value == value;
    });
    bool mixed = std::any_of(profile.rules.begin(), profile.rules.end(), [&](const SeccompRule& rule) {
      return rule.syscall == syscall && (rule.arg < 0) != (arg < 0);
    });
    // Which one libseccomp would apply is not worth guessing.
    if (mixed) return refuse(std::string(syscall) + " has rules both with and without a condition");
    if (same_syscall == profile.rules.end()) {
      profile.rules.push_back(SeccompRule{*action, std::string(syscall), arg, value});
    } else if (same_syscall->action != *action) {
      // libseccomp would silently keep the first; the host meant one of them.
      return refuse(std::string(syscall) + " already has a rule with another action");
    }
  }
  // Without execve the workload could never start, and since even the write
  // of the error and exit_group() would likely be filtered, the child would
  // die of a signal without a word. A condition on execve is refused, so
  // this is known now.
  if (std::any_of(profile.rules.begin(), profile.rules.end(),
                  [](const SeccompRule& rule) { return rule.syscall == "execve" && rule.arg >= 0; })) {
    return Error{"seccomp: a rule for execve with a condition could keep the workload from starting"};
  }
  auto execve_rule = std::find_if(profile.rules.begin(), profile.rules.end(),
                                  [](const SeccompRule& rule) { return rule.syscall == "execve"; });
  const SeccompAction& execve_action =
      execve_rule != profile.rules.end() ? execve_rule->action : profile.default_action;
  if (execve_action.kind != SeccompAction::Kind::kAllow) {
    return Error{"seccomp: the profile does not allow execve, so the workload could never start"};
  }
  // Only now, so that "allow:read" still conflicts with "errno:1:read" under
  // an allow default. libseccomp refuses such rules; they change nothing.
  std::erase_if(profile.rules, [&](const SeccompRule& rule) { return rule.action == profile.default_action; });
  return std::optional<SeccompProfile>(std::move(profile));
}

namespace {

uint32_t libseccompAction(const SeccompAction& action) {
  switch (action.kind) {
    case SeccompAction::Kind::kAllow: return SCMP_ACT_ALLOW;
    // The whole process: killing one thread of a multi-threaded workload would
    // leave the rest running without it.
    case SeccompAction::Kind::kKill: return SCMP_ACT_KILL_PROCESS;
    case SeccompAction::Kind::kErrno: return SCMP_ACT_ERRNO(static_cast<uint16_t>(action.error_number));
  }
  return SCMP_ACT_KILL_PROCESS;  // Not reached: the switch covers every kind.
}

// libseccomp returns negated errno values.
Error seccompError(std::string_view what, int result) {
  return Error{"seccomp: " + std::string(what) + ": " + errnoText(-result)};
}

}  // namespace

SeccompFilter::SeccompFilter(SeccompFilter&& other) noexcept
    : context_(std::exchange(other.context_, nullptr)), skipped_(std::move(other.skipped_)) {}

SeccompFilter& SeccompFilter::operator=(SeccompFilter&& other) noexcept {
  if (this != &other) {
    if (context_ != nullptr) seccomp_release(context_);
    context_ = std::exchange(other.context_, nullptr);
    skipped_ = std::move(other.skipped_);
  }
  return *this;
}

SeccompFilter::~SeccompFilter() {
  if (context_ != nullptr) seccomp_release(context_);
}

Status SeccompFilter::load() {
  if (int result = seccomp_load(context_); result != 0) return seccompError("load the filter", result);
  return Ok{};
}

Result<std::vector<sock_filter>> SeccompFilter::program() const {
  // libseccomp exports only to an fd.
  UniqueFd memory(static_cast<int>(::syscall(SYS_memfd_create, "seccomp-bpf", MFD_CLOEXEC)));
  if (!memory.valid()) return systemError("seccomp: memfd for the program");
  if (int result = seccomp_export_bpf(context_, memory.get()); result != 0) {
    return seccompError("export the program", result);
  }
  off_t size = ::lseek(memory.get(), 0, SEEK_END);
  if (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0 || size > (1 << 20)) {
    return Error{"seccomp: exported program has a bad size"};
  }
  std::vector<sock_filter> program(static_cast<size_t>(size) / sizeof(sock_filter));
  // SAFETY: sock_filter is a plain struct; pread fills exactly the vector's bytes.
  if (::pread(memory.get(), reinterpret_cast<char*>(program.data()), static_cast<size_t>(size), 0) != size) {
    return systemError("seccomp: read the program");
  }
  return program;
}

Status installSeccompProgram(const std::vector<sock_filter>& program) {
  sock_fprog filter{static_cast<unsigned short>(program.size()), const_cast<sock_filter*>(program.data())};
  // The flags libseccomp uses with its default attributes (no TSYNC, LOG or
  // SPEC_ALLOW); no_new_privs is the caller's business, as with load().
  if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &filter) != 0) return systemError("seccomp: install the filter");
  return Ok{};
}

Result<SeccompFilter> buildSeccompFilter(const SeccompProfile& profile) {
  scmp_filter_ctx context = seccomp_init(libseccompAction(profile.default_action));
  if (context == nullptr) return Error{"seccomp: cannot create a filter"};
  SeccompFilter filter(context);
  // libseccomp would set no_new_privs on load by default; whether the workload
  // gets it is the spec's decision alone.
  if (int result = seccomp_attr_set(context, SCMP_FLTATR_CTL_NNP, 0); result != 0) {
    return seccompError("turn off the implicit no_new_privs", result);
  }
  if (int result = seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS); result != 0) {
    return seccompError("set the bad-architecture action", result);
  }
  for (const SeccompRule& rule : profile.rules) {
    int number = seccomp_syscall_resolve_name(rule.syscall.c_str());
    if (number == __NR_SCMP_ERROR) {
      filter.skipped_.push_back(rule.syscall);
      continue;
    }
    // Syscalls of other architectures only (socketcall, _llseek) resolve to
    // negative pseudo-numbers, which libseccomp leaves out of the filter.
    // The low 32 bits only: the kernel reads an int argument from the low
    // half of its register, whatever the upper half holds.
    scmp_arg_cmp condition{static_cast<unsigned int>(rule.arg), SCMP_CMP_MASKED_EQ, 0xffffffffu, rule.value};
    unsigned int conditions = rule.arg >= 0 ? 1 : 0;
    if (int result = seccomp_rule_add_array(context, libseccompAction(rule.action), number, conditions, &condition);
        result != 0) {
      return seccompError("add the rule for " + rule.syscall, result);
    }
  }
  return filter;
}

std::string seccompLibraryVersion() {
  const scmp_version* version = seccomp_version();
  return std::to_string(version->major) + "." + std::to_string(version->minor) + "." + std::to_string(version->micro);
}

}  // namespace microvm::guest
