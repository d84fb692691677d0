// The control port between the runner (host) and microvm-init (guest): the
// workload spec init runs, and its wire form. agent/protocol.h documents the
// conversation; this header holds its messages and their codec.
//
// Usage:
//   appendFrame(wire, FrameType::kSpec, encodeSpec(spec));      // host
//   auto spec = decodeSpec(frame.payload);                      // guest
//   if (!spec) fail(spec.error().message());
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/frame.h"
#include "microvm/result.h"

namespace microvm::agent {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr char kControlPortName[] = "microvm.ctl";
// The virtio-serial port that carries the agent's connections, multiplexed
// (agent/stream_mux.h).
inline constexpr char kAgentPortName[] = "microvm.agent";

// A filesystem init mounts into the guest after the root switch, in order.
// A mount that fails stops the VM (kError + exit 125); none is skipped.
struct MountSpec {
  std::string source;   // 9p mount tag (fstype "9p"), or ignored for "tmpfs"
  std::string target;   // absolute path in the guest; created if missing
  std::string fstype;   // "9p" or "tmpfs"
  std::string options;  // extra mount data, e.g. "size=64m" for tmpfs
  bool readonly = false;
};

// A rootfs hook's file or directory that travels in the spec (the small ones:
// kMaxSpecInjected*), which init writes into the root disk right after
// mounting it, as it does those in the initramfs (guest/boot.h). In the
// spec they reach a VM restored from a boot template too.
struct InjectedFile {
  std::string path;  // absolute and normalized; init refuses any other
  bool directory = false;
  std::string content;
  uint32_t mode = 0644;
  uint32_t uid = 0;
  uint32_t gid = 0;
};
inline constexpr size_t kMaxSpecInjectedBytes = 64 << 10;  // all contents together
inline constexpr size_t kMaxSpecInjectedFiles = 64;
// The kernel's BPF_MAXINSNS: the longest program seccomp() takes.
inline constexpr size_t kMaxSeccompProgramInstructions = 4096;
inline constexpr size_t kSeccompInstructionBytes = 8;  // struct sock_filter

// Every capability of Linux 6.1 (CAP_CHECKPOINT_RESTORE = 40 is the last).
inline constexpr uint64_t kAllCapabilities = (uint64_t{1} << 41) - 1;

// What init runs. Every field is set by the host; init applies no defaults of
// its own except those Docker applies (PATH, HOME, HOSTNAME when absent).
struct WorkloadSpec {
  std::vector<std::string> argv;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string workdir = "/";
  std::string user;              // "uid[:gid]" or "name[:group]"; empty = root
  std::string hostname;
  bool open_stdin = false;       // stdin is a pipe fed by kStdin frames; else /dev/null
  // The workload's stdio is a pseudo-terminal in the guest (docker's -t):
  // init makes it the workload's controlling terminal, relays its master as
  // kStdout (stdout and stderr merge) and writes kStdin into it.
  // kTerminalSize frames resize it. Rows/cols 0: the kernel's default.
  bool tty = false;
  uint16_t tty_rows = 0;
  uint16_t tty_cols = 0;
  std::string root_device = "/dev/vda";
  std::string root_fstype = "ext4";

  // Hardening, applied by init; the host decides every value.
  std::vector<MountSpec> mounts;
  std::vector<std::string> sysctls;           // "kernel.kptr_restrict=2": written to /proc/sys before the workload
  std::vector<std::string> ulimits;           // "nofile=1024:2048": set on the workload and every exec
  uint64_t capabilities = kAllCapabilities;   // bit N = capability N: the workload's bounding set, and for
                                              // a root workload also its permitted/effective/inheritable sets
  bool no_new_privs = false;                  // prctl(PR_SET_NO_NEW_PRIVS) for the workload
  // Seccomp filter for the workload (libseccomp). Empty default: no filter.
  // Default action: "allow", "kill", or "errno:N". Rules: "ACTION:SYSCALL"
  // with ACTION as above ("errno:1:unshare"); syscalls unknown to the guest's
  // libseccomp are skipped.
  std::string seccomp_default;
  std::vector<std::string> seccomp_rules;
  // The same profile compiled by the host (the runner) to the classic BPF
  // program init installs: struct sock_filter entries, native byte order,
  // at most kMaxSeccompProgramInstructions. Empty: init compiles the rules
  // itself, which under emulation costs about 20 ms of every start.
  std::string seccomp_program;

