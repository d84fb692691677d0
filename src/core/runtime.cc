#include "microvm/runtime.h"

#include <signal.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <thread>

#include "base/fs.h"
#include "base/hash.h"
#include "base/log.h"
#include "base/process.h"
#include "base/scope_guard.h"
#include "hypervisor/accel.h"
#include "hypervisor/qemu/qemu_backend.h"
#include "image/image_store.h"
#include "image/root_disk.h"
#include "image/workload_config.h"
#include "preflight/preflight.h"
#include "state/layout.h"
#include "state/vm_record.h"
#include "core/attach.h"
#include "core/images.h"
#include "core/rootfs_injection.h"
#include "net/dns_forwarder.h"
#include "net/egress_policy.h"
#include "net/network_config.h"
#include "runner/control.h"
#include "security/hardening.h"
#include "state/vm_store.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// The first non-empty of: explicit option, environment variable, fallback.
std::string pick(const std::string& option, const char* env_name, const std::string& fallback) {
  if (!option.empty()) return option;
  const char* value = std::getenv(env_name);
  if (value && *value) return value;
  return fallback;
}

Result<void> requestRunning(const fs::path& data_dir, const std::string& reference, const RunnerRequest& request);

// Milliseconds between laps, to 0.1 ms.
class Stopwatch {
 public:
  double lap() {
    auto now = std::chrono::steady_clock::now();
    double ms = std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
    return std::round(ms * 10) / 10;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

std::string formatMs(double ms) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", ms);
  return text;
}

// Calls an embedder's callback: whatever it throws comes back as an Error,
// so that no exception crosses the API.
template <typename Fn>
auto callHook(Fn fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::exception& exception) {
    return Error(ErrorCode::kInternal, std::string("threw: ") + exception.what());
  } catch (...) {
    return Error(ErrorCode::kInternal, "threw an exception");
  }
}

DoctorCheck runCustomCheck(const PreflightCheckFn& check) {
  try {
    return check();
  } catch (...) {
    return {"custom", false, true, "the check threw an exception", ""};
  }
}

Result<void> runCustomChecks(const std::vector<PreflightCheckFn>& checks) {
  for (const auto& check_fn : checks) {
    DoctorCheck check = runCustomCheck(check_fn);
    if (check.ok || !check.required) continue;
    return Error(ErrorCode::kUnavailable,
                 check.name + ": " + check.detail + (check.hint.empty() ? "" : " (" + check.hint + ")"));
  }
  return success();
}

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

