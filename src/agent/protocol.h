// The host<->guest control protocol: the one header that microvm-init (in the
// guest) and the host library share. Nothing else crosses that boundary.
//
// Transport: a virtio-serial port named kControlPortName. The byte stream
// carries frames: an 8-byte little-endian header {u16 type, u16 flags,
// u32 length} followed by `length` payload bytes (at most kMaxPayload).
//
// Conversation:
//   guest -> host  kHello     u32 protocol version; init is up and reading
//   host  -> guest kSpec      the encoded WorkloadSpec (once, first)
//   guest -> host  kStarted   u32 pid; the workload was forked
//   guest -> host  kStdout / kStderr   raw output bytes of the workload
//   host  -> guest kSignal    u32 signal number, forwarded to the workload
//   host  -> guest kStdin     bytes for the workload's stdin (spec open_stdin)
//   host  -> guest kStdinClose  empty; the workload's stdin reaches EOF once
//                             the bytes before it are delivered
//   guest -> host  kError     text; init could not start or run the workload
//   guest -> host  kExit      i32 exit code (128+N if killed by signal N)
//   host  -> guest kExitAck   empty; the host has the exit code, init may
//                             sync and power the VM off
// Unknown frame types are ignored by both sides (forward compatibility);
// a malformed stream (oversized length) is a protocol error, never an assert.
//
// Usage (either side):
//   std::string wire;
//   agent::appendFrame(wire, agent::FrameType::kSignal, agent::encodeU32(15));
//   agent::FrameReader reader;
//   reader.feed(bytes);
//   while (auto frame = reader.next()) handle(*frame);
//   if (reader.failed()) ...;
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace microvm::agent {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr char kControlPortName[] = "microvm.ctl";
inline constexpr uint32_t kMaxPayload = 1u << 20;
inline constexpr size_t kHeaderSize = 8;

enum class FrameType : uint16_t {
  kSpec = 1,
  kSignal = 2,
  kExitAck = 3,
  kStdin = 4,
  kStdinClose = 5,
  kHello = 16,
  kStarted = 17,
  kStdout = 18,
  kStderr = 19,
  kExit = 20,
  kError = 21,
};

struct Frame {
  FrameType type;
  std::string payload;
};

// A filesystem init mounts into the guest after the root switch, in order.
// A mount that fails stops the VM (kError + exit 125); none is skipped.
struct MountSpec {
  std::string source;   // 9p mount tag (fstype "9p"), or ignored for "tmpfs"
  std::string target;   // absolute path in the guest; created if missing
  std::string fstype;   // "9p" or "tmpfs"
  std::string options;  // extra mount data, e.g. "size=64m" for tmpfs
  bool readonly = false;
};

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
  std::string root_device = "/dev/vda";
  std::string root_fstype = "ext4";

  // Hardening, applied by init; the host decides every value.
  std::vector<MountSpec> mounts;
  std::vector<std::string> sysctls;           // "kernel.kptr_restrict=2": written to /proc/sys before the workload
  uint64_t capabilities = kAllCapabilities;   // bit N = capability N: the workload's bounding set, and for
                                              // a root workload also its permitted/effective/inheritable sets
  bool no_new_privs = false;                  // prctl(PR_SET_NO_NEW_PRIVS) for the workload
  // Seccomp filter for the workload (libseccomp). Empty default: no filter.
  // Default action: "allow", "kill", or "errno:N". Rules: "ACTION:SYSCALL"
  // with ACTION as above ("errno:1:unshare"); syscalls unknown to the guest's
  // libseccomp are skipped.
  std::string seccomp_default;
  std::vector<std::string> seccomp_rules;

  // Networking. Init always brings `lo` up. With an IPv4 address it also
  // configures eth0 (statically: address, then default route via the
  // gateway); the IPv6 pair is optional. Without one the guest has only lo.
  std::string net_address4;  // "10.0.2.15/24"
  std::string net_gateway4;  // "10.0.2.2"
  std::string net_address6;  // "fd00::15/64"
  std::string net_gateway6;  // "fd00::2"
  // Whole files init writes into the root before the workload (empty: left
  // as the image has them).
  std::string etc_hosts;
  std::string etc_resolv_conf;
};

