// microvm's C++ API: boot a command in a fresh microVM and get its exit code.
//
//   auto runtime = microvm::Runtime::open();            // data dir, QEMU, kernel
//   if (!runtime) { report(runtime.error()); return; }
//   microvm::RunOptions options;
//   options.rootfs = "/srv/busybox-rootfs";
//   options.command = {"/bin/sh", "-c", "echo hello"};
//   auto vm = runtime->run(options);                     // boots, returns at once
//   auto code = vm->wait();                              // the workload's exit code
//
// Detached VMs are managed by reference (full id, unique id prefix, or name):
//   options.stdout_fd = options.stderr_fd = -1;          // output only to the log
//   auto vm = runtime->run(options);
//   runtime->pause(vm->id()); runtime->unpause(vm->id());    // in memory
//   runtime->suspend(vm->id()); runtime->resume(vm->id());   // to disk and back
//   runtime->stop(vm->id(), 10); runtime->remove(vm->id(), false);
//
// The workload's stdout and stderr stream to the fds given in RunOptions, and
// always to the VM's log. A VM is a separate runner process: it survives the
// caller's death, and signals reach the workload through VmHandle::signal().
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <chrono>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "microvm/log.h"
#include "microvm/result.h"

namespace microvm {

struct DoctorCheck;

// Fetches an image the runtime does not have, instead of the registry client:
// returns a reference the runtime can read locally, normally an OCI layout
// ("oci:/srv/images/app:1.0"), which is then cached like any pull.
using ImageFetcher = std::function<Result<std::string>(const std::string& reference, const std::string& platform)>;
// A preflight check of the embedder's own; a failed required one stops run().
using PreflightCheckFn = std::function<DoctorCheck()>;

struct RuntimeOptions {
  std::filesystem::path data_dir;   // empty: $MICROVM_HOME, $XDG_DATA_HOME/microvm, /var/lib/microvm
  std::filesystem::path kernel;     // empty: $MICROVM_KERNEL, else <prefix>/share/microvm/vmlinux
  std::filesystem::path initramfs;  // empty: $MICROVM_INITRAMFS, else <prefix>/share/microvm/initramfs.cpio
  std::string qemu;                 // empty: $MICROVM_QEMU, else qemu-system-x86_64 on PATH
  std::string accel;                // "auto" (default), "kvm" or "tcg"; else $MICROVM_ACCEL
  std::vector<std::string> insecure_registries;  // plain-http registries besides loopback ones
  std::filesystem::path docker_config;           // credentials; default ~/.docker/config.json
  bool progress = false;                         // pull progress lines on stderr
  // A pull from a registry fails once its network time passes pull_timeout
  // (all requests, retries and backoff), and a request is dropped (then
  // retried) after pull_stall_timeout without a byte.
  std::chrono::seconds pull_timeout{3600};
  std::chrono::seconds pull_stall_timeout{60};
  // Where pulled images and root disks (also those built from --rootfs
  // directories) live (shareable between data dirs); empty: <data dir>/images.
  std::filesystem::path image_dir;
  // Where boot templates live (shareable between data dirs, as image_dir);
  // empty: <data dir>/templates.
  std::filesystem::path template_dir;
  ImageFetcher image_fetcher;  // unset: registries and oci: layouts
  // Removes every VM of the data dir that is not running, at open().
  bool clean_data_dir = false;
  // Preflight: the built-in checks (unless replaced) plus these, in order.
  std::vector<PreflightCheckFn> preflight_checks;
  bool replace_preflight_checks = false;
  std::string backend = "qemu";  // the only backend today
  // Structured logs of the runtime's steps (pull, prepare, boot, ready, stop).
  LogLevel log_level = LogLevel::kWarn;
  LogFormat log_format = LogFormat::kText;
  LogSink log_sink;  // unset: lines on stderr in log_format
};

// One check of `microvm doctor`.
struct DoctorCheck {
  std::string name;
  bool ok = false;
  bool required = true;  // a failed required check stops `run`
  std::string detail;
  std::string hint;      // how to fix it
};

// A pulled image, as `images` shows it.
struct ImageInfo {
  std::string reference;  // normalized: docker.io/library/busybox:latest
  std::string digest;     // manifest digest
  uint64_t size = 0;      // bytes of file content
  std::string pulled_at;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;
  std::string working_dir;
  std::string user;
  std::vector<std::string> exposed_ports;
};

// What `microvm info` shows.
struct HostInfo {
  std::string qemu;
  std::string qemu_version;
  std::filesystem::path kernel;
  std::filesystem::path initramfs;
  std::string accel;         // "kvm" or "tcg"
  std::string accel_reason;  // why
  std::filesystem::path data_dir;
};

// A host directory shared into the guest over virtio-9p. Read-only is
// enforced by QEMU on the host (readonly=on), not only inside the guest.
struct Volume {
  std::filesystem::path host;
  std::string guest;  // absolute path in the guest
  bool readonly = false;
  // Present the host directory's owner (group) as this uid (gid) in the
  // guest, and store what that uid (gid) writes as the host owner (group):
  // an idmapped mount, which needs root. Unset: owners show as on the host.
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
};

// A vsock port wired to a host unix socket (libkrun's krun_add_vsock_port).
// Without `listen`: a guest connection to `port` goes to the unix socket at
// `host_socket`, which someone on the host listens on. With `listen`: the
// runner listens at `host_socket` and forwards each connection there to the
// guest's `port`.
struct VsockPort {
  uint32_t port = 0;
  std::filesystem::path host_socket;  // absolute
  bool listen = false;
};

// A readiness check run inside the guest (through its agent): a TCP connect
// to `port`, or an HTTP GET of `path` answering 2xx/3xx.
struct ReadinessProbe {
  bool http = false;
  int port = 0;
  std::string path = "/";
};
// "PORT" (tcp) or "PORT[/PATH]" (http), as --wait-tcp / --wait-http take them.
Result<ReadinessProbe> parseReadinessProbe(const std::string& text, bool http);

class VmHandle;

// Edits a VM's own root disk before it boots (RunOptions::rootfs_hooks); the
// cached base image is never touched. Paths are absolute guest paths; parent
// directories are created (0755, root) as needed. Init writes the files into
// the VM's disk before anything else runs, and refuses any path whose
// components are symlinks in the disk: the VM then fails to start.
class RootfsEditor {
 public:
  struct Entry {
    std::string path;
    bool directory = false;
    std::string content;
    uint32_t mode = 0644;
    uint32_t uid = 0;
    uint32_t gid = 0;
  };