Result<void> validate(const RunOptions& options) {
  auto invalid = [](const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); };
  if (options.image.empty() == options.rootfs.empty()) {
    return invalid(options.image.empty() ? "nothing to run: give an image, or a root filesystem with --rootfs DIR"
                                         : "give an image or --rootfs, not both");
  }
  if (!options.rootfs.empty()) {
    if (options.command.empty()) return invalid("no command given (put it after the options, or after --)");
    std::error_code ec;
    if (!fs::is_directory(options.rootfs, ec)) {
      return invalid("rootfs " + options.rootfs.string() + ": " +
                     (fs::exists(options.rootfs, ec) ? "not a directory" : "no such directory"));
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
  for (const auto& volume : options.volumes) {
    std::error_code ec;
    if (!fs::is_directory(volume.host, ec)) {
      return invalid("volume " + volume.host.string() + ": no such directory on the host");
    }
    if (volume.guest.empty() || volume.guest[0] != '/' || volume.guest == "/") {
      return invalid("volume target \"" + volume.guest + "\" must be an absolute path other than /");
    }
    if ((volume.uid || volume.gid) && ::geteuid() != 0) {
      return invalid("volume " + volume.host.string() +
                     ": uid=/gid= present files under another owner through an idmapped mount, which needs "
                     "microvm to run as root");
    }
    if (volume.uid == 4294967295u || volume.gid == 4294967295u) {
      return invalid("volume " + volume.host.string() + ": 4294967295 is not a valid uid or gid");
    }
  }
  for (const auto& entry : options.tmpfs) {
    if (entry.empty() || entry[0] != '/') return invalid("tmpfs \"" + entry + "\": the path must be absolute");
  }
  if (!options.hostname.empty() && !net::validHostname(options.hostname)) {
    return invalid("hostname \"" + options.hostname + "\" is not a valid host name");
  }
  if (options.network != "user" && options.network != "none") {
    return invalid("unknown network \"" + options.network + "\" (want user or none)");
  }
  bool egress = !options.egress_allow.empty() || !options.egress_allow_cidr.empty() || !options.egress_deny.empty() ||
                options.egress_deny_all || !options.firewall.empty();
  if (options.network == "none" && (!options.publish.empty() || !options.dns.empty() || egress)) {
    return invalid("--network none has no network: it takes no -p, --dns or egress rules");
  }
  for (const auto& text : options.add_hosts) MICROVM_TRY(net::parseHostEntry(text));
  for (const auto& text : options.dns) MICROVM_TRY(net::parseDnsUpstream(text));
  for (const auto& rule : options.firewall) {
    if (rule.destination.empty()) return invalid("firewall rule without a destination");
    if (rule.port < 0 || rule.port > 65535) return invalid("firewall rule " + rule.destination + ": port out of range");
    if (rule.protocol != "" && rule.protocol != "tcp" && rule.protocol != "udp") {
      return invalid("firewall rule " + rule.destination + ": protocol must be tcp, udp or empty");
    }
  }
  MICROVM_TRY(net::makeEgressPolicy(egressRequest(options)));
  std::vector<net::PortMapping> mappings;
  for (const auto& text : options.publish) {
    auto mapping = net::parsePortMapping(text);
    if (!mapping) return std::move(mapping).error();
    for (const auto& other : mappings) {
      if (mapping->host_port != 0 && net::sameHostSocket(other, *mapping)) {
        return invalid("host port " + std::to_string(mapping->host_port) + " is published twice");
      }
    }
    // A busy port is an error now, before anything is created or booted.
    MICROVM_TRY(net::checkHostPortFree(*mapping));
    mappings.push_back(*mapping);
  }
  if (!options.vsock && !options.vsock_ports.empty()) return invalid("--vsock mappings need the vsock device");
  std::set<uint32_t> vsock_ports;
  std::set<fs::path> vsock_paths;
  for (const auto& mapping : options.vsock_ports) {
    std::string what = "vsock port " + std::to_string(mapping.port);
    // VMADDR_PORT_ANY (-1U) is not a port one can connect to.
    if (mapping.port == UINT32_MAX) return invalid(what + ": not a usable port");
    if (!vsock_ports.insert(mapping.port).second) return invalid(what + " is mapped twice");
    if (!mapping.host_socket.is_absolute()) {
      return invalid(what + ": host socket \"" + mapping.host_socket.string() + "\" must be an absolute path");
    }
    if (mapping.host_socket.native().size() >= sizeof(sockaddr_un::sun_path)) {
      return invalid(what + ": host socket path " + mapping.host_socket.string() + " is " +
                     std::to_string(mapping.host_socket.native().size()) + " bytes; unix sockets allow " +
                     std::to_string(sizeof(sockaddr_un::sun_path) - 1));
    }
    if (mapping.listen && !vsock_paths.insert(mapping.host_socket.lexically_normal()).second) {
      return invalid(what + ": " + mapping.host_socket.string() + " is already a listening socket of this VM");
    }
  }
  return success();
}

// The network options, canonical, into the spec.
void applyNetwork(const RunOptions& options, VmSpec& spec) {
  spec.network = options.network;
  for (const auto& text : options.publish) spec.ports.push_back(net::formatPortMapping(*net::parsePortMapping(text)));
  for (const auto& text : options.dns) spec.dns.push_back(net::parseDnsUpstream(text)->toString());
  spec.extra_hosts = options.add_hosts;
  auto egress = egressRequest(options);
  spec.egress_allow = egress.allow;
  spec.egress_allow_cidr = egress.allow_cidr;
  spec.egress_deny = egress.deny;
  spec.egress_deny_all = egress.deny_all;
  spec.egress_default_allow = egress.default_allow;
  spec.egress_log = options.egress_log;
}

// Volumes, tmpfs mounts and the workload's confinement, into the spec.
Result<void> applyMountsAndConfinement(const RunOptions& options, VmSpec& spec) {
  for (const auto& volume : options.volumes) {
    spec.shares.push_back(
        {fs::absolute(volume.host).lexically_normal().string(), volume.guest, volume.readonly, volume.uid, volume.gid});
  }
  spec.vsock = options.vsock;
  for (const auto& mapping : options.vsock_ports) {
    spec.vsock_ports.push_back({mapping.port, mapping.host_socket.lexically_normal().string(), mapping.listen});
  }
  if (!options.tmp_size.empty()) spec.tmpfs.emplace_back("/tmp", "size=" + options.tmp_size + ",mode=1777");
  for (const auto& entry : options.tmpfs) {
    size_t colon = entry.find(':');
    spec.tmpfs.emplace_back(entry.substr(0, colon), colon == std::string::npos ? "" : entry.substr(colon + 1));
  }
  HardeningOptions hardening;
  hardening.cap_add = options.cap_add;
  hardening.cap_drop = options.cap_drop;
  hardening.privileged = options.privileged;
  hardening.no_new_privs = options.no_new_privs;
  hardening.sysctl_hardening = options.sysctl_hardening;
  hardening.workload_vsock = !options.vsock_ports.empty();
  if (!options.seccomp.empty() && options.seccomp != "unconfined") {
    auto profile = readFile(options.seccomp);
    if (!profile) return std::move(profile).error().withContext("seccomp profile");
    hardening.seccomp = *profile;
  } else {
    hardening.seccomp = options.seccomp;
  }
  auto plan = planHardening(hardening);
  if (!plan) return std::move(plan).error();
  spec.capabilities = plan->capabilities;
  spec.no_new_privs = plan->no_new_privs;
  spec.seccomp_default = plan->seccomp_default;
  spec.seccomp_rules = plan->seccomp_rules;
  spec.sysctls = plan->sysctls;
  return success();
}

}  // namespace

