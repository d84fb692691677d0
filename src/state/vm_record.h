// The on-disk records of one VM: spec.json (what to run, written once by the
// caller before the runner starts) and state.json (what is happening, written
// by the runner). Both are written atomically; state.lock serializes writers.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <cstdint>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/unique_fd.h"
#include "net/network_plan.h"
#include "microvm/result.h"

namespace microvm {

struct VmSpec {
  std::string id;
  std::string name;
  std::string created_at;  // RFC 3339, UTC

  // Machine.
  std::string qemu;
  std::string accel;  // "kvm" or "tcg"
  unsigned tsc_khz = 0;
  int cpus = 1;
  int memory_mib = 512;
  std::string kernel;
  std::string initramfs;
  std::string root_disk;  // this VM's qcow2 overlay
  std::string base_disk;  // the cached base it overlays (read-only)
  // Frozen qcow2 layers between the base and root_disk, lowest first: a VM
  // restored or forked from a saved state runs on a thin overlay of the
  // saved disk instead of a copy. Hard links in the VM's directory
  // (VmPaths::diskLayers), shared with the other VMs and snapshots of the
  // chain; nothing writes them.
  std::vector<std::string> disk_layers;
  std::string runtime_dir;
  std::string restore_from;  // saved machine state to resume on first start; empty: boot
  // Boot templates (core/templates.h), on the first start only: restore the
  // template in `template_dir` and send the spec, instead of booting; or
  // boot, and save a template into `template_capture` (a staging dir) when
  // init says hello, before it gets the spec. `template_note` says which
  // path the VM took and why, for inspect.
  std::string template_dir;
  std::string template_capture;
  std::string template_note;
  bool template_share_memory = false;  // RunOptions::share_template_memory

  // Workload.
  std::string image;  // the reference it was created from; empty for --rootfs
  std::vector<std::string> exposed_ports;
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string workdir = "/";
  std::string user;
  std::string hostname;
  bool open_stdin = false;  // -i: stdin from the starting caller or `attach`
  // -t: the workload runs on a tty in the guest, of this size to begin with
  // (0: the runner's stdin's size if it is a terminal, else the kernel's).
  bool tty = false;
  uint16_t tty_rows = 0;
  uint16_t tty_cols = 0;

  // Host directories shared over 9p, each under its own tag.
  struct Share {
    std::string host;
    std::string guest;
    bool readonly = false;
    // Present the host directory's owner / group as this uid / gid in the
    // guest (an idmapped mount; root only). Unset: as on the host.
    std::optional<uint32_t> uid;
    std::optional<uint32_t> gid;
    std::string tag;  // the 9p mount tag QEMU exports it under and init mounts ("vol<N>")
  };
  std::vector<Share> shares;
  std::vector<std::pair<std::string, std::string>> tmpfs;  // guest path, mount options

  // Rootfs hooks' output small enough to travel in the workload spec, which
  // init writes into the root disk at every boot (a VM restored from a boot
  // template included); larger sets go in the VM's own initramfs instead.
  struct InjectedFile {
    std::string path;
    bool directory = false;
    std::string content;  // spec.json holds it hex-encoded
    uint32_t mode = 0644;
    uint32_t uid = 0;
    uint32_t gid = 0;
  };
  std::vector<InjectedFile> injected;

  // Vsock port mappings, in the order given. A guest connection to `port`
  // goes to the host unix socket `path`; with `listen`, the runner listens
  // at `path` and forwards each connection to the guest's `port`. Other
  // ports use the base socket (vsockSocket below).
  struct VsockPort {
    uint32_t port = 0;
    std::string path;
    bool listen = false;
  };
  std::vector<VsockPort> vsock_ports;
  // The vsock device itself. QEMU 7.2's vhost-user-vsock cannot be migrated,
  // so a VM that is to be snapshotted runs without it.
  bool vsock = true;

  // Confinement of the workload, as init applies it.
  uint64_t capabilities = 0;
  bool no_new_privs = true;
  std::string seccomp_default;
  std::vector<std::string> seccomp_rules;
  std::vector<std::string> sysctls;
  std::vector<std::string> ulimits;  // "nofile=1024:2048" (agent::parseUlimit)

