#include "guest/boot.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <optional>

#include "base/eintr.h"
#include "base/fs.h"
#include "base/unique_fd.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

constexpr char kNewRoot[] = "/mnt/root";

Result<void> mountFilesystem(const std::string& source, const std::string& target, const char* type,
                             unsigned long flags, const char* options) {
  if (::mount(source.c_str(), target.c_str(), type, flags, options) == 0) return {};
  std::string what = (flags & MS_MOVE) ? "move mount " + source : "mount " + source + " (" + type + ")";
  return systemError(what + " on " + target);
}

Result<void> waitForPath(const std::string& path, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (::access(path.c_str(), F_OK) != 0) {
    if (Clock::now() >= deadline) {
      return Error(ErrorCode::kTimeout, path + " did not appear within " + std::to_string(timeout.count()) + " ms");
    }
    sleepFor(kPollInterval);
  }
  return {};
}

// Makes fds 0-2 the console. The kernel leaves them closed when the initramfs
// has no /dev/console, and until they are open every new fd (the control
// port!) would land on 0-2 and receive init's diagnostics.
Result<void> attachConsole() {
  int fd = retryOnEintr([] { return ::open("/dev/console", O_RDWR | O_NOCTTY); });
  if (fd < 0) fd = retryOnEintr([] { return ::open("/dev/null", O_RDWR); });
  if (fd < 0) return systemError("open /dev/console and /dev/null");
  for (int target = 0; target <= 2; ++target) {
    if (fd != target && ::dup2(fd, target) < 0) return systemError("dup2 console");
  }
  if (fd > 2) ::close(fd);
  return {};
}

// noatime: reading the image's files must not dirty its inodes, which
// would cost disk writes into the VM's overlay and a flush at power-off.
constexpr unsigned long kRootFlags = MS_NOATIME;

Result<void> mountRoot(const agent::WorkloadSpec& spec, bool premounted) {
  const agent::WorkloadSpec defaults;
  if (premounted) {
    if (spec.root_device == defaults.root_device && spec.root_fstype == defaults.root_fstype) {
      // The guest restored from a boot template mounted it before it was
      // saved: its cached blocks are the base disk's, which every VM of the
      // template has unchanged under its own overlay. Written from here on.
      if (::mount(nullptr, kNewRoot, nullptr, MS_REMOUNT | kRootFlags, nullptr) == 0) return {};
      return systemError(std::string("remount ") + kNewRoot + " read-write");
    }
    if (::umount(kNewRoot) != 0) return systemError(std::string("unmount ") + kNewRoot);
  }
  if (auto made = makeDirectories(kNewRoot, 0755); !made.ok()) return made;
  if (auto appeared = waitForPath(spec.root_device, kDeviceTimeout); !appeared.ok()) return appeared;
  // A guest restored from a boot template read the disk's first blocks
  // (the kernel's partition scan) before it was saved, from the template's
  // disk: drop them, so that the mount reads this VM's disk.
  if (UniqueFd disk(retryOnEintr([&] { return ::open(spec.root_device.c_str(), O_RDONLY | O_CLOEXEC); }));
      !disk.valid() || ::ioctl(disk.get(), BLKFLSBUF, 0) != 0) {
    log(systemError("drop the cached blocks of " + spec.root_device).message());
  }
  return mountFilesystem(spec.root_device, kNewRoot, spec.root_fstype.c_str(), kRootFlags, nullptr);
}