  Result<void> writeFile(const std::string& path, std::string_view content, uint32_t mode = 0644,
                         uint32_t uid = 0, uint32_t gid = 0);
  // A host file's bytes; mode -1 keeps the host file's permission bits.
  Result<void> copyFile(const std::filesystem::path& host_file, const std::string& path, int mode = -1,
                        uint32_t uid = 0, uint32_t gid = 0);
  Result<void> makeDirectory(const std::string& path, uint32_t mode = 0755, uint32_t uid = 0, uint32_t gid = 0);
  // KEY=VALUE lines (an /etc/environment-style file).
  Result<void> writeEnvFile(const std::string& path, const std::vector<std::string>& env);
  // home/.ssh (0700) and home/.ssh/authorized_keys (0600), owned by uid:gid.
  Result<void> addAuthorizedKeys(const std::string& home, const std::vector<std::string>& keys, uint32_t uid = 0,
                                 uint32_t gid = 0);

  const std::vector<Entry>& entries() const { return entries_; }

 private:
  Result<void> add(Entry entry);
  std::vector<Entry> entries_;
};
using RootfsHook = std::function<Result<void>(RootfsEditor& rootfs)>;
// Runs once the guest agent answers; an error stops the VM and run() returns it.
using PostBootHook = std::function<Result<void>(VmHandle& vm)>;

// An egress firewall rule. `destination` is a DNS name, "*.suffix" (strict
// subdomains), an IP address or a CIDR; port 0 is any port; protocol "" is
// tcp and udp. Deny rules win over allow rules; what no rule matches gets
// the default action. Names are matched through the VM's DNS: a deny rule
// on a name answers NXDOMAIN, which does not stop a connection to a literal
// address (deny its addresses or CIDR for that).
struct FirewallRule {
  enum class Action { kAllow, kDeny };
  Action action = Action::kAllow;
  std::string destination;
  int port = 0;
  std::string protocol;  // "", "tcp" or "udp"
};

struct RunOptions {
  // What to boot: an image reference (pulled if not present), or a host
  // directory holding the root filesystem. Exactly one of the two.
  std::string image;
  std::filesystem::path rootfs;
  std::vector<std::string> command;   // argv (with an image: replaces its Cmd)
  bool has_entrypoint = false;        // --entrypoint given (then `entrypoint` replaces the image's)
  std::string entrypoint;
  std::string platform = "linux/amd64";
  std::vector<std::string> env;       // "KEY=VALUE", over the image's Env
  std::string workdir;                // empty: the image's WorkingDir, else "/"
  std::string user;                   // "uid[:gid]" or "name[:group]"; empty: the image's, else root
  std::string hostname;               // empty: the VM's short id
  std::string name;                   // empty: the short id
  int cpus = 1;
  int memory_mib = 512;
  // Restore a boot template of this machine (image, kernel, cpus, memory,
  // devices) instead of booting the kernel, saving one on the first run;
  // VMs that cannot use one boot cold (VmInfo::boot_note says why).
  bool boot_template = true;
  // Restored from a boot template, map its memory copy-on-write, shared
  // with the other VMs that do: the pages none of them has changed are in
  // the host's memory once. The price: a snapshot, suspend or fork of the
  // VM saves its memory through QEMU's migration stream, several times
  // slower than the copy made of a VM's own memory (QEMU 7.2 leaves only
  // memory it maps shared out of its stream). Off: the VM loads its own copy.
  bool share_template_memory = false;
  bool remove = false;                // delete every file of the VM when it ends
  std::vector<Volume> volumes;
  std::vector<VsockPort> vsock_ports;  // in order; a port at most once
  // Every VM has a vsock device unless this is false. QEMU 7.2 cannot
  // snapshot a VM with one (its vhost-user-vsock is not migratable).
  bool vsock = true;
  std::vector<std::string> tmpfs;     // "PATH[:OPTIONS]", e.g. "/scratch:size=64m"
  std::string tmp_size;               // size of the guest's /tmp tmpfs ("" = the kernel's default)
  // Resource limits of the workload and of every exec, as Docker's --ulimit:
  // "nofile=1024:2048", "nproc=512", "core=unlimited" (soft[:hard]).
  std::vector<std::string> ulimits;
  // Confinement of the workload (Docker's defaults unless changed).
  std::vector<std::string> cap_add;
  std::vector<std::string> cap_drop;
  bool privileged = false;            // all capabilities, no seccomp, no no_new_privs
  std::string seccomp;                // "" default profile, "unconfined", or a Docker JSON profile's path
  bool no_new_privs = true;
  bool sysctl_hardening = true;
  int stop_timeout_seconds = 10;      // grace between forwarding SIGTERM and a hard stop
  // workload.log and console.log rotate as Docker's json-file logs do
  // (--log-opt max-size, max-file): each keeps at most log_max_files files
  // of log_max_size bytes.
  uint64_t log_max_size = uint64_t{20} << 20;  // at least 1 KiB
  int log_max_files = 5;                       // 1 to 100
  // Network (docs/NETWORKING.md): "user" (the default: NAT through the
  // runner, static 10.0.2.15), "none" (the guest has only lo), or
  // "tap:NETNS" ("tap": the namespace the caller runs the VM from): the
  // guest takes the address, MAC, gateway and MTU of the namespace's
  // interface, a pod's veth (root only; no publish or egress rules).
  std::string network = "user";
  std::vector<std::string> publish;    // -p [HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp] or GUESTPORT
  std::vector<std::string> dns;        // DNS upstreams IP[:PORT] (default: the host's resolv.conf)
  std::vector<std::string> add_hosts;  // NAME:IP lines for the guest's /etc/hosts
  // Egress policy: any of these makes it active, and then only what the
  // rules allow leaves the VM (no rules: nothing does).
  std::vector<std::string> egress_allow;       // HOST[:PORT][/tcp|/udp], *.suffix for subdomains
  std::vector<std::string> egress_allow_cidr;  // CIDR[:PORT][/tcp|/udp]
  // HOST|CIDR[:PORT][/tcp|/udp]: refused even when an allow rule matches;
  // given without allow rules, everything else is allowed.
  std::vector<std::string> egress_deny;
  bool egress_deny_all = false;
  bool egress_log = false;            // log each egress decision to the VM's runner.log
  int stdout_fd = 1;                  // where the workload's output goes (-1: discard)
  int stderr_fd = 2;
  // -i: the workload's stdin is open; run() feeds it from stdin_fd (-1: only
  // from attach()). Without it the workload's stdin is /dev/null.
  bool interactive = false;
  int stdin_fd = -1;
  // -t: the workload runs on a pseudo-terminal in the guest, as its
  // controlling terminal (stdout and stderr merge into stdout_fd; TERM=xterm
  // unless env sets it). Its size starts as terminal_fd's, else as the
  // runner's stdin's (stdin_fd, when it is a terminal), else 24x80; resize()
  // changes it, e.g. on SIGWINCH.
  bool tty = false;
  int terminal_fd = -1;  // the host terminal whose size the tty starts with
  // run() returns only once every probe passed, in order, retrying with
  // exponential backoff; if the VM exits first or `ready_timeout` passes, it
  // stops the VM and fails with the console's last lines.
  std::vector<ReadinessProbe> wait_for;
  std::chrono::seconds ready_timeout{60};
  // Library-only options.
  std::vector<FirewallRule> firewall;  // in addition to egress_allow*
  // The action for traffic no rule matches, when any rule is given: deny
  // unless set (and --egress-deny rules alone imply allow).
  std::optional<FirewallRule::Action> firewall_default;
  std::vector<RootfsHook> rootfs_hooks;      // in order, before boot
  std::vector<PostBootHook> post_boot_hooks;  // in order, after boot and readiness
};

// What `ps` and `inspect` show of a VM.
struct VmInfo {
  std::string id;
  std::string name;
  std::vector<std::string> command;
  std::string created_at;   // RFC 3339
  std::string status;       // "created", "running", "paused" or "exited"
  bool has_exit_code = false;
  int exit_code = 0;
  std::string error;        // why it ended without a workload exit code
  std::string started_at;
  std::string finished_at;
  int runner_pid = 0;
  int qemu_pid = 0;
  // While it runs: the unprivileged uid/gid QEMU runs as when microvm runs
  // as root (-1: QEMU runs as the caller's user).
  int64_t qemu_uid = -1;
  int64_t qemu_gid = -1;
  // While it runs: the uid (= gid) the runner gave up root for once QEMU
  // ran (-1: the runner runs as the caller's user).
  int64_t runner_uid = -1;
  std::string accel;
  int cpus = 0;
  int memory_mib = 0;
  std::vector<std::string> env;
  std::string workdir;
  std::string user;
  std::string hostname;
  bool interactive = false;  // made with -i (attach may feed its stdin)
  bool tty = false;          // made with -t (attach should put its terminal in raw mode)
  // How its first start began: "template" (restored a boot template) or
  // "cold" (booted the kernel), and why (which template, or why none).
  std::string boot;
  std::string boot_note;
  std::string network;                 // "user", "none", "tap" or "tap:NETNS"
  std::vector<std::string> ports;      // while running: "80/tcp -> 127.0.0.1:8080", as `docker port`
  std::vector<std::string> published;  // the -p mappings as asked (host port 0: picked at start)
  std::vector<std::string> dns;
  std::vector<std::string> egress_allow;
  std::vector<std::string> egress_allow_cidr;
  std::vector<std::string> egress_deny;
  bool egress_deny_all = false;
  bool egress_default_allow = false;
  // Where the time went, in milliseconds: preflight, pull, prepare (at
  // create), boot (runner start to the workload's start), ready (probes).
  std::map<std::string, double> timings_ms;
  std::map<std::string, uint64_t> net_counters;  // stack, egress filter and DNS counters (about 1 s old)
  std::filesystem::path dir;  // everything the VM has on disk
  // Hybrid vsock: host clients connect here and send "CONNECT <port>\n";
  // guest port P without a mapping reaches "<vsock_socket>_P".
  std::filesystem::path vsock_socket;  // empty: the VM has no vsock device
  std::vector<VsockPort> vsock_ports;
};

// `info` as the JSON object `microvm inspect` prints (one line).
std::string inspectJson(const VmInfo& info);

// The interface a VM with network "tap:NETNS" would take over in the network
// namespace at `netns` (an up, non-loopback link with an IPv4 address, the
// default route's if several): "eth0 10.88.0.2/24", or "" when the namespace
// has only lo. Needs root (it enters the namespace and returns).
Result<std::string> namespaceLink(const std::filesystem::path& netns);

struct LogOptions {
  bool follow = false;       // keep streaming until the VM exits
  long tail = -1;            // only the last N records (-1: all)
  bool timestamps = false;   // prefix each record with its RFC 3339 time
  bool console = false;      // the kernel console instead of the workload's output
};

// A boot template, as `template ls` shows it (docs/ARCHITECTURE.md, "Boot
// templates").
struct TemplateInfo {
  std::string key;         // 32 hex digits
  std::string created_at;
  std::string source;      // the image, or the root disk of a --rootfs
  int cpus = 0;
  int memory_mib = 0;
  uint64_t bytes = 0;      // on the host (guest RAM is sparse)
  bool stale = false;      // made from a kernel, initramfs, QEMU or disk that has changed since
  std::string stale_reason;
};

struct SnapshotInfo {
  std::string name;
  std::string created_at;
  std::string source_id;    // the VM it was taken from
  std::string source_name;
  unsigned long long bytes = 0;  // memory state + disk overlay on the host
};

// A command to run in a running VM (`microvm exec`), through the guest agent.
// It gets the workload's environment plus `env`, its working directory and
// user unless given, and the workload's confinement.
struct ExecOptions {
  std::vector<std::string> command;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string workdir;           // empty: the workload's
  std::string user;              // empty: the workload's
  bool tty = false;              // a pseudo-terminal in the guest (stdout and stderr merge)
  int stdin_fd = -1;             // read to EOF and forwarded; -1: the command's stdin is empty
  int stdout_fd = 1;
  int stderr_fd = 2;
  // A signalfd: every signal read from it is delivered to the command, except
  // SIGWINCH, which resizes the guest's tty to terminal_fd's size. -1: none.
  // A pipe of signalfd_siginfo records may stand in for it: its EOF (the
  // write end closed) makes exec return kTimeout at once, whatever the guest
  // does, so a caller can bound its wait on a guest that ignores a SIGKILL.
  int signal_fd = -1;
  int terminal_fd = -1;          // the host terminal: the tty's initial size
};

class Runtime;

// A VM: returned by Runtime::run/start/restore, or Runtime::get for one that
// exists already (by id, id prefix or name). Destroying the handle does not
// stop the VM. Every operation is the Runtime's of the same name for this VM.
class VmHandle {
 public:
  VmHandle(std::shared_ptr<Runtime> runtime, std::string id, pid_t runner_pid = -1);
  VmHandle(VmHandle&& other) noexcept;
  VmHandle& operator=(VmHandle&& other) noexcept;
  VmHandle(const VmHandle&) = delete;
  VmHandle& operator=(const VmHandle&) = delete;
  ~VmHandle();