VmHandle::VmHandle(std::shared_ptr<Runtime> runtime, std::string id, pid_t runner_pid)
    : runtime_(std::move(runtime)), id_(std::move(id)), runner_pid_(runner_pid) {}

VmHandle::VmHandle(VmHandle&& other) noexcept
    : runtime_(std::move(other.runtime_)), id_(std::move(other.id_)), runner_pid_(std::exchange(other.runner_pid_, -1)) {}

VmHandle& VmHandle::operator=(VmHandle&& other) noexcept {
  runtime_ = std::move(other.runtime_);
  id_ = std::move(other.id_);
  runner_pid_ = std::exchange(other.runner_pid_, -1);
  return *this;
}

VmHandle::~VmHandle() = default;

void VmHandle::signal(int signal) const {
  if (runner_pid_ > 0) {
    ::kill(runner_pid_, signal);
  } else if (runtime_) {
    (void)runtime_->kill(id_, signal);
  }
}

Result<int> VmHandle::wait() {
  if (runner_pid_ <= 0) {
    // Not our child (Runtime::get, or waited for already): the records say.
    if (!runtime_) return Error(ErrorCode::kInvalidArgument, "VM handle without a runtime");
    return runtime_->wait(id_);
  }
  int status = 0;
  while (::waitpid(runner_pid_, &status, 0) < 0) {
    if (errno != EINTR) return Error::fromErrno("wait for the runner of VM " + id_);
  }
  runner_pid_ = -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return Error(ErrorCode::kInternal, "the runner of VM " + id_ + " was " + describeWaitStatus(status));
}

Result<VmInfo> VmHandle::inspect() const { return runtime_->inspect(id_); }
Result<std::string> VmHandle::status() const {
  auto info = inspect();
  if (!info) return std::move(info).error();
  return info->status;
}
Result<void> VmHandle::stop(int timeout_seconds) const { return runtime_->stop(id_, timeout_seconds); }
Result<void> VmHandle::kill(int signal) const { return runtime_->kill(id_, signal); }
Result<void> VmHandle::pause() const { return runtime_->pause(id_); }
Result<void> VmHandle::resume() const { return runtime_->resume(id_); }
Result<void> VmHandle::remove(bool force) const { return runtime_->remove(id_, force); }
Result<int> VmHandle::exec(const ExecOptions& options) const { return runtime_->exec(id_, options); }
Result<void> VmHandle::copyTo(const std::string& host_source, const std::string& guest_destination) const {
  return runtime_->copyTo(id_, host_source, guest_destination);
}
Result<void> VmHandle::copyFrom(const std::string& guest_source, const std::string& host_destination) const {
  return runtime_->copyFrom(id_, guest_source, host_destination);
}
Result<std::vector<std::string>> VmHandle::ports() const { return runtime_->ports(id_); }
Result<std::string> VmHandle::addPort(const std::string& mapping) const { return runtime_->addPort(id_, mapping); }
Result<void> VmHandle::logs(const LogOptions& options, int out_fd, int err_fd) const {
  return runtime_->logs(id_, options, out_fd, err_fd);
}
Result<void> VmHandle::snapshot(const std::string& name) const { return runtime_->snapshot(id_, name); }

Result<Runtime> Runtime::open(RuntimeOptions options) {
  auto layout = Layout::resolve(options.data_dir);
  if (!layout) return std::move(layout).error();
  // The runner and the guest's files sit beside the code: the CLI's bin/ or
  // libmicrovm.so's lib/ (or lib/<multiarch>/) in an installed tree.
  auto module_dir = moduleDir(reinterpret_cast<const void*>(&pick));
  if (!module_dir) return std::move(module_dir).error();
  fs::path exe_dir = *module_dir;
  fs::path share_dir = (exe_dir / ".." / "share" / "microvm").lexically_normal();
  std::error_code ec;
  for (const char* up : {"..", "../.."}) {
    fs::path bin = (exe_dir / up / "bin").lexically_normal();
    if (!fs::exists(exe_dir / "microvm-runner", ec) && fs::exists(bin / "microvm-runner", ec)) {
      share_dir = (bin / ".." / "share" / "microvm").lexically_normal();
      exe_dir = bin;
      break;
    }
  }

  Runtime runtime;
  runtime.data_dir_ = layout->dataDir();
  runtime.runtime_dir_ = layout->runtimeDir();
  runtime.cache_dir_ = layout->cacheDir();
  runtime.share_dir_ = share_dir;
  runtime.kernel_ = pick(options.kernel, "MICROVM_KERNEL", (runtime.share_dir_ / "vmlinux").string());
  runtime.initramfs_ = pick(options.initramfs, "MICROVM_INITRAMFS", (runtime.share_dir_ / "initramfs.cpio").string());
  runtime.runner_ = pick("", "MICROVM_RUNNER", (exe_dir / "microvm-runner").string());
  runtime.qemu_ = pick(options.qemu, "MICROVM_QEMU", "qemu-system-x86_64");
  runtime.accel_request_ = pick(options.accel, "MICROVM_ACCEL", "auto");
  runtime.images_dir_ = options.image_dir.empty() ? runtime.data_dir_ / "images" : fs::absolute(options.image_dir);
  if (options.backend != "qemu") {
    return Error(ErrorCode::kUnsupported, "backend \"" + options.backend + "\" is not available (this build has qemu)");
  }
  runtime.registry_options_ = options;
  if (options.docker_config.empty()) {
    const char* home = std::getenv("HOME");
    fs::path docker_dir = pick("", "DOCKER_CONFIG", (fs::path(home ? home : "/root") / ".docker").string());
    runtime.registry_options_.docker_config = docker_dir / "config.json";
  }
  if (auto request = parseAccelRequest(runtime.accel_request_); !request) return std::move(request).error();
  if (options.clean_data_dir) {
    auto removed = runtime.prune();
    if (!removed) return std::move(removed).error().withContext("clean data dir");
    runtime.log(LogLevel::kInfo, "cleaned data dir", {{"removed_vms", std::to_string(removed->size())}});
  }
  return runtime;
}

