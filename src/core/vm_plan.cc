#include "core/vm_plan.h"

#include <sys/ioctl.h>
#include <sys/un.h>
#include <unistd.h>

#include <set>

#include "agent/control_protocol.h"
#include "base/fs.h"
#include "hypervisor/accel.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

Error invalid(const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); }

// A firewall rule as the --egress-allow/-allow-cidr/-deny flags write it.
std::string ruleText(const FirewallRule& rule) {
  std::string text = rule.destination;
  bool cidr = text.find('/') != std::string::npos;
  if (rule.port != 0) {
    // An IPv6 address takes brackets before a port ("[fd00::1]:443").
    if (!cidr && text.find(':') != std::string::npos && text.front() != '[') text = "[" + text + "]";
    text += ":" + std::to_string(rule.port);
  }
  if (!rule.protocol.empty()) text += "/" + rule.protocol;
  return text;
}

// The egress policy the flags and the firewall rules ask for. Without an
// explicit default: deny if anything is allowed (an allowlist), allow if
// there are only deny rules (a denylist).
net::EgressPolicyRequest egressRequest(const RunOptions& options) {
  net::EgressPolicyRequest request{options.egress_allow, options.egress_allow_cidr, options.egress_deny,
                                   options.egress_deny_all, false};
  for (const auto& rule : options.firewall) {
    std::string text = ruleText(rule);
    if (rule.action == FirewallRule::Action::kDeny) {
      request.deny.push_back(text);
    } else if (rule.destination.find('/') != std::string::npos) {
      request.allow_cidr.push_back(text);
    } else {
      request.allow.push_back(text);
    }
  }
  bool any_allow = !request.allow.empty() || !request.allow_cidr.empty();
  bool any_rule = any_allow || !request.deny.empty();
  if (options.firewall_default == FirewallRule::Action::kDeny) {
    request.deny_all = request.deny_all || !any_rule;
  } else if (options.firewall_default == FirewallRule::Action::kAllow) {
    request.default_allow = any_rule && !request.deny_all;
  } else {
    request.default_allow = !any_allow && !request.deny.empty() && !request.deny_all;
  }
  return request;
}

// What to boot, the machine's size, the workload's basics and the log limits.
Result<void> checkBasics(const RunOptions& options, const HostFacts& host) {
  if (options.image.empty() == options.rootfs.empty()) {
    return invalid(options.image.empty() ? "nothing to run: give an image, or a root filesystem with --rootfs DIR"
                                         : "give an image or --rootfs, not both");
  }
  if (!options.rootfs.empty()) {
    if (options.command.empty()) return invalid("no command given (put it after the options, or after --)");
    if (!host.is_directory(options.rootfs)) {
      return invalid("rootfs " + options.rootfs.string() + ": " +
                     (host.exists(options.rootfs) ? "not a directory" : "no such directory"));
    }
  }
  if (!options.command.empty() && options.command[0].empty()) return invalid("the command is an empty string");
  if (options.cpus < 1 || options.cpus > 64) return invalid("cpus must be between 1 and 64");
  if (options.memory_mib < 64 || options.memory_mib > 1024 * 1024) {
    return invalid("memory must be between 64 MiB and 1 TiB");
  }
  if (!options.workdir.empty() && options.workdir[0] != '/') {
    return invalid("working directory \"" + options.workdir + "\" is not an absolute path");
  }
  for (const auto& var : options.env) {
    if (var.find('=') == std::string::npos || var[0] == '=') {
      return invalid("environment entry \"" + var + "\" is not KEY=VALUE");
    }
  }
  if (options.stop_timeout_seconds < 0) return invalid("stop timeout must not be negative");
  if (options.log_max_size < 1024) return invalid("log max-size must be at least 1 KiB");
  if (options.log_max_files < 1 || options.log_max_files > 100) return invalid("log max-file must be between 1 and 100");
  return success();
}