  const std::string& id() const { return id_; }

  // Delivers `signal` to the workload as itself. For a VM this handle
  // started, SIGTERM, SIGINT, SIGHUP and SIGQUIT also start a stop: a second
  // one, or the stop timeout passing, stops the VM hard (exit code 137).
  void signal(int signal) const;

  // Blocks until the VM ends; returns the workload's exit code (125 if the
  // VM failed before the workload reported one, 137 if it was hard-stopped).
  // A suspend does not end it: the VM ends after its resume, or when it is
  // stopped while suspended (137).
  Result<int> wait();

  Result<VmInfo> inspect() const;
  Result<std::string> status() const;  // "created", "running", "paused", "suspended" or "exited"
  Result<void> stop(int timeout_seconds = 10) const;
  Result<void> kill(int signal) const;
  // Runtime::resize for this VM.
  Result<void> resize(uint16_t rows, uint16_t cols) const;
  Result<void> pause() const;
  Result<void> unpause() const;
  Result<void> suspend() const;
  Result<void> resume() const;
  // Runtime::fork of this VM.
  Result<std::vector<VmHandle>> fork(int count, const std::string& name_prefix = "") const;
  Result<void> remove(bool force = false) const;
  Result<int> exec(const ExecOptions& options) const;
  Result<void> copyTo(const std::string& host_source, const std::string& guest_destination) const;
  Result<void> copyFrom(const std::string& guest_source, const std::string& host_destination) const;
  Result<std::vector<std::string>> ports() const;
  Result<std::string> addPort(const std::string& mapping) const;
  Result<void> logs(const LogOptions& options, int out_fd, int err_fd) const;
  Result<void> snapshot(const std::string& name) const;