void Runtime::log(LogLevel level, std::string message,
                  std::initializer_list<std::pair<std::string, std::string>> fields) const {
  Logger(registry_options_.log_level, registry_options_.log_format, registry_options_.log_sink)
      .log(level, std::move(message), fields);
}

Result<void> Runtime::resolveAcceleration() {
  if (!accel_.empty()) return success();
  auto qemu = findOnPath(qemu_);
  if (!qemu) return Error(ErrorCode::kUnavailable, qemu_ + " not found on PATH (install qemu-system-x86 or set MICROVM_QEMU)");
  QemuBackend backend(qemu->string());
  AccelProbe probe;
  probe.backend = &backend;
  probe.qemu = qemu->string();
  probe.kernel = kernel_;
  probe.probe_initramfs = share_dir_ / "poweroff.cpio";
  probe.cache_file = cache_dir_ / "accel-probe.json";
  auto choice = chooseAcceleration(*parseAccelRequest(accel_request_), probe);
  if (!choice) return std::move(choice).error();
  accel_ = toString(choice->accel);
  accel_reason_ = choice->reason;
  return success();
}

Result<HostInfo> Runtime::info() {
  HostInfo info;
  auto qemu = findOnPath(qemu_);
  info.qemu = qemu ? qemu->string() : qemu_ + " (not found)";
  if (qemu) {
    std::string output;
    if (runCommand({qemu->string(), "--version"}, &output)) {
      info.qemu_version = output.substr(0, output.find('\n'));
    }
  }
  info.kernel = kernel_;
  info.initramfs = initramfs_;
  info.data_dir = data_dir_;
  if (qemu && fs::exists(kernel_)) {
    MICROVM_TRY(resolveAcceleration());
    info.accel = accel_;
    info.accel_reason = accel_reason_;
  } else {
    info.accel = "unknown";
    info.accel_reason = "needs QEMU and a guest kernel to decide";
  }
  return info;
}