// Opens (creating if missing) the directory `name` under `parent`, refusing
// a symlink: a hook's path must not lead out of where it says.
Result<UniqueFd> openChildDirectory(int parent, const std::string& name, const std::string& shown) {
  struct stat info {};
  if (::fstatat(parent, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT) return systemError("stat " + shown);
    if (::mkdirat(parent, name.c_str(), 0755) != 0 && errno != EEXIST) return systemError("mkdir " + shown);
  } else if (S_ISLNK(info.st_mode)) {
    return Error(ErrorCode::kInvalidArgument, shown + " is a symlink");
  } else if (!S_ISDIR(info.st_mode)) {
    return Error(ErrorCode::kInvalidArgument, shown + " is not a directory");
  }
  UniqueFd fd(::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return systemError("open " + shown);
  return fd;
}

// `content`: the file's bytes (from the spec); nullptr: its data file in
// kInjectDir.
Result<void> copyInjectedFile(int parent, const std::string& name, const InjectEntry& entry,
                              const std::string* content) {
  std::string data_path = std::string(kInjectDir) + "/" + std::to_string(entry.index);
  UniqueFd source;
  if (content == nullptr) {
    source.reset(::open(data_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!source.valid()) return systemError("open " + data_path);
  }
  struct stat info {};
  if (::fstatat(parent, name.c_str(), &info, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISREG(info.st_mode)) {
    return Error(ErrorCode::kInvalidArgument,
                 entry.path + (S_ISLNK(info.st_mode) ? " is a symlink" : " exists and is not a regular file"));
  }
  UniqueFd target(::openat(parent, name.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!target.valid()) return systemError("create " + entry.path);
  if (content != nullptr) {
    if (auto written = writeAll(target.get(), *content); !written) return systemError("write " + entry.path);
  } else {
    switch (copyToEnd(source.get(), target.get())) {
      case CopyResult::kReadFailed: return systemError("read " + data_path);
      case CopyResult::kWriteFailed: return systemError("write " + entry.path);
      case CopyResult::kDone: break;
    }
  }
  // Owner before mode: chown clears set-id bits.
  if (::fchown(target.get(), entry.uid, entry.gid) != 0) return systemError("chown " + entry.path);
  if (::fchmod(target.get(), entry.mode) != 0) return systemError("chmod " + entry.path);
  return {};
}

// Writes the rootfs hooks' entries into the root disk mounted at `root`;
// contents[i] is entry i's bytes, or nullptr for its data file in kInjectDir.
Result<void> writeInjectEntries(const std::string& root, const std::vector<InjectEntry>& entries,
                                const std::vector<const std::string*>& contents) {
  for (size_t index = 0; index < entries.size(); ++index) {
    const InjectEntry& entry = entries[index];
    UniqueFd dir(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir.valid()) return systemError("open " + root);
    auto parts = split(std::string_view(entry.path).substr(1), '/');
    std::string shown;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      shown += "/" + std::string(parts[i]);
      auto child = openChildDirectory(dir.get(), std::string(parts[i]), shown);
      if (!child.ok()) return child.error().withContext("rootfs hook: " + entry.path);
      dir = std::move(*child);
    }
    std::string leaf(parts.back());
    if (entry.directory) {
      auto made = openChildDirectory(dir.get(), leaf, entry.path);
      if (!made.ok()) return made.error().withContext("rootfs hook");
      if (::fchown(made->get(), entry.uid, entry.gid) != 0 || ::fchmod(made->get(), entry.mode) != 0) {
        return systemError("rootfs hook: chown/chmod " + entry.path);
      }
    } else if (auto copied = copyInjectedFile(dir.get(), leaf, entry, contents[index]); !copied.ok()) {
      return copied.error().withContext("rootfs hook");
    }
  }
  return {};
}

// The rootfs hooks' files: those in the initramfs (kInjectDir; no manifest,
// none), then those in the spec.
Result<void> applyInjectedFiles(const std::string& root, const agent::WorkloadSpec& spec) {
  auto manifest = readFileIfExists(std::string(kInjectDir) + "/manifest");
  if (!manifest.ok()) return manifest.error();
  size_t written = 0;
  if (!manifest->empty()) {
    auto entries = parseInjectManifest(*manifest);
    if (!entries.ok()) return entries.error();
    auto done = writeInjectEntries(root, *entries, std::vector<const std::string*>(entries->size(), nullptr));
    if (!done.ok()) return done;
    written += entries->size();
  }
  if (!spec.injected.empty()) {
    auto entries = specInjectEntries(spec.injected);
    if (!entries.ok()) return entries.error();
    std::vector<const std::string*> contents;
    for (const auto& file : spec.injected) contents.push_back(&file.content);
    if (auto done = writeInjectEntries(root, *entries, contents); !done.ok()) return done;
    written += entries->size();
  }
  if (written > 0) log("rootfs hooks: wrote " + std::to_string(written) + " entries");
  return {};
}

// switch_root without exec: the kernel mounts move into the root disk, which
// then replaces the initramfs as "/". (pivot_root cannot leave the initramfs.)
// Init keeps running from the old root's /init, which stays in memory.
// Missing mountpoints are created: the root disk is the VM's own
// copy-on-write overlay, never the image itself.
Result<void> switchRoot() {
  for (std::string dir : {"/dev", "/proc", "/sys"}) {
    std::string target = kNewRoot + dir;
    if (auto made = makeDirectory(target, 0755); !made.ok()) return made;
    if (auto moved = mountFilesystem(dir, target, nullptr, MS_MOVE, nullptr); !moved.ok()) return moved;
  }
  if (::chdir(kNewRoot) != 0) return systemError(std::string("chdir ") + kNewRoot);
  if (auto moved = mountFilesystem(".", "/", nullptr, MS_MOVE, nullptr); !moved.ok()) return moved;
  if (::chroot(".") != 0) return systemError("chroot " + std::string(kNewRoot));
  if (::chdir("/") != 0) return systemError("chdir /");
  return {};
}

Result<void> mountDevpts() {
  if (auto made = makeDirectory("/dev/pts", 0755); !made.ok()) return made;
  // gid=5 is the conventional "tty" group. Should the option be refused,
  // ptys still work without it; they are then owned by the opener's group.
  auto with_tty_group = mountFilesystem("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                                        "newinstance,ptmxmode=0666,mode=0620,gid=5");
  if (with_tty_group.ok()) return with_tty_group;
  return mountFilesystem("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
}

Result<void> makeSymlink(const char* target, const char* path) {
  if (::symlink(target, path) == 0 || errno == EEXIST) return {};
  return systemError(std::string("symlink ") + path + " -> " + target);
}

// The mounts and /dev links that programs in a container expect.
Result<void> mountRuntimeFilesystems() {
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
  if (!cgroup.ok()) log(cgroup.error().message());

  struct Link {
    const char* path;
    const char* target;
  };
  for (const Link& link :
       {Link{"/dev/ptmx", "pts/ptmx"}, Link{"/dev/fd", "/proc/self/fd"}, Link{"/dev/stdin", "/proc/self/fd/0"},
        Link{"/dev/stdout", "/proc/self/fd/1"}, Link{"/dev/stderr", "/proc/self/fd/2"}}) {
    if (auto made = makeSymlink(link.target, link.path); !made.ok()) return made;
  }
  return {};
}

// Volumes and sysctls: PID 1 applies them once the root is in place. The host
// sent each one to be enforced, so none is skipped: the first failure stops
// the VM.

Result<void> mountVolume(const agent::MountSpec& volume) {
  auto call = planVolumeMount(volume);
  if (!call.ok()) return call.error();
  if (auto made = makeDirectories(call->target, 0755); !made.ok()) {
    return made.error().withContext("mount " + call->description);
  }
  if (::mount(call->source.c_str(), call->target.c_str(), call->fstype.c_str(), call->flags, call->data.c_str()) == 0) {
    return {};
  }
  int saved = errno;
  // The kernel answers ENOENT for a tag that no virtio-9p device carries,
  // which would read as if the target were missing.
  std::string why = saved == ENOENT && call->fstype == "9p" ? "no virtio-9p device has the mount tag " + call->source
                                                            : describeErrno(saved);
  return Error(ErrorCode::kIo, "mount " + call->description + ": " + why, saved);
}

}  // namespace

// /dev, the console, /proc and /sys, in the initramfs.
Result<void> setUpEarlyUserspace() {
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

bool premountRoot() {
  const agent::WorkloadSpec defaults;
  if (::access(defaults.root_device.c_str(), F_OK) != 0) return false;  // mounted once the spec names it
  if (auto made = makeDirectories(kNewRoot, 0755); !made.ok()) return false;
  auto mounted =
      mountFilesystem(defaults.root_device, kNewRoot, defaults.root_fstype.c_str(), MS_RDONLY | kRootFlags, nullptr);
  if (!mounted.ok()) log(mounted.error().message() + " (read-only, before the spec)");
  return mounted.ok();
}

Result<void> enterRoot(const agent::WorkloadSpec& spec, bool premounted) {
  if (auto mounted = mountRoot(spec, premounted); !mounted.ok()) return mounted;
  if (auto injected = applyInjectedFiles(kNewRoot, spec); !injected.ok()) return injected;
  if (auto switched = switchRoot(); !switched.ok()) return switched;
  return mountRuntimeFilesystems();
}

Result<void> mountVolumes(const agent::WorkloadSpec& spec) {
  for (const agent::MountSpec& volume : spec.mounts) {
    if (auto mounted = mountVolume(volume); !mounted.ok()) return mounted;
  }
  return {};
}

Result<void> writeSysctl(const std::string& assignment) {
  auto sysctl = parseSysctl(assignment);
  if (!sysctl.ok()) return sysctl.error();
  std::string context = "sysctl " + assignment;
  UniqueFd fd(retryOnEintr([&] { return ::open(sysctl->path.c_str(), O_WRONLY | O_CLOEXEC); }));
  if (!fd.valid()) return systemError("open " + sysctl->path).withContext(context);
  // As `echo VALUE > FILE` and sysctl(8) write it; the kernel ends a string
  // value at the newline and skips it after a number.
  std::string line = sysctl->value + "\n";
  ssize_t written = retryOnEintr([&] { return ::write(fd.get(), line.data(), line.size()); });
  if (written < 0) return systemError("write " + sysctl->path).withContext(context);
  if (static_cast<size_t>(written) != line.size())
    return Error(ErrorCode::kIo, context + ": short write to " + sysctl->path);
  return {};
}

Result<void> writeSysctls(const agent::WorkloadSpec& spec) {
  for (const std::string& assignment : spec.sysctls) {
    if (auto written = writeSysctl(assignment); !written.ok()) return written;
  }
  return {};
}

// An image that has /etc/machine-id gets one of the VM's own, as a systemd
// first boot would make it: every VM of one image (and every VM restored
// from one boot template) is a machine of its own. The RNG is this VM's by
// now (reseeded after a restore).
void writeMachineId() {
  struct stat info {};
  if (::lstat("/etc/machine-id", &info) != 0 || !S_ISREG(info.st_mode)) return;
  unsigned char bytes[16];
  if (::getrandom(bytes, sizeof bytes, 0) != static_cast<ssize_t>(sizeof bytes)) {
    log(systemError("getrandom for /etc/machine-id").message());
    return;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (unsigned char byte : bytes) {
    id += kHex[byte >> 4];
    id += kHex[byte & 0xf];
  }
  UniqueFd fd(retryOnEintr([] { return ::open("/etc/machine-id", O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC); }));
  if (!fd.valid()) {
    log(systemError("open /etc/machine-id").message());
  } else if (auto written = writeAll(fd.get(), id + "\n"); !written) {
    log(written.error().message());
  }
}

void configureSystem(const agent::WorkloadSpec& spec) {
  if (!spec.hostname.empty() && ::sethostname(spec.hostname.data(), spec.hostname.size()) != 0) {
    log(systemError("sethostname " + spec.hostname).message());
  }
  writeMachineId();
}

namespace {

// Why `path` is not an absolute, normalized path of at most 4096 bytes
// (nullptr: it is one).
const char* injectPathProblem(const std::string& path) {
  if (path.size() < 2 || path[0] != '/' || path.size() > 4096) return "bad path";
  if (path.find('\0') != std::string::npos) return "bad path";
  for (std::string_view part : split(std::string_view(path).substr(1), '/')) {
    if (part.empty() || part == "." || part == "..") return "path not normalized";
  }
  return nullptr;
}

}  // namespace

Result<std::vector<InjectEntry>> parseInjectManifest(std::string_view text) {
  std::vector<InjectEntry> entries;
  for (std::string_view line : split(text, '\n')) {
    if (line.empty()) continue;
    auto bad = [&](const char* why) {
      return Error(ErrorCode::kInvalidArgument,
                   "rootfs hook manifest: " + std::string(why) + ": " + std::string(line.substr(0, 200)));
    };
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
    if (const char* why = injectPathProblem(entry.path)) return bad(why);
    entries.push_back(std::move(entry));
  }
  return entries;
}

Result<std::vector<InjectEntry>> specInjectEntries(const std::vector<agent::InjectedFile>& files) {
  std::vector<InjectEntry> entries;
  for (const auto& file : files) {
    auto bad = [&](const char* why) {
      return Error(ErrorCode::kInvalidArgument,
                   "rootfs hook in the spec: " + std::string(why) + ": " + file.path.substr(0, 200));
    };
    if (const char* why = injectPathProblem(file.path)) return bad(why);
    if (file.mode > 07777) return bad("bad mode");
    entries.push_back(InjectEntry{file.directory, file.mode, file.uid, file.gid, /*index=*/0, file.path});
  }
  return entries;
}

Result<MountCall> planVolumeMount(const agent::MountSpec& volume) {
  bool is_9p = volume.fstype == "9p";
  MountCall call;
  call.description = "volume " + (is_9p ? volume.source : volume.fstype) + " on " + volume.target;
  auto refuse = [&](std::string_view why) {
    return Error(ErrorCode::kInvalidArgument, "mount " + call.description + ": " + std::string(why));
  };
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

Result<SysctlWrite> parseSysctl(std::string_view assignment) {
  auto refuse = [&](std::string_view why) {
    return Error(ErrorCode::kInvalidArgument, "sysctl \"" + std::string(assignment) + "\": " + std::string(why));
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

}  // namespace microvm::guest
