// The VM plan: RunOptions checked and parsed once, into one section per
// consumer. planVm() is pure: what it needs to know about the host comes in
// HostFacts (gatherHostFacts() asks the host; tests build their own), so
// every validation error can be tested without booting anything.
//
//   auto plan = planVm(options, gatherHostFacts(kernel, initramfs, qemu));
//   if (!plan) return std::move(plan).error();       // the option's own message
//   ...pull, merge the image's defaults into plan->workload...
//   writePlan(*plan, spec);                           // spec.json's sections
//
// Sections and who reads them:
//   machine   the runner's MachineConfig (QEMU): size, kernel, vsock device
//   workload  the guest's agent::WorkloadSpec: command overrides, hostname,
//             tmpfs mounts, confinement (capabilities, seccomp, sysctls)
//   network   the runner's GuestNetwork: port mappings, DNS upstreams and the
//             egress policy, parsed; /etc/hosts lines
//   shares    the volumes, with their 9p tags assigned here and nowhere else
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "image/workload_config.h"
#include "microvm/runtime.h"
#include "net/egress_policy.h"
#include "net/network_config.h"
#include "net/network_plan.h"
#include "security/hardening.h"
#include "state/vm_record.h"

namespace microvm {

// What planning needs to know about the host.
struct HostFacts {
  uid_t euid = 0;
  std::filesystem::path cwd;  // relative volume paths are relative to it
  std::string qemu;           // the QEMU binary, absolute (empty if not found)
  unsigned tsc_khz = 0;
  std::string kernel;     // absolute
  std::string initramfs;  // absolute
  // Questions about the host's files and ports (the host's answers by
  // default, a test's fakes in tests).
  std::function<bool(const std::filesystem::path&)> is_directory;
  std::function<bool(const std::filesystem::path&)> exists;
  std::function<Result<std::string>(const std::filesystem::path&)> read_file;
  std::function<Result<void>(const net::PortMapping&)> check_host_port_free;
};

// The facts of this host, for a VM booting `kernel` and `initramfs` with `qemu`.
HostFacts gatherHostFacts(const std::filesystem::path& kernel, const std::filesystem::path& initramfs,
                          const std::string& qemu);

struct VmPlan {
  std::string name;  // empty: the VM's short id
  bool remove = false;

  struct Machine {
    std::string qemu;
    std::string accel;  // resolved after planning (create() runs preflight first)
    unsigned tsc_khz = 0;
    int cpus = 1;
    int memory_mib = 512;
    std::string kernel;
    std::string initramfs;
    bool vsock = true;
    std::vector<VmSpec::VsockPort> vsock_ports;
  } machine;

  struct Workload {
    WorkloadOverrides overrides;  // merged with the image's defaults once it is pulled
    std::string hostname;         // empty: the VM's short id
    bool open_stdin = false;
    bool tty = false;
    uint16_t tty_rows = 0;  // 0: see VmSpec::tty_rows
    uint16_t tty_cols = 0;
    std::vector<std::pair<std::string, std::string>> tmpfs;  // guest path, mount options
    std::vector<std::string> ulimits;  // canonical "nofile=1024:2048"
    HardeningPlan confinement;
    int stop_timeout_seconds = 10;
    uint64_t log_max_size = 0;
    int log_max_files = 0;
  } workload;

  struct Network {
    std::string mode = "user";  // "user" or "none"
    // Ports, DNS upstreams and the egress policy, parsed: what the runner's
    // GuestNetwork is built from, through spec.json, as it is.
    net::NetworkPlan guest;
    std::vector<std::string> extra_hosts;     // "NAME:IP", checked
    net::EgressPolicyRequest egress_request;  // the rules as asked (inspect shows them)
  } network;

  std::vector<VmSpec::Share> shares;  // tags "vol0", "vol1", ... in order
};

// Checks and parses `options`; the errors are the messages `run` reports.
Result<VmPlan> planVm(const RunOptions& options, const HostFacts& host);


// Writes the plan's sections into `spec` (what spec.json stores). The
// workload's command, env, workdir and user are create()'s: they need the image.
void writePlan(const VmPlan& plan, VmSpec& spec);

}  // namespace microvm