// The volumes, with their tags.
Result<std::vector<VmSpec::Share>> planShares(const RunOptions& options, const HostFacts& host) {
  std::vector<VmSpec::Share> shares;
  for (const auto& volume : options.volumes) {
    if (!host.is_directory(volume.host)) {
      return invalid("volume " + volume.host.string() + ": no such directory on the host");
    }
    if (volume.guest.empty() || volume.guest[0] != '/' || volume.guest == "/") {
      return invalid("volume target \"" + volume.guest + "\" must be an absolute path other than /");
    }
    if ((volume.uid || volume.gid) && host.euid != 0) {
      return invalid("volume " + volume.host.string() +
                     ": uid=/gid= present files under another owner through an idmapped mount, which needs "
                     "microvm to run as root");
    }
    if (volume.uid == 4294967295u || volume.gid == 4294967295u) {
      return invalid("volume " + volume.host.string() + ": 4294967295 is not a valid uid or gid");
    }
    fs::path absolute = volume.host.is_absolute() ? volume.host : host.cwd / volume.host;
    shares.push_back({absolute.lexically_normal().string(), volume.guest, volume.readonly, volume.uid, volume.gid,
                      shareTag(shares.size())});
  }
  return shares;
}

Result<VmPlan::Network> planNetwork(const RunOptions& options, const HostFacts& host) {
  VmPlan::Network network;
  auto tap = net::tapNamespace(options.network);
  if (options.network != "user" && options.network != "none" && !tap) {
    return invalid("unknown network \"" + options.network + "\" (want user, none, tap or tap:NETNS_PATH)");
  }
  network.mode = options.network;
  bool egress = !options.egress_allow.empty() || !options.egress_allow_cidr.empty() || !options.egress_deny.empty() ||
                options.egress_deny_all || !options.firewall.empty();
  if (options.network == "none" && (!options.publish.empty() || !options.dns.empty() || egress)) {
    return invalid("--network none has no network: it takes no -p, --dns or egress rules");
  }
  if (tap) {
    // The guest is on the namespace's link with its own address: there is
    // nothing to publish, and the namespace's owner (CNI) filters its traffic.
    if (!options.publish.empty() || egress) {
      return invalid("--network " + options.network + " puts the guest on the namespace's link: it takes no -p or "
                     "egress rules (reach the guest at its address; the namespace's owner filters its traffic)");
    }
    if (!tap->empty() && tap->front() != '/') return invalid("--network tap:PATH needs an absolute path");
    if (host.euid != 0) return invalid("--network " + options.network + " needs root (it makes a TAP device)");
    if (!tap->empty() && !host.exists(*tap)) return invalid("--network " + options.network + ": no such namespace");
  }
  for (const auto& text : options.add_hosts) MICROVM_TRY(net::parseHostEntry(text));
  network.extra_hosts = options.add_hosts;
  for (const auto& text : options.dns) {
    auto upstream = net::parseDnsUpstream(text);
    if (!upstream) return std::move(upstream).error();
    network.guest.dns.push_back(*upstream);
  }
  for (const auto& rule : options.firewall) {
    if (rule.destination.empty()) return invalid("firewall rule without a destination");
    if (rule.port < 0 || rule.port > 65535) return invalid("firewall rule " + rule.destination + ": port out of range");
    if (rule.protocol != "" && rule.protocol != "tcp" && rule.protocol != "udp") {
      return invalid("firewall rule " + rule.destination + ": protocol must be tcp, udp or empty");
    }
  }
  network.egress_request = egressRequest(options);
  auto policy = net::makeEgressPolicy(network.egress_request);
  if (!policy) return std::move(policy).error();
  network.guest.egress = std::move(*policy);
  network.guest.egress_log = options.egress_log;
  for (const auto& text : options.publish) {
    auto mapping = net::parsePortMapping(text);
    if (!mapping) return std::move(mapping).error();
    for (const auto& other : network.guest.ports) {
      if (mapping->host_port != 0 && net::sameHostSocket(other, *mapping)) {
        return invalid("host port " + std::to_string(mapping->host_port) + " is published twice");
      }
    }
    // A busy port is an error now, before anything is created or booted.
    MICROVM_TRY(host.check_host_port_free(*mapping));
    network.guest.ports.push_back(*mapping);
  }
  return network;
}