inline void putLe16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xff));
  out.push_back(static_cast<char>(v >> 8));
}
inline void putLe32(std::string& out, uint32_t v) {
  for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
inline uint16_t getLe16(const char* p) {
  return static_cast<uint16_t>(static_cast<uint8_t>(p[0]) | static_cast<uint8_t>(p[1]) << 8);
}
inline uint32_t getLe32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(p[i]);
  return v;
}

inline std::string encodeU32(uint32_t v) {
  std::string out;
  putLe32(out, v);
  return out;
}
// Returns nullopt unless the payload is exactly four bytes.
inline std::optional<uint32_t> decodeU32(std::string_view payload) {
  if (payload.size() != 4) return std::nullopt;
  return getLe32(payload.data());
}

inline void appendFrame(std::string& out, FrameType type, std::string_view payload) {
  putLe16(out, static_cast<uint16_t>(type));
  putLe16(out, 0);
  putLe32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
}

// Reassembles frames from arbitrary chunks of the byte stream.
class FrameReader {
 public:
  // Appends bytes received from the peer.
  void feed(std::string_view bytes) { buffer_.append(bytes); }

  // The next complete frame, or nullopt if more bytes are needed or the
  // stream is corrupt (then failed() is true and stays true).
  std::optional<Frame> next() {
    if (failed_ || buffer_.size() - offset_ < kHeaderSize) return std::nullopt;
    const char* header = buffer_.data() + offset_;
    uint32_t length = getLe32(header + 4);
    if (length > kMaxPayload) {
      failed_ = true;
      return std::nullopt;
    }
    if (buffer_.size() - offset_ < kHeaderSize + length) return std::nullopt;
    Frame frame{static_cast<FrameType>(getLe16(header)), buffer_.substr(offset_ + kHeaderSize, length)};
    offset_ += kHeaderSize + length;
    if (offset_ == buffer_.size()) {
      buffer_.clear();
      offset_ = 0;
    } else if (offset_ > 65536) {
      buffer_.erase(0, offset_);
      offset_ = 0;
    }
    return frame;
  }

  bool failed() const { return failed_; }

 private:
  std::string buffer_;
  size_t offset_ = 0;
  bool failed_ = false;
};

// WorkloadSpec wire form: a sequence of {u16 tag, u32 length, bytes} fields.
// Repeated tags append (argv, env). Unknown tags are skipped.
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
  kOpenStdin = 30,       // one byte, 0 or 1
};

inline std::string encodeSpec(const WorkloadSpec& spec) {
  std::string out;
  auto field = [&out](SpecTag tag, std::string_view value) {
    putLe16(out, static_cast<uint16_t>(tag));
    putLe32(out, static_cast<uint32_t>(value.size()));
    out.append(value);
  };
  for (const auto& arg : spec.argv) field(SpecTag::kArg, arg);
  for (const auto& var : spec.env) field(SpecTag::kEnv, var);
  field(SpecTag::kWorkdir, spec.workdir);
  field(SpecTag::kUser, spec.user);
  field(SpecTag::kHostname, spec.hostname);
  field(SpecTag::kRootDevice, spec.root_device);
  field(SpecTag::kRootFstype, spec.root_fstype);
  for (const auto& mount : spec.mounts) {
    std::string value = mount.source;
    for (const std::string* part : {&mount.target, &mount.fstype, &mount.options}) {
      value.push_back('\0');
      value += *part;
    }
    value.push_back('\0');
    value += mount.readonly ? "ro" : "rw";
    field(SpecTag::kMount, value);
  }
  for (const auto& sysctl : spec.sysctls) field(SpecTag::kSysctl, sysctl);
  std::string caps;
  putLe32(caps, static_cast<uint32_t>(spec.capabilities));
  putLe32(caps, static_cast<uint32_t>(spec.capabilities >> 32));
  field(SpecTag::kCapabilities, caps);
  field(SpecTag::kNoNewPrivs, std::string(1, spec.no_new_privs ? '\1' : '\0'));
  if (spec.open_stdin) field(SpecTag::kOpenStdin, std::string(1, '\1'));
  if (!spec.seccomp_default.empty()) field(SpecTag::kSeccompDefault, spec.seccomp_default);
  for (const auto& rule : spec.seccomp_rules) field(SpecTag::kSeccompRule, rule);
  // Sent only when set: an older init skips them as unknown tags anyway.
  if (!spec.net_address4.empty()) field(SpecTag::kNetAddress4, spec.net_address4);
  if (!spec.net_gateway4.empty()) field(SpecTag::kNetGateway4, spec.net_gateway4);
  if (!spec.net_address6.empty()) field(SpecTag::kNetAddress6, spec.net_address6);
  if (!spec.net_gateway6.empty()) field(SpecTag::kNetGateway6, spec.net_gateway6);
  if (!spec.etc_hosts.empty()) field(SpecTag::kEtcHosts, spec.etc_hosts);
  if (!spec.etc_resolv_conf.empty()) field(SpecTag::kEtcResolvConf, spec.etc_resolv_conf);
  return out;
}