Result<std::string> Runtime::create(const RunOptions& options) {
  MICROVM_TRY(validate(options));
  Stopwatch step;
  std::map<std::string, double> timings;
  if (!registry_options_.replace_preflight_checks) {
    MICROVM_TRY(runPreflight({qemu_, kernel_, initramfs_, runner_, data_dir_, {}}));
  }
  MICROVM_TRY(runCustomChecks(registry_options_.preflight_checks));
  MICROVM_TRY(resolveAcceleration());
  timings["preflight"] = step.lap();

  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  MICROVM_TRY(makeDirs(layout->vmsDir()));
  // The root disk and the workload: from the image (its config merged with
  // the options, Docker's way), or from a directory and the options alone.
  WorkloadOverrides overrides;
  overrides.args = options.command;
  if (options.has_entrypoint) overrides.entrypoint = options.entrypoint;
  overrides.env = options.env;
  overrides.workdir = options.workdir;
  overrides.user = options.user;
  ImageDefaults defaults;
  fs::path base;
  VmSpec spec;
  // From before the base disk is pulled or built until the VM's spec names
  // it: `image prune` keeps what a VM uses, but cannot see this VM before.
  std::vector<UniqueFd> image_holds;
  for (const fs::path& images : {images_dir_, layout->rootfsCacheDir().parent_path()}) {
    auto held = ImageStore::hold(images);
    if (!held) return std::move(held).error();
    image_holds.push_back(std::move(*held));
  }
  if (!options.image.empty()) {
    auto reference = resolveImage(options);
    if (!reference) return std::move(reference).error();
    auto image = findOrPullImage(images_dir_, registry_options_, *reference, options.platform);
    if (!image) return std::move(image).error();
    if (*reference != options.image) {
      // Fetched: cached under the name it was asked for, so the next run finds it.
      image = ImageStore(images_dir_).tag(options.image, *image);
      if (!image) return std::move(image).error();
    }
    base = image->base_disk;
    defaults = image->defaults;
    spec.image = image->reference;
    spec.exposed_ports = image->exposed_ports;
  } else {
    auto built = ensureBaseDisk(layout->rootfsCacheDir(), options.rootfs);
    if (!built) return std::move(built).error().withContext("build root disk");
    base = *built;
  }
  timings["pull"] = step.lap();
  log(LogLevel::kInfo, "image ready", {{"image", options.image.empty() ? options.rootfs.string() : options.image},
                                {"ms", formatMs(timings["pull"])}});
  auto workload = mergeImageDefaults(defaults, overrides);
  if (!workload) return std::move(workload).error();
  RootfsEditor rootfs;
  for (size_t i = 0; i < options.rootfs_hooks.size(); ++i) {
    auto hooked = callHook([&] { return options.rootfs_hooks[i](rootfs); });
    if (!hooked) return std::move(hooked).error().withContext("rootfs hook " + std::to_string(i + 1));
  }

  spec.id = randomHex(32);
  spec.name = options.name.empty() ? spec.id.substr(0, 12) : options.name;
  spec.created_at = nowRfc3339();
  spec.qemu = findOnPath(qemu_)->string();
  spec.accel = accel_;
  spec.tsc_khz = hostTscKhz();
  spec.cpus = options.cpus;
  spec.memory_mib = options.memory_mib;
  spec.kernel = fs::absolute(kernel_).string();
  spec.initramfs = fs::absolute(initramfs_).string();
  spec.base_disk = base.string();
  spec.argv = workload->argv;
  spec.env = workload->env;
  spec.workdir = workload->workdir;
  spec.user = workload->user;
  spec.hostname = options.hostname.empty() ? spec.id.substr(0, 12) : options.hostname;
  spec.remove_on_exit = options.remove;
  spec.open_stdin = options.interactive;
  spec.stop_timeout_seconds = options.stop_timeout_seconds;
  spec.log_max_size = options.log_max_size;
  spec.log_max_files = options.log_max_files;
  MICROVM_TRY(applyMountsAndConfinement(options, spec));
  applyNetwork(options, spec);

  fs::path vm_dir = layout->vmDir(spec.id);
  spec.root_disk = (vm_dir / "disk.qcow2").string();
  spec.runtime_dir = layout->vmRuntimeDir(spec.id).string();
  MICROVM_TRY(checkSocketPath(fs::path(spec.runtime_dir) / "runner.sock"));
  // Guest port P without a mapping reaches "<vsock.sock>_P": the longest
  // port must still fit.
  MICROVM_TRY(checkSocketPath(vsockSocket(spec).string() + "_4294967294"));
  MICROVM_TRY(checkSocketPath(vhostVsockSocket(spec)));

  if (!rootfs.entries().empty()) spec.initramfs = (vm_dir / "initramfs.cpio").string();
  spec.timings_ms = timings;
  double prepare_ms = step.lap();
  auto make_disks = [&](const fs::path&) -> Result<void> {
    if (!rootfs.entries().empty()) {
      MICROVM_TRY(writeInjectionInitramfs(fs::absolute(initramfs_), rootfs.entries(), spec.initramfs));
    }
    MICROVM_TRY(createOverlay(base, spec.root_disk));
    // The store saves `spec` (this object) after this returns.
    spec.timings_ms["prepare"] = std::round((prepare_ms + step.lap()) * 10) / 10;
    return success();
  };
  MICROVM_TRY(store.add(spec, !options.name.empty(), make_disks));
  log(LogLevel::kInfo, "created", {{"vm", spec.id.substr(0, 12)}, {"name", spec.name},
                                   {"preflight_ms", formatMs(spec.timings_ms["preflight"])},
                                   {"prepare_ms", formatMs(spec.timings_ms["prepare"])}});
  return spec.id;
}

std::vector<DoctorCheck> Runtime::doctor(const std::vector<int>& host_ports) {
  std::vector<DoctorCheck> checks;
  if (!registry_options_.replace_preflight_checks) {
    for (auto& check : runPreflightChecks({qemu_, kernel_, initramfs_, runner_, data_dir_, host_ports})) {
      checks.push_back({check.name, check.ok, check.required, check.detail, check.hint});
    }
  }
  for (const auto& check : registry_options_.preflight_checks) checks.push_back(runCustomCheck(check));
  // /dev/kvm opening is not the verdict: say what a VM would actually use.
  for (auto& check : checks) {
    if (check.name != "kvm" || !findOnPath(qemu_) || !fs::exists(kernel_)) continue;
    if (auto resolved = resolveAcceleration(); resolved) {
      check = {"acceleration", accel_ == "kvm", false, accel_ + ": " + accel_reason_,
               "VMs run under TCG (software emulation): correct but slower"};
    }
  }
  return checks;
}