 private:
  std::shared_ptr<Runtime> runtime_;
  std::string id_;
  pid_t runner_pid_ = -1;  // our child while not waited for; else -1
};

class Runtime {
 public:
  static Result<Runtime> open(RuntimeOptions options = {});

  // QEMU, kernel, acceleration and data dir in use. Probes KVM if needed.
  Result<HostInfo> info();

  // Every preflight check, for `microvm doctor`; `host_ports` are ports to
  // check are free on 127.0.0.1.
  std::vector<DoctorCheck> doctor(const std::vector<int>& host_ports = {});

  // create() then start(): validates options, prepares the root disk and
  // boots the VM, streaming to options.stdout_fd/stderr_fd.
  Result<VmHandle> run(const RunOptions& options);

  // Prepares a VM (root disk, records) without booting it; returns its id.
  Result<std::string> create(const RunOptions& options);

  // Boots a created or exited VM (its disk keeps what earlier runs wrote);
  // a suspended VM is resumed (see resume()).
  // Returns once the VM is running; output goes to the fds (-1: log only).
  // stdin_fd feeds the workload's stdin if the VM was created interactive.
  Result<VmHandle> start(const std::string& reference, int stdout_fd = -1, int stderr_fd = -1, int stdin_fd = -1);
  // Connects to a running VM's workload: its output from now on goes to the
  // fds; in_fd (if not -1, and the VM is interactive) feeds its stdin, and its
  // EOF closes the workload's stdin. Returns the workload's exit code.
  Result<int> attach(const std::string& reference, int in_fd, int out_fd, int err_fd);