  // Networking. Init always brings `lo` up. With an IPv4 address it also
  // configures eth0 (statically: address, then default route via the
  // gateway); the IPv6 pair is optional. Without one the guest has only lo.
  std::string net_address4;  // "10.0.2.15/24"
  std::string net_gateway4;  // "10.0.2.2"
  std::string net_address6;  // "fd00::15/64"
  std::string net_gateway6;  // "fd00::2"
  // eth0's MAC address, "xx:xx:xx:xx:xx:xx"; empty: the device's. Every VM
  // has its own, also one restored from a boot template.
  std::string net_mac;
  // eth0's MTU; 0: the device's (the user network's 65520). A VM on the
  // pod's link (--network tap) takes the link's.
  uint32_t net_mtu = 0;
  // Whole files init writes into the root before the workload (empty: left
  // as the image has them).
  std::string etc_hosts;
  std::string etc_resolv_conf;
  std::vector<InjectedFile> injected;
};

// WorkloadSpec wire form: TLV fields (agent/tlv.h). Repeated tags append
// (argv, env). Unknown tags are skipped.
enum class SpecTag : uint16_t {
  kArg = 1,
  kEnv = 2,
  kWorkdir = 3,
  kUser = 4,
  kHostname = 5,
  kRootDevice = 6,
  kRootFstype = 7,
  kMount = 8,            // source \0 target \0 fstype \0 options \0 "ro"|"rw"
  kSysctl = 9,
  kCapabilities = 10,    // u64 little-endian
  kNoNewPrivs = 11,      // one byte, 0 or 1
  kSeccompDefault = 12,
  kSeccompRule = 13,
  kNetAddress4 = 14,
  kNetGateway4 = 15,
  kNetAddress6 = 16,
  kNetGateway6 = 17,
  kEtcHosts = 18,
  kEtcResolvConf = 19,
  kNetMac = 20,          // "02:..": eth0's address, the VM's own
  kUlimit = 21,          // "nofile=1024:2048" (parseUlimit), repeated
  kTty = 22,             // one byte, 0 or 1
  kTtySize = 23,         // u16 rows, u16 cols (encodeWindowSize)
  kNetMtu = 24,          // u32 little-endian: eth0's MTU
  kInjected = 25,        // u32 mode, u32 uid, u32 gid, u8 directory, path, \0, content (repeated)
  kSeccompProgram = 26,  // sock_filter[] (8 bytes each), at most kMaxSeccompProgramInstructions
  kOpenStdin = 30,       // one byte, 0 or 1
};

// A resource limit as Docker's --ulimit and the OCI spec's process.rlimits
// give it: "NAME=SOFT[:HARD]" with NAME one of core, cpu, data, fsize, locks,
// memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending,
// stack, as (or RLIMIT_NOFILE, ...), and each number a count or "unlimited"
// (or -1). HARD defaults to SOFT; SOFT may not exceed HARD.
struct Ulimit {
  int resource = 0;          // RLIMIT_*
  std::string name;          // "nofile"
  uint64_t soft = 0;         // RLIM_INFINITY for unlimited
  uint64_t hard = 0;
};
Result<Ulimit> parseUlimit(std::string_view text);
// "nofile=1024:2048": what parseUlimit reads back.
std::string formatUlimit(const Ulimit& limit);

// The name of a SpecTag for error messages ("arg"); nullptr if unknown.
const char* specTagName(uint16_t tag);

std::string encodeSpec(const WorkloadSpec& spec);

// A kInjected value; an error if it is short, has no NUL after the path, or
// the directory byte is not 0 or 1.
Result<InjectedFile> decodeInjected(std::string_view value);

// Splits a kMount value; an error unless it has exactly five parts, the last
// "ro" or "rw".
Result<MountSpec> decodeMount(std::string_view value);

// An error if a field runs past the end of the payload, a fixed-width field
// has the wrong width, a mount or injected file is malformed, there are more
// injected files or bytes than kMaxSpecInjected*, or argv is empty.
Result<WorkloadSpec> decodeSpec(std::string_view payload);

// kRefresh, sent by a runner that restored saved state, before anything
// else: the host's wall clock (u64 ns since the epoch, little-endian), the
// length of the host entropy that follows (u16, at most
// kMaxControlRefreshEntropy), the entropy, and then the VM's hostname (the
// rest, at most kMaxControlRefreshHostname bytes; empty: unchanged). Init
// sets the clock, reseeds the RNG and sets the hostname at once, without a
// round trip: a copy of a saved guest is a VM of its own.
inline constexpr size_t kMaxControlRefreshEntropy = 512;
inline constexpr size_t kMaxControlRefreshHostname = 64;
struct ControlRefresh {
  int64_t realtime_ns = 0;
  std::string entropy;
  std::string hostname;
};
std::string encodeRefresh(const ControlRefresh& refresh);
Result<ControlRefresh> decodeRefresh(std::string_view payload);

// A kRefresh's time is as old as the guest was slow to read it: tens of ms
// for a guest that emulation must translate afresh after a restore. Init
// then asks again: kClockProbe carries its CLOCK_MONOTONIC (u64 ns), and
// the host answers at once with kClock: its wall clock and that echo (u64
// each, little-endian). Init sets the wall clock plus half the round trip
// the echo measures (clockFromAnswer). The host answers one probe for each
// refresh it sent, and nothing else.
struct ControlClock {
  int64_t realtime_ns = 0;
  uint64_t echo_ns = 0;
};
std::string encodeClock(const ControlClock& clock);
// An error unless it is exactly 16 bytes with a clock within int64_t.
Result<ControlClock> decodeClock(std::string_view payload);
// The wall clock to set on receiving `answer` when the guest's monotonic
// clock reads `now_ns`: the host's time plus half the round trip, or the
// host's time alone if the echo makes no round trip of 0 to 1 s.
int64_t clockFromAnswer(const ControlClock& answer, uint64_t now_ns);

}  // namespace microvm::agent