Result<VmHandle> Runtime::start(const std::string& reference, int stdout_fd, int stderr_fd, int stdin_fd) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  auto record = store.find(reference);
  if (!record) return std::move(record).error();
  if (record->state.status == VmStatus::kRunning || record->state.status == VmStatus::kPaused) {
    return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is already running");
  }

  SpawnOptions runner;
  runner.argv = {runner_.string(), record->dir.string()};
  if (stdin_fd >= 0 && record->spec.open_stdin) {
    runner.argv.push_back("--stdin");
    runner.fds.push_back({0, stdin_fd});
  }
  if (stdout_fd >= 0) runner.fds.push_back({1, stdout_fd});
  if (stderr_fd >= 0) runner.fds.push_back({2, stderr_fd});
  // Its own session: the VM outlives this process and its terminal.
  runner.new_session = true;
  auto process = spawn(runner);
  if (!process) return std::move(process).error().withContext("start runner");
  pid_t pid = process->pid();
  if (stdout_fd >= 0 || stderr_fd >= 0) {
    // Attached: whatever happens next, including a failed boot, the runner
    // reports on the caller's stderr and in its exit status. The handle
    // comes back once the VM runs (so that exec and hooks can follow at
    // once) or its runner has exited, which is then the handle's to reap.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (auto pause = std::chrono::milliseconds(1); std::chrono::steady_clock::now() < deadline;
         pause = std::min(pause * 2, std::chrono::milliseconds(50))) {
      siginfo_t info{};
      if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == pid) break;
      auto state = loadState(record->dir);
      if (state && state->runner_pid == pid && state->status != VmStatus::kCreated) break;
      std::this_thread::sleep_for(pause);
    }
    return VmHandle(share(), record->spec.id, process->release());
  }

  // Detached: return once the runner has the VM running, or say why not.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (auto pause = std::chrono::milliseconds(1);; pause = std::min(pause * 2, std::chrono::milliseconds(50))) {
    auto exited = process->tryWait();
    if (exited && exited->has_value()) {
      auto state = loadState(record->dir);
      std::string why = state && !state->error.empty() ? state->error : "the runner " + describeWaitStatus(**exited);
      return Error(ErrorCode::kIo, "VM " + record->spec.name + " failed to start: " + why);
    }
    auto state = loadState(record->dir);
    if (state && state->runner_pid == pid && state->status != VmStatus::kExited) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      return Error(ErrorCode::kTimeout, "VM " + record->spec.name + " did not start within 30 s");
    }
    std::this_thread::sleep_for(pause);
  }
  return VmHandle(share(), record->spec.id, process->release());
}

Result<VmHandle> Runtime::run(const RunOptions& options) {
  auto id = create(options);
  if (!id) return std::move(id).error();
  auto vm = start(*id, options.stdout_fd, options.stderr_fd, options.stdin_fd);
  if (!vm) return vm;
  if (!options.wait_for.empty()) {
    Stopwatch ready_time;
    if (auto ready = waitReady(*id, options.wait_for, options.ready_timeout); !ready) {
      // Not ready is not running: nothing is left half-started.
      log(LogLevel::kWarn, "not ready, stopping", {{"vm", id->substr(0, 12)}, {"error", ready.error().message()}});
      (void)stop(*id, 0);
      return std::move(ready).error();
    }
    double ms = ready_time.lap();
    (void)requestRunning(data_dir_, *id, TimingRequest{"ready", ms});
    log(LogLevel::kInfo, "ready", {{"vm", id->substr(0, 12)}, {"ms", formatMs(ms)}});
  }
  if (auto hooked = runPostBootHooks(*vm, options); !hooked) return std::move(hooked).error();
  return vm;
}

Result<void> Runtime::runPostBootHooks(VmHandle& vm, const RunOptions& options) {
  if (options.post_boot_hooks.empty()) return success();
  // Post-boot means the guest answers: the agent's ping retries while the
  // guest is still coming up.
  Result<void> up = ping(vm.id());
  for (size_t i = 0; up && i < options.post_boot_hooks.size(); ++i) {
    up = callHook([&] { return options.post_boot_hooks[i](vm); });
    if (!up) up = std::move(up).error().withContext("post-boot hook " + std::to_string(i + 1));
  }
  if (up) return success();
  log(LogLevel::kWarn, "post-boot hook failed, stopping", {{"vm", vm.id().substr(0, 12)}, {"error", up.error().message()}});
  (void)stop(vm.id(), 0);
  (void)vm.wait();
  return std::move(up).error();
}

Result<VmHandle> Runtime::get(const std::string& reference) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  auto record = VmStore(*layout).find(reference);
  if (!record) return std::move(record).error();
  return VmHandle(share(), record->spec.id);
}