  // A handle on an existing VM (id, unique id prefix or name).
  Result<VmHandle> get(const std::string& reference);

  Result<std::vector<VmInfo>> list(bool all);
  Result<VmInfo> inspect(const std::string& reference);

  // Forwards SIGTERM, waits up to timeout_seconds, then stops the VM hard.
  // Returns once the VM has exited.
  Result<void> stop(const std::string& reference, int timeout_seconds);
  // Delivers `signal` to the workload.
  Result<void> kill(const std::string& reference, int signal);
  // Resizes the tty of a VM run with RunOptions::tty (its foreground process
  // group gets SIGWINCH); what a caller does on its terminal's SIGWINCH.
  Result<void> resize(const std::string& reference, uint16_t rows, uint16_t cols);
  // Freezes the VM's vCPUs, and thaws them; its memory stays on the host.
  Result<void> pause(const std::string& reference);
  Result<void> unpause(const std::string& reference);
  // Saves a running or paused VM's memory and devices into its directory
  // (its disk stays where it is), then ends QEMU and the runner: the VM is
  // "suspended" and holds no process or memory on the host. Refused, with
  // the VM left running, for a VM that cannot be saved.
  Result<void> suspend(const std::string& reference);
  // Brings a suspended VM back under the same id, name, ports and volumes:
  // the workload continues where it was. Works after the runtime directory
  // is gone (a host reboot). A paused VM is unpaused (what resume did before
  // suspend existed). A failed resume leaves the VM suspended.
  Result<void> resume(const std::string& reference);
  // Deletes every file of the VM; a running VM needs `force` (then it is
  // stopped hard first).
  Result<void> remove(const std::string& reference, bool force);
  // Blocks until the VM exits; returns its exit code.
  Result<int> wait(const std::string& reference);
  // Port forwards of a running VM, as `docker port` prints them
  // ("80/tcp -> 127.0.0.1:8080").
  Result<std::vector<std::string>> ports(const std::string& reference);
  // Adds a forward to a running VM (`-p` syntax); returns it as ports() shows it.
  Result<std::string> addPort(const std::string& reference, const std::string& mapping);
  // Removes forwards: on the host socket `mapping` names, or all to a bare GUESTPORT[/proto].
  Result<void> removePort(const std::string& reference, const std::string& mapping);
  // Writes the VM's log records to the fds (stdout records to out_fd, stderr
  // records to err_fd; the console goes to out_fd).
  Result<void> logs(const std::string& reference, const LogOptions& options, int out_fd, int err_fd);
  // Removes every VM that is not running; returns their ids.
  Result<std::vector<std::string>> prune();