  // Network (see docs/NETWORKING.md). "user": libslirp in the runner;
  // "none": the guest has only lo.
  std::string network = "user";
  std::vector<std::string> ports;        // port mappings as asked, canonical ("127.0.0.1:0:80/tcp": pick a port)
  std::vector<std::string> dns;          // DNS upstreams "IP:PORT"; empty: the host's resolv.conf
  std::vector<std::string> extra_hosts;  // "NAME:IP" lines for /etc/hosts
  std::vector<std::string> egress_allow;       // --egress-allow rules, as given
  std::vector<std::string> egress_allow_cidr;  // --egress-allow-cidr rules, as given
  std::vector<std::string> egress_deny;        // --egress-deny rules, as given
  bool egress_deny_all = false;
  bool egress_default_allow = false;  // what no rule matches passes (with deny rules)
  bool egress_log = false;

  // The same network, parsed once when the VM was planned (core/vm_plan.h):
  // the runner's GuestNetwork takes it as it is; the strings above are what
  // inspect shows. Its egress_log is the field above.
  net::NetworkPlan network_plan;
  // False for a spec.json written before the network was stored parsed (an
  // old VM or snapshot): the runner then parses the strings above.
  bool network_plan_recorded = true;

  // Where create()'s time went, in ms: preflight, pull, prepare.
  std::map<std::string, double> timings_ms;

  // Lifecycle.
  bool remove_on_exit = false;
  int stop_timeout_seconds = 10;
  // Rotation of workload.log and console.log (base/rotating_file.h).
  uint64_t log_max_size = uint64_t{20} << 20;
  int log_max_files = 5;
};

// kSuspended: `suspend` saved the VM's memory and devices into its
// directory (VmPaths::saved) and ended QEMU and the runner; `resume` brings
// it back. No process of the VM exists while it is suspended.
enum class VmStatus { kCreated, kRunning, kPaused, kExited, kSuspended };

struct VmState {
  VmStatus status = VmStatus::kCreated;
  pid_t runner_pid = 0;
  unsigned long long runner_start_time = 0;  // with the pid, identifies the runner
  pid_t qemu_pid = 0;
  unsigned long long qemu_start_time = 0;
  // The unprivileged user QEMU runs as (microvm run as root); unset: QEMU
  // runs as the runner's user.
  std::optional<uint32_t> qemu_uid;
  std::optional<uint32_t> qemu_gid;
  // The uid (and gid, the same number) the runner gave up root for, once
  // QEMU ran (microvm run as root); unset: the runner kept its user.
  std::optional<uint32_t> runner_uid;
  std::string started_at;
  std::string finished_at;
  std::optional<int> exit_code;
  std::string error;  // why the VM ended without an exit code, if it did
  // Network, while it runs: the port mappings in effect (canonical, host
  // ports resolved; `port add/rm` change them) and the stack's and egress
  // filter's counters, refreshed by the runner about once a second.
  std::vector<std::string> ports;
  std::map<std::string, uint64_t> net_counters;
  // The runner's and the caller's steps, in ms: boot (runner start to the
  // workload's start), ready (readiness probes, recorded by run()).
  std::map<std::string, double> timings_ms;
};

// Whether the guest runs its workload: init had its spec (the runner timed
// the boot), or the VM resumed saved state of a guest that had. A VM saved
// before then could not be resumed: init would wait for a spec its new
// runner does not send.
inline bool workloadStarted(const VmState& state) {
  return state.timings_ms.count("boot") != 0 || state.timings_ms.count("restore") != 0;
}

const char* toString(VmStatus status);

// The 9p tag of the index-th share: planning assigns it (core/vm_plan.h), and
// a spec.json from before tags were recorded had these.
std::string shareTag(size_t index);

Result<void> saveSpec(const std::filesystem::path& vm_dir, const VmSpec& spec);
Result<VmSpec> loadSpec(const std::filesystem::path& vm_dir);
Result<void> saveState(const std::filesystem::path& vm_dir, const VmState& state);
Result<VmState> loadState(const std::filesystem::path& vm_dir);

// Serializes read-modify-write of a VM's state.json between the runner and
// CLI calls: flock on vm_dir/state.lock, released on destruction.
class StateLock {
 public:
  static Result<StateLock> acquire(const std::filesystem::path& vm_dir);

 private:
  explicit StateLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// True if the process recorded as this VM's runner is still that process
// (same pid and same start time: a reused pid is never mistaken for it).
bool runnerAlive(const VmState& state);


}  // namespace microvm