// Splits a kMount value; nullopt unless it has exactly five parts.
inline std::optional<MountSpec> decodeMount(std::string_view value) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t nul; (nul = value.find('\0', start)) != std::string_view::npos; start = nul + 1) {
    parts.emplace_back(value.substr(start, nul - start));
  }
  parts.emplace_back(value.substr(start));
  if (parts.size() != 5 || (parts[4] != "ro" && parts[4] != "rw")) return std::nullopt;
  return MountSpec{parts[0], parts[1], parts[2], parts[3], parts[4] == "ro"};
}

// Returns nullopt if a field runs past the end of the payload or argv is empty.
inline std::optional<WorkloadSpec> decodeSpec(std::string_view payload) {
  WorkloadSpec spec;
  size_t pos = 0;
  while (pos < payload.size()) {
    if (payload.size() - pos < 6) return std::nullopt;
    auto tag = static_cast<SpecTag>(getLe16(payload.data() + pos));
    uint32_t length = getLe32(payload.data() + pos + 2);
    pos += 6;
    if (payload.size() - pos < length) return std::nullopt;
    std::string value(payload.substr(pos, length));
    pos += length;
    switch (tag) {
      case SpecTag::kArg: spec.argv.push_back(std::move(value)); break;
      case SpecTag::kEnv: spec.env.push_back(std::move(value)); break;
      case SpecTag::kWorkdir: spec.workdir = std::move(value); break;
      case SpecTag::kUser: spec.user = std::move(value); break;
      case SpecTag::kHostname: spec.hostname = std::move(value); break;
      case SpecTag::kRootDevice: spec.root_device = std::move(value); break;
      case SpecTag::kRootFstype: spec.root_fstype = std::move(value); break;
      case SpecTag::kMount: {
        auto mount = decodeMount(value);
        if (!mount) return std::nullopt;
        spec.mounts.push_back(std::move(*mount));
        break;
      }
      case SpecTag::kSysctl: spec.sysctls.push_back(std::move(value)); break;
      case SpecTag::kCapabilities:
        if (value.size() != 8) return std::nullopt;
        spec.capabilities = getLe32(value.data()) | uint64_t{getLe32(value.data() + 4)} << 32;
        break;
      case SpecTag::kNoNewPrivs:
        if (value.size() != 1) return std::nullopt;
        spec.no_new_privs = value[0] != 0;
        break;
      case SpecTag::kOpenStdin:
        if (value.size() != 1) return std::nullopt;
        spec.open_stdin = value[0] != 0;
        break;
      case SpecTag::kSeccompDefault: spec.seccomp_default = std::move(value); break;
      case SpecTag::kSeccompRule: spec.seccomp_rules.push_back(std::move(value)); break;
      case SpecTag::kNetAddress4: spec.net_address4 = std::move(value); break;
      case SpecTag::kNetGateway4: spec.net_gateway4 = std::move(value); break;
      case SpecTag::kNetAddress6: spec.net_address6 = std::move(value); break;
      case SpecTag::kNetGateway6: spec.net_gateway6 = std::move(value); break;
      case SpecTag::kEtcHosts: spec.etc_hosts = std::move(value); break;
      case SpecTag::kEtcResolvConf: spec.etc_resolv_conf = std::move(value); break;
      default: break;
    }
  }
  if (spec.argv.empty()) return std::nullopt;
  return spec;
}

}  // namespace microvm::agent