  // Runs a command in a running VM; returns its exit code (0-255, 128+N when
  // killed by signal N; 126/127 when it cannot be run or is not found).
  Result<int> exec(const std::string& reference, const ExecOptions& options);
  // One round trip to the VM's guest agent (the floor of exec's latency).
  Result<void> ping(const std::string& reference);
  // Copies a file or a directory tree between the host and a running VM, as
  // `docker cp` does: modes and mtimes are kept, an existing directory
  // destination receives the source by its name, "SRC/." copies the contents.
  // copyFrom writes at most `max_bytes` on the host (file data, and 512 bytes
  // for each entry): a guest's tree beyond that stops the copy with a kIo
  // error whose errno is EFBIG, and what was copied so far stays.
  Result<void> copyTo(const std::string& reference, const std::string& host_source,
                      const std::string& guest_destination);
  Result<void> copyFrom(const std::string& reference, const std::string& guest_source,
                        const std::string& host_destination, uint64_t max_bytes = UINT64_MAX);
  // Readiness probes run inside the guest: a TCP connect to 127.0.0.1:port
  // (then [::1]:port), and an HTTP GET returning the status code.
  Result<void> probeTcp(const std::string& reference, int port, int timeout_ms = 1000);
  Result<int> probeHttp(const std::string& reference, int port, const std::string& path, int timeout_ms = 1000);
  // Runs the probes in order until each passes (see RunOptions::wait_for).
  Result<void> waitReady(const std::string& reference, const std::vector<ReadinessProbe>& probes,
                         std::chrono::seconds timeout);

