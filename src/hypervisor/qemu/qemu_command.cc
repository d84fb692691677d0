#include "hypervisor/qemu/qemu_command.h"

#include <initializer_list>

namespace microvm {

namespace {

std::string procFd(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// The fd set (-add-fd ... set=N) each handed-over file is in; QEMU opens
// "/dev/fdset/N" by dup'ing the fd of the matching access mode.
constexpr int kConsoleFdSet = 1;
constexpr int kDiskFdSet = 2;
constexpr int kBaseDiskFdSet = 3;

// QEMU's option syntax doubles a comma that is part of a value.
std::string escapeCommas(const std::string& value) {
  std::string escaped;
  for (char c : value) escaped += c == ',' ? std::string(",,") : std::string(1, c);
  return escaped;
}

std::string fdSet(int set) { return "/dev/fdset/" + std::to_string(set); }
std::string addFd(int fd, int set) { return "fd=" + std::to_string(fd) + ",set=" + std::to_string(set); }

QemuFd inherited(int target, int fd, std::string what) {
  return {target, QemuFd::Source::kInherited, fd, {}, 0, std::move(what)};
}
QemuFd opened(int target, QemuFd::Source source, std::filesystem::path path, std::string what, int fd_set = 0) {
  return {target, source, -1, std::move(path), fd_set, std::move(what)};
}

}  // namespace

std::string kernelCommandLine(const MachineConfig& config) {
  // reboot=t: the guest "powers off" with a triple-fault reset, which
  // -no-reboot turns into QEMU exiting; microvm has no ACPI power button.
  // panic=-1: a guest panic resets at once, so QEMU exits instead of hanging.
  std::string cmdline = "console=ttyS0 reboot=t panic=-1 quiet";
  if (config.accel == Acceleration::kTcg && config.tsc_khz > 0) {
    // Without the hint a TCG guest calibrates its TSC against the PIT and
    // hangs at random (PLATFORM_NOTES: 13 of 18 parallel boots).
    // tsc=reliable: a TCG guest's TSC is the host's, but on a busy host the
    // clocksource watchdog misjudges it as unstable, falls back to jiffies
    // and costs a third of a second of boot.
    cmdline += " tsc_early_khz=" + std::to_string(config.tsc_khz) + " tsc=reliable";
  }
  return cmdline;
}

QemuCommand buildQemuCommand(const std::string& binary, const MachineConfig& config, bool as_root) {
  using Source = QemuFd::Source;
  QemuCommand command;
  auto& argv = command.argv;
  auto& fds = command.fds;
  argv.push_back(binary);
  auto add = [&argv](std::initializer_list<std::string> args) { argv.insert(argv.end(), args); };

  std::string machine = "microvm,x-option-roms=off,isa-serial=on,acpi=off";
  if (config.memory_fd >= 0) {
    // RAM the runner shares: it copies the pages itself when it saves the
    // VM and maps them back on restore, so the migration stream skips RAM
    // (x-ignore-shared, set over QMP by the backend), and a restore need
    // not load, and fault in, every page of guest memory before it runs.
    //
    // A boot template's memory is mapped private instead (share=off): the
    // VMs made from it share its clean pages, and each one's writes stay
    // its own. QEMU opens the path read-write, which only a memfd sealed
    // against writes makes safe (runner/template_memory.h).
    add({"-object", "memory-backend-file,id=mem,size=" + std::to_string(config.memory_mib) +
                        "M,mem-path=" + procFd(kQemuMemoryFd) +
                        (config.memory_private ? ",share=off" : ",share=on")});
    fds.push_back(inherited(kQemuMemoryFd, config.memory_fd, "guest memory"));
    machine += ",memory-backend=mem";
  } else if (!config.vhost_vsock_socket.empty()) {
    // A vhost-user back-end reads and writes guest RAM itself: it must be a
    // shared file it can map (PLATFORM_NOTES: vhost-user section).
    add({"-object", "memory-backend-memfd,id=mem,size=" + std::to_string(config.memory_mib) + "M,share=on"});
    machine += ",memory-backend=mem";
  } else {
    // QEMU's own anonymous RAM, under the same name ("mem") as the other
    // back-ends': a saved state names its RAM block, and loads only into
    // one of that name.
    add({"-object", "memory-backend-ram,id=mem,size=" + std::to_string(config.memory_mib) + "M"});
    machine += ",memory-backend=mem";
  }
  if (!config.name.empty()) add({"-name", "guest=" + escapeCommas(config.name)});
  add({"-M", machine});
  if (config.accel == Acceleration::kKvm) {
    add({"-accel", "kvm", "-cpu", "host"});
  } else {
    add({"-accel", "tcg,thread=multi", "-cpu", "max"});
  }
  add({"-m", std::to_string(config.memory_mib), "-smp", std::to_string(config.cpus)});
  add({"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"});
  // The VMM itself may not spawn, elevate or use obsolete syscalls.
  add({"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"});
  if (config.incoming_fd < 0) {
    add({"-kernel", procFd(kQemuKernelFd), "-initrd", procFd(kQemuInitramfsFd)});
    fds.push_back(opened(kQemuKernelFd, Source::kReadOnlyFile, config.kernel, "guest kernel"));
    fds.push_back(opened(kQemuInitramfsFd, Source::kReadOnlyFile, config.initramfs, "initramfs"));
    add({"-append", kernelCommandLine(config)});
  }
  // A restore needs no kernel: the guest's memory, kernel and all, comes
  // from the saved state, and QEMU does not copy ROM images into RAM for an
  // incoming migration. Loading the 20 MB image cost 25-60 ms of QEMU's start.
  // A source of entropy for the guest's RNG (hw_random, which feeds the
  // kernel's pool): rng-builtin reads QEMU's own getrandom, so no file needs
  // to be opened in QEMU's sandbox. A restored copy reseeds from it and from
  // the runner's refresh frame (agent/control_protocol.h).
  add({"-object", "rng-builtin,id=rng0", "-device", "virtio-rng-device,rng=rng0"});
  if (config.console_fd >= 0) {
    add({"-chardev", "socket,id=con,fd=" + std::to_string(kQemuConsoleFd), "-serial", "chardev:con"});
    fds.push_back(inherited(kQemuConsoleFd, config.console_fd, "console"));
  } else if (config.console_log.empty()) {
    add({"-serial", "null"});
  } else {
    add({"-add-fd", addFd(kQemuConsoleFd, kConsoleFdSet), "-serial", "file:" + fdSet(kConsoleFdSet)});
    fds.push_back(opened(kQemuConsoleFd, Source::kLogFile, config.console_log, "console log", kConsoleFdSet));
  }
  if (!config.root_disk.empty()) {
    // The overlay before its base: the order they are opened in.
    fds.push_back(opened(kQemuDiskFd, Source::kDisk, config.root_disk, "root disk", kDiskFdSet));
    // The base is a node of its own, named as the overlay's backing: QEMU
    // does not open the path recorded in the overlay. So is each frozen
    // layer between them, the one below as its backing.
    std::string backing;
    if (!config.base_disk.empty()) {
      add({"-add-fd", addFd(kQemuBaseDiskFd, kBaseDiskFdSet), "-blockdev",
           "driver=raw,node-name=base,read-only=on,file.driver=file,file.filename=" + fdSet(kBaseDiskFdSet) +
               ",file.read-only=on"});
      fds.push_back(opened(kQemuBaseDiskFd, Source::kReadOnlyDisk, config.base_disk, "base disk", kBaseDiskFdSet));
      backing = ",backing=base";
    }
    for (size_t i = 0; i < config.disk_layers.size(); ++i) {
      int target = kQemuFirstShareFd + static_cast<int>(config.shares.size() + i);
      int set = kFirstDiskLayerFdSet + static_cast<int>(i);
      std::string node = "layer" + std::to_string(i);
      add({"-add-fd", addFd(target, set), "-blockdev",
           "driver=qcow2,node-name=" + node + ",read-only=on" + backing + ",file.driver=file,file.filename=" +
               fdSet(set) + ",file.read-only=on"});
      fds.push_back(opened(target, Source::kReadOnlyDisk, config.disk_layers[i], "disk layer " + node, set));
      backing = ",backing=" + node;
    }
    // A disk deleted with the VM (run --rm) ignores the guest's flushes: an
    // fdatasync per sync() in the guest bought nothing for a file about to go.
    std::string no_flush = config.ephemeral_disk ? ",cache.no-flush=on,file.cache.no-flush=on" : "";
    add({"-add-fd", addFd(kQemuDiskFd, kDiskFdSet), "-blockdev",
         "driver=qcow2,node-name=root,discard=unmap" + backing + no_flush + ",file.driver=file,file.filename=" +
             fdSet(kDiskFdSet) + ",file.discard=unmap",
         "-device", "virtio-blk-device,drive=root"});
  }
  for (size_t i = 0; i < config.shares.size(); ++i) {
    const auto& share = config.shares[i];
    int target = kQemuFirstShareFd + static_cast<int>(i);
    std::string id = "fs" + std::to_string(i);
    // passthrough keeps the guest's owners on the host when QEMU may chown
    // (root, or a VMM user given CAP_CHOWN); otherwise files are simply
    // created as QEMU's user.
    std::string model = as_root ? "passthrough" : "none";
    add({"-fsdev", "local,id=" + id + ",path=" + procFd(target) + ",security_model=" + model +
                       (share.readonly ? ",readonly=on" : ""),
         "-device", "virtio-9p-device,fsdev=" + id + ",mount_tag=" + share.tag});
    fds.push_back(share.fd >= 0 ? inherited(target, share.fd, "volume " + share.host.string())
                                : opened(target, Source::kDirectory, share.host, "volume " + share.host.string()));
  }
  if (!config.vhost_vsock_socket.empty()) {
    add({"-chardev", "socket,id=vsock,fd=" + std::to_string(kQemuVsockFd), "-device",
         "vhost-user-vsock-device,chardev=vsock"});
    fds.push_back(opened(kQemuVsockFd, Source::kUnixConnect, config.vhost_vsock_socket, "vsock"));
  }
  if (config.control_fd >= 0 || config.agent_fd >= 0) add({"-device", "virtio-serial-device,max_ports=3"});
  if (config.control_fd >= 0) {
    add({"-chardev", "socket,id=ctl,fd=" + std::to_string(kQemuControlFd), "-device",
         "virtserialport,chardev=ctl,name=microvm.ctl"});
    fds.push_back(inherited(kQemuControlFd, config.control_fd, "control channel"));
  }
  if (config.agent_fd >= 0) {
    // The agent's streams, multiplexed by the runner; unlike vsock, QEMU can
    // save this device in a snapshot.
    add({"-chardev", "socket,id=agent,fd=" + std::to_string(kQemuAgentFd), "-device",
         "virtserialport,chardev=agent,name=microvm.agent"});
    fds.push_back(inherited(kQemuAgentFd, config.agent_fd, "agent channel"));
  }
  if (config.net_fd >= 0) {
    // Frames go over the inherited stream socket (4-byte length + frame) to
    // the runner's network stack.
    add({"-netdev", "stream,id=net0,server=off,addr.type=fd,addr.str=" + std::to_string(kQemuNetFd), "-device",
         "virtio-net-device,netdev=net0,host_mtu=" + std::to_string(config.net_mtu) + ",mac=" + kGuestMac});
    fds.push_back(inherited(kQemuNetFd, config.net_fd, "network"));
  }
  if (!config.qmp_socket.empty()) {
    add({"-chardev", "socket,id=qmp,fd=" + std::to_string(kQemuQmpFd) + ",server=on,wait=off", "-mon",
         "chardev=qmp,mode=control"});
    fds.push_back(opened(kQemuQmpFd, Source::kUnixListen, config.qmp_socket, "QMP"));
  }
  if (config.incoming_fd >= 0) {
    // With shared RAM the x-ignore-shared capability must be set (over QMP)
    // before the state is read: the backend starts it (migrate-incoming).
    add({"-incoming", config.memory_fd >= 0 ? "defer" : "fd:" + std::to_string(kQemuIncomingFd)});
    fds.push_back(inherited(kQemuIncomingFd, config.incoming_fd, "saved state"));
  }
  // QEMU's own diagnostics; not named in the argv.
  if (config.stderr_fd >= 0) fds.push_back(inherited(2, config.stderr_fd, "stderr"));
  return command;
}

}  // namespace microvm