Result<std::vector<VmSpec::VsockPort>> planVsockPorts(const RunOptions& options) {
  if (!options.vsock && !options.vsock_ports.empty()) return invalid("--vsock mappings need the vsock device");
  std::vector<VmSpec::VsockPort> planned;
  std::set<uint32_t> ports;
  std::set<fs::path> paths;
  for (const auto& mapping : options.vsock_ports) {
    std::string what = "vsock port " + std::to_string(mapping.port);
    // VMADDR_PORT_ANY (-1U) is not a port one can connect to.
    if (mapping.port == UINT32_MAX) return invalid(what + ": not a usable port");
    if (!ports.insert(mapping.port).second) return invalid(what + " is mapped twice");
    if (!mapping.host_socket.is_absolute()) {
      return invalid(what + ": host socket \"" + mapping.host_socket.string() + "\" must be an absolute path");
    }
    if (mapping.host_socket.native().size() >= sizeof(sockaddr_un::sun_path)) {
      return invalid(what + ": host socket path " + mapping.host_socket.string() + " is " +
                     std::to_string(mapping.host_socket.native().size()) + " bytes; unix sockets allow " +
                     std::to_string(sizeof(sockaddr_un::sun_path) - 1));
    }
    if (mapping.listen && !paths.insert(mapping.host_socket.lexically_normal()).second) {
      return invalid(what + ": " + mapping.host_socket.string() + " is already a listening socket of this VM");
    }
    planned.push_back({mapping.port, mapping.host_socket.lexically_normal().string(), mapping.listen});
  }
  return planned;
}

// The workload's confinement (Docker's defaults unless changed).
Result<HardeningPlan> planConfinement(const RunOptions& options, const HostFacts& host) {
  HardeningOptions hardening;
  hardening.cap_add = options.cap_add;
  hardening.cap_drop = options.cap_drop;
  hardening.privileged = options.privileged;
  hardening.no_new_privs = options.no_new_privs;
  hardening.sysctl_hardening = options.sysctl_hardening;
  hardening.workload_vsock = !options.vsock_ports.empty();
  if (!options.seccomp.empty() && options.seccomp != "unconfined") {
    auto profile = host.read_file(options.seccomp);
    if (!profile) return std::move(profile).error().withContext("seccomp profile");
    hardening.seccomp = *profile;
  } else {
    hardening.seccomp = options.seccomp;
  }
  return planHardening(hardening);
}

}  // namespace


HostFacts gatherHostFacts(const fs::path& kernel, const fs::path& initramfs, const std::string& qemu) {
  HostFacts host;
  host.euid = ::geteuid();
  std::error_code ec;
  host.cwd = fs::current_path(ec);
  if (auto found = findOnPath(qemu); found) host.qemu = found->string();
  host.tsc_khz = hostTscKhz();
  host.kernel = fs::absolute(kernel).string();
  host.initramfs = fs::absolute(initramfs).string();
  host.is_directory = [](const fs::path& path) {
    std::error_code error;
    return fs::is_directory(path, error);
  };
  host.exists = [](const fs::path& path) {
    std::error_code error;
    return fs::exists(path, error);
  };
  host.read_file = [](const fs::path& path) { return readFile(path); };
  host.check_host_port_free = [](const net::PortMapping& mapping) { return net::checkHostPortFree(mapping); };
  return host;
}