  // Saves a running or paused VM (memory, devices, disk) as snapshot `name`;
  // the VM carries on in the state it was in.
  Result<void> snapshot(const std::string& reference, const std::string& name);
  // Starts a new VM from a snapshot: it resumes the workload where it was
  // saved. Uses options.name, remove and the output fds; the rest comes from
  // the snapshot. Each restore is an independent VM with its own disk: an
  // overlay over the snapshot's, which is not copied (at most 16 deep).
  Result<VmHandle> restore(const std::string& snapshot_name, const RunOptions& options);
  Result<std::vector<SnapshotInfo>> listSnapshots();
  Result<void> removeSnapshot(const std::string& name);
  // Starts `count` new VMs (1 to 64) that continue from this instant of a
  // running VM, which is paused only while it is saved and then runs on.
  // Each child is detached, has its own disk (an overlay over the parent's
  // as it was, saved once for all of them), hostname, clock, RNG seed and
  // copy of the network stack's state; outside connections of the parent
  // end in the children. The children start at once. Names:
  // "<name_prefix>-1" ... (empty prefix: each child's short id).
  Result<std::vector<VmHandle>> fork(const std::string& reference, int count, const std::string& name_prefix = "");
  // Boot templates (made by runs, RunOptions::boot_template).
  // Makes the template `options`' machine would restore, now: boots a VM
  // that saves it at init's hello and removes that VM once it has (its
  // workload may have begun by then). A current template is kept as it is.
  // Fails, saying why, for a machine that cannot be templated (volumes,
  // vsock ports, --no-template).
  Result<TemplateInfo> buildTemplate(const RunOptions& options);
  Result<std::vector<TemplateInfo>> listTemplates();
  Result<void> removeTemplate(const std::string& key);  // a key or unique prefix
  Result<std::vector<std::string>> pruneTemplates();    // removes all; returns their keys

  // Images: registry references or oci:PATH[:TAG].
  Result<ImageInfo> pull(const std::string& reference, const std::string& platform = "linux/amd64");
  Result<std::vector<ImageInfo>> images();
  // Untags an image; refuses while a VM uses it unless `force`.
  Result<void> removeImage(const std::string& reference, bool force);
  // Removes image data no tag refers to; returns the bytes freed.
  Result<uint64_t> pruneImages();
  // Stores credentials for `registry` in the Docker config file.
  Result<void> login(const std::string& registry, const std::string& username, const std::string& password);

 private:
  // The runtime's state (paths, options, the resolved acceleration), shared
  // by every handle this runtime gives out (src/core/runtime_impl.h).
  struct Impl;
  explicit Runtime(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

  Result<void> runPostBootHooks(VmHandle& vm, const RunOptions& options);
  // start()'s second half: spawns the VM's runner and waits until it runs.
  Result<VmHandle> spawnRunner(const std::string& id, int stdout_fd, int stderr_fd, int stdin_fd);
  // Detached starts of several created VMs at once: every runner is spawned
  // before the first is waited for. The first failure is returned once all
  // have been waited for; the VMs that did start keep running.
  Result<std::vector<VmHandle>> startDetached(const std::vector<std::string>& ids);
  Result<std::string> resolveImage(const RunOptions& options);
  // A runtime for a handle: another reference to the same state.
  std::shared_ptr<Runtime> share() const { return std::shared_ptr<Runtime>(new Runtime(impl_)); }

  std::shared_ptr<Impl> impl_;
};

}  // namespace microvm