Result<std::string> Runtime::resolveImage(const RunOptions& options) {
  const ImageFetcher& fetcher = registry_options_.image_fetcher;
  if (!fetcher) return options.image;
  // A cached image needs no fetch.
  if (auto local = ImageStore(images_dir_).find(options.image); local && *local) return options.image;
  auto fetched = callHook([&] { return fetcher(options.image, options.platform); });
  if (!fetched) return std::move(fetched).error().withContext("image fetcher for " + options.image);
  log(LogLevel::kInfo, "image fetched", {{"image", options.image}, {"as", *fetched}});
  return fetched;
}

namespace {

VmInfo toInfo(const VmRecord& record) {
  VmInfo info;
  info.id = record.spec.id;
  info.name = record.spec.name;
  info.command = record.spec.argv;
  info.created_at = record.spec.created_at;
  info.status = toString(record.state.status);
  info.has_exit_code = record.state.exit_code.has_value();
  info.exit_code = record.state.exit_code.value_or(0);
  info.error = record.state.error;
  info.started_at = record.state.started_at;
  info.finished_at = record.state.finished_at;
  bool active = record.state.status == VmStatus::kRunning || record.state.status == VmStatus::kPaused;
  info.runner_pid = active ? record.state.runner_pid : 0;
  info.qemu_pid = active ? record.state.qemu_pid : 0;
  if (active && record.state.qemu_uid) info.qemu_uid = *record.state.qemu_uid;
  if (active && record.state.qemu_gid) info.qemu_gid = *record.state.qemu_gid;
  if (active && record.state.runner_uid) info.runner_uid = *record.state.runner_uid;
  info.accel = record.spec.accel;
  info.cpus = record.spec.cpus;
  info.memory_mib = record.spec.memory_mib;
  info.env = record.spec.env;
  info.workdir = record.spec.workdir;
  info.user = record.spec.user;
  info.hostname = record.spec.hostname;
  info.network = record.spec.network;
  if (active) {
    for (const auto& text : record.state.ports) {
      if (auto mapping = net::parsePortMapping(text); mapping) info.ports.push_back(net::describePortMapping(*mapping));
    }
  }
  info.published = record.spec.ports;
  info.dns = record.spec.dns;
  info.egress_allow = record.spec.egress_allow;
  info.egress_allow_cidr = record.spec.egress_allow_cidr;
  info.egress_deny = record.spec.egress_deny;
  info.egress_deny_all = record.spec.egress_deny_all;
  info.egress_default_allow = record.spec.egress_default_allow;
  info.timings_ms = record.spec.timings_ms;
  for (const auto& [step, ms] : record.state.timings_ms) info.timings_ms[step] = ms;
  info.net_counters = record.state.net_counters;
  info.dir = record.dir;
  if (record.spec.vsock) info.vsock_socket = vsockSocket(record.spec);
  for (const auto& port : record.spec.vsock_ports) info.vsock_ports.push_back({port.port, port.path, port.listen});
  return info;
}

bool isActive(const VmRecord& record) {
  return record.state.status == VmStatus::kRunning || record.state.status == VmStatus::kPaused;
}

fs::path runnerSocket(const VmRecord& record) { return fs::path(record.spec.runtime_dir) / "runner.sock"; }

// Sleeps with a growing pause until `done` or the deadline; false on timeout.
template <typename Done>
bool pollUntil(Done done, std::chrono::steady_clock::time_point deadline) {
  for (auto pause = std::chrono::milliseconds(5);; pause = std::min(pause * 2, std::chrono::milliseconds(100))) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(pause);
  }
}

// SIGKILLs pid if it is still the process that started at start_time.
void killIfSame(pid_t pid, unsigned long long start_time) {
  if (pid <= 0) return;
  auto now = processStartTime(pid);
  if (now && *now == start_time) ::kill(pid, SIGKILL);
}

}  // namespace

Result<std::vector<VmInfo>> Runtime::list(bool all) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  auto records = VmStore(*layout).list();
  if (!records) return std::move(records).error();
  std::vector<VmInfo> infos;
  for (const auto& record : *records) {
    if (all || isActive(record)) infos.push_back(toInfo(record));
  }
  return infos;
}

Result<VmInfo> Runtime::inspect(const std::string& reference) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  auto record = VmStore(*layout).find(reference);
  if (!record) return std::move(record).error();
  return toInfo(*record);
}

Result<void> Runtime::stop(const std::string& reference, int timeout_seconds) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  auto record = store.find(reference);
  if (!record) return std::move(record).error();
  if (!isActive(*record)) return success();  // as Docker: stopping a stopped VM is fine
  if (auto sent = sendRunnerRequest(runnerSocket(*record), StopRequest{timeout_seconds}); !sent) {
    // The runner may have finished between our look and the request.
    auto again = store.load(record->spec.id);
    if (again && !isActive(*again)) return success();
    return std::move(sent).error();
  }
  // The runner stops the VM hard at the timeout; allow it time to clean up.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_seconds + 30);
  std::string id = record->spec.id;
  bool stopped = pollUntil(
      [&] {
        auto current = store.load(id);
        return !current || !isActive(*current);
      },
      deadline);
  if (!stopped) return Error(ErrorCode::kTimeout, "VM " + record->spec.name + " did not stop");
  return success();
}