Result<VmPlan> planVm(const RunOptions& options, const HostFacts& host) {
  MICROVM_TRY(checkBasics(options, host));
  VmPlan plan;
  auto shares = planShares(options, host);
  if (!shares) return std::move(shares).error();
  plan.shares = std::move(*shares);
  for (const auto& entry : options.tmpfs) {
    if (entry.empty() || entry[0] != '/') return invalid("tmpfs \"" + entry + "\": the path must be absolute");
  }
  if (!options.hostname.empty() && !net::validHostname(options.hostname)) {
    return invalid("hostname \"" + options.hostname + "\" is not a valid host name");
  }
  auto network = planNetwork(options, host);
  if (!network) return std::move(network).error();
  plan.network = std::move(*network);
  auto vsock_ports = planVsockPorts(options);
  if (!vsock_ports) return std::move(vsock_ports).error();

  plan.name = options.name;
  plan.remove = options.remove;
  plan.machine.qemu = host.qemu;
  plan.machine.tsc_khz = host.tsc_khz;
  plan.machine.cpus = options.cpus;
  plan.machine.memory_mib = options.memory_mib;
  plan.machine.kernel = host.kernel;
  plan.machine.initramfs = host.initramfs;
  plan.machine.vsock = options.vsock;
  plan.machine.vsock_ports = std::move(*vsock_ports);

  auto& workload = plan.workload;
  workload.overrides.args = options.command;
  if (options.has_entrypoint) workload.overrides.entrypoint = options.entrypoint;
  workload.overrides.env = options.env;
  workload.overrides.workdir = options.workdir;
  workload.overrides.user = options.user;
  workload.hostname = options.hostname;
  workload.open_stdin = options.interactive;
  workload.tty = options.tty;
  if (options.tty && options.terminal_fd >= 0) {
    winsize size{};
    // SAFETY: TIOCGWINSZ fills one winsize, which lives on this frame.
    if (::ioctl(options.terminal_fd, TIOCGWINSZ, &size) == 0) {
      workload.tty_rows = size.ws_row;
      workload.tty_cols = size.ws_col;
    }
  }
  if (!options.tmp_size.empty()) workload.tmpfs.emplace_back("/tmp", "size=" + options.tmp_size + ",mode=1777");
  for (const auto& entry : options.tmpfs) {
    size_t colon = entry.find(':');
    workload.tmpfs.emplace_back(entry.substr(0, colon), colon == std::string::npos ? "" : entry.substr(colon + 1));
  }
  for (const auto& text : options.ulimits) {
    auto limit = agent::parseUlimit(text);
    if (!limit) return std::move(limit).error();
    workload.ulimits.push_back(agent::formatUlimit(*limit));
  }
  auto confinement = planConfinement(options, host);
  if (!confinement) return std::move(confinement).error();
  workload.confinement = std::move(*confinement);
  workload.stop_timeout_seconds = options.stop_timeout_seconds;
  workload.log_max_size = options.log_max_size;
  workload.log_max_files = options.log_max_files;
  return plan;
}

void writePlan(const VmPlan& plan, VmSpec& spec) {
  spec.remove_on_exit = plan.remove;
  spec.qemu = plan.machine.qemu;
  spec.accel = plan.machine.accel;
  spec.tsc_khz = plan.machine.tsc_khz;
  spec.cpus = plan.machine.cpus;
  spec.memory_mib = plan.machine.memory_mib;
  spec.kernel = plan.machine.kernel;
  spec.initramfs = plan.machine.initramfs;
  spec.vsock = plan.machine.vsock;
  spec.vsock_ports = plan.machine.vsock_ports;

  const auto& workload = plan.workload;
  if (!workload.hostname.empty()) spec.hostname = workload.hostname;
  spec.open_stdin = workload.open_stdin;
  spec.tty = workload.tty;
  spec.tty_rows = workload.tty_rows;
  spec.tty_cols = workload.tty_cols;
  spec.tmpfs = workload.tmpfs;
  spec.capabilities = workload.confinement.capabilities;
  spec.no_new_privs = workload.confinement.no_new_privs;
  spec.seccomp_default = workload.confinement.seccomp_default;
  spec.seccomp_rules = workload.confinement.seccomp_rules;
  spec.sysctls = workload.confinement.sysctls;
  spec.ulimits = workload.ulimits;
  spec.stop_timeout_seconds = workload.stop_timeout_seconds;
  spec.log_max_size = workload.log_max_size;
  spec.log_max_files = workload.log_max_files;

  const auto& network = plan.network;
  spec.network = network.mode;
  spec.ports.clear();
  for (const auto& mapping : network.guest.ports) spec.ports.push_back(net::formatPortMapping(mapping));
  spec.dns.clear();
  for (const auto& upstream : network.guest.dns) spec.dns.push_back(upstream.toString());
  spec.extra_hosts = network.extra_hosts;
  spec.egress_allow = network.egress_request.allow;
  spec.egress_allow_cidr = network.egress_request.allow_cidr;
  spec.egress_deny = network.egress_request.deny;
  spec.egress_deny_all = network.egress_request.deny_all;
  spec.egress_default_allow = network.egress_request.default_allow;
  spec.egress_log = network.guest.egress_log;
  spec.network_plan = network.guest;
  spec.network_plan_recorded = true;

  spec.shares = plan.shares;
}

}  // namespace microvm