namespace {

// Sends `request` to the runner of the running VM `reference` names.
Result<void> requestRunning(const fs::path& data_dir, const std::string& reference, const RunnerRequest& request) {
  auto layout = Layout::resolve(data_dir);
  if (!layout) return std::move(layout).error();
  auto record = VmStore(*layout).find(reference);
  if (!record) return std::move(record).error();
  if (!isActive(*record)) return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is not running");
  return sendRunnerRequest(runnerSocket(*record), request);
}

}  // namespace

Result<int> Runtime::attach(const std::string& reference, int in_fd, int out_fd, int err_fd) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  auto record = VmStore(*layout).find(reference);
  if (!record) return std::move(record).error();
  if (!isActive(*record)) return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is not running");
  bool with_stdin = in_fd >= 0 && record->spec.open_stdin;
  auto stream = openRunnerStream(runnerSocket(*record), AttachRequest{with_stdin});
  if (!stream) return std::move(stream).error();
  return relayAttached(std::move(*stream), with_stdin ? in_fd : -1, out_fd, err_fd);
}

Result<std::vector<std::string>> Runtime::ports(const std::string& reference) {
  auto info = inspect(reference);
  if (!info) return std::move(info).error();
  return info->ports;
}

Result<std::string> Runtime::addPort(const std::string& reference, const std::string& mapping) {
  auto parsed = net::parsePortMapping(mapping);
  if (!parsed) return std::move(parsed).error();
  MICROVM_TRY(net::checkHostPortFree(*parsed));
  auto before = ports(reference);
  if (!before) return std::move(before).error();
  MICROVM_TRY(requestRunning(data_dir_, reference, PortAddRequest{net::formatPortMapping(*parsed)}));
  // The runner recorded the mapping before it answered; the new line is it.
  auto after = ports(reference);
  if (!after) return std::move(after).error();
  for (const auto& line : *after) {
    if (std::find(before->begin(), before->end(), line) == before->end()) return line;
  }
  return net::describePortMapping(*parsed);
}

Result<void> Runtime::removePort(const std::string& reference, const std::string& mapping) {
  MICROVM_TRY(net::parsePortMapping(mapping));
  return requestRunning(data_dir_, reference, PortRemoveRequest{mapping});
}

Result<void> Runtime::kill(const std::string& reference, int signal) {
  return requestRunning(data_dir_, reference, KillRequest{signal});
}

Result<void> Runtime::pause(const std::string& reference) { return requestRunning(data_dir_, reference, PauseRequest{}); }

Result<void> Runtime::resume(const std::string& reference) {
  return requestRunning(data_dir_, reference, ResumeRequest{});
}

Result<void> Runtime::remove(const std::string& reference, bool force) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  auto record = store.find(reference);
  if (!record) return std::move(record).error();
  if (isActive(*record)) {
    if (!force) {
      return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name +
                                                    " is running: stop it first, or remove it with -f");
    }
    // Only the processes recorded for this VM, and only if they are still
    // those processes (pid + start time), are ended.
    killIfSame(record->state.runner_pid, record->state.runner_start_time);
    killIfSame(record->state.qemu_pid, record->state.qemu_start_time);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    bool gone = pollUntil(
        [&] {
          auto runner = processStartTime(record->state.runner_pid);
          auto qemu = processStartTime(record->state.qemu_pid);
          return (!runner || *runner != record->state.runner_start_time) &&
                 (!qemu || *qemu != record->state.qemu_start_time);
        },
        deadline);
    if (!gone) return Error(ErrorCode::kTimeout, "VM " + record->spec.name + "'s processes did not exit");
  }
  if (!record->spec.runtime_dir.empty()) MICROVM_TRY(removeTree(record->spec.runtime_dir));
  return removeTree(record->dir);
}

Result<int> Runtime::wait(const std::string& reference) {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  auto record = store.find(reference);
  if (!record) return std::move(record).error();
  std::string id = record->spec.id;
  std::optional<VmRecord> last;
  pollUntil(
      [&] {
        auto current = store.load(id);
        if (!current) return true;  // removed (--rm) while we waited
        last = std::move(*current);
        return last->state.status == VmStatus::kExited;
      },
      std::chrono::steady_clock::time_point::max());
  if (!last || last->state.status != VmStatus::kExited) {
    return Error(ErrorCode::kNotFound, "VM " + record->spec.name + " was removed before it exited");
  }
  return last->state.exit_code.value_or(125);
}

Result<std::vector<std::string>> Runtime::prune() {
  auto layout = Layout::resolve(data_dir_);
  if (!layout) return std::move(layout).error();
  auto records = VmStore(*layout).list();
  if (!records) return std::move(records).error();
  std::vector<std::string> removed;
  for (const auto& record : *records) {
    if (isActive(record)) continue;
    MICROVM_TRY(removeTree(record.dir));
    removed.push_back(record.spec.id);
  }
  return removed;
}

}  // namespace microvm
