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
//
// The second half of this file is the agent protocol: exec, files, probes and
// the workload's exit code, served by the guest agent on vsock port kAgentPort
// with the same framing (docs/AGENT_PROTOCOL.md is its reference).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
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

  // The agent protocol (see "The agent protocol" below); never on the
  // control port.
  kAgentHello = 64,
  kRequest = 65,
  kResult = 66,
  kInput = 67,
  kOutput = 68,
  kErrorOutput = 69,
  kResize = 70,
  kExecSignal = 71,
  kExited = 72,
  kData = 73,
  kEntries = 74,
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
    } else if (offset_ > 65536 && offset_ * 2 > buffer_.size()) {
      // Only once the consumed part outweighs the rest, so that draining a
      // large buffer frame by frame moves each byte a bounded number of times.
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

// ===========================================================================
// The agent protocol.
//
// Transport: a byte stream to the guest agent, which listens on vsock port
// kAgentPort. The host reaches it through the runner's hybrid-vsock socket
// (<runtime dir>/vsock.sock: write "CONNECT 1024\n", read "OK <port>\n").
// Framing is the control channel's (appendFrame / FrameReader, 1 MiB cap).
//
// One operation per connection; concurrency is many connections. A
// conversation:
//   client -> agent  kAgentHello  u32 kAgentProtocolVersion
//   client -> agent  kRequest     encodeRequest(): op, request id, arguments
//   agent  -> client kAgentHello  u32 the agent's version
//   agent  -> client kResult      encodeResult(): the request id, a status
//                                 and what the operation answers
// The client may send its hello and request back to back (one round trip).
// An agent that does not speak the client's version answers kResult with
// status kUnsupported and closes. Operations:
//   kPing        -> kResult ok                      (the latency floor)
//   kExec        -> kResult ok {pid} or failed; then, until the process ends:
//                   client: kInput (stdin bytes; empty payload = EOF),
//                           kResize (u16 rows, u16 cols), kExecSignal (u32)
//                   agent:  kOutput (stdout, or the tty), kErrorOutput
//                   and last kExited (u32 exit code: 0-255, or 128+signal)
//   kPutFile     <- kData chunks, then an empty kData (end); the file is
//                   written beside `path` and renamed over it (atomic);
//                   -> kResult.  (link_target set: a symlink, no data.)
//   kGetFile     -> kResult ok {info} or failed; kData chunks; an empty kData
//                   ends a complete file, a kResult (failed) a broken one
//   kStat        -> kResult ok {info} (lstat: a symlink is not followed)
//   kList        -> kEntries (batches of entries), then kResult
//   kMkdir       -> kResult (`parents`: mkdir -p, no error if it exists)
//   kWait        -> kResult ok {exit_code} once the workload has exited
//   kProbeTcp    -> kResult ok if 127.0.0.1:port or [::1]:port accepts
//   kProbeHttp   -> kResult ok {http_status} for GET `path` on 127.0.0.1:port
// Any other op -> kResult with status kUnsupported. The agent closes the
// connection after the last frame of the operation. Unknown frame types are
// ignored; unknown fields are skipped; a malformed frame or request ends the
// connection (kResult kBadRequest when possible), never the agent.

inline constexpr uint32_t kAgentPort = 1024;
inline constexpr uint32_t kAgentProtocolVersion = 1;

enum class AgentOp : uint32_t {
  kPing = 1,
  kExec = 2,
  kPutFile = 3,
  kGetFile = 4,
  kStat = 5,
  kList = 6,
  kMkdir = 7,
  kWait = 8,
  kProbeTcp = 9,
  kProbeHttp = 10,
};

enum class AgentStatus : uint32_t {
  kOk = 0,
  kFailed = 1,       // error_number and message say why
  kUnsupported = 2,  // unknown op or protocol version
  kBadRequest = 3,   // a malformed request or frame
};

// Fields of kRequest, kResult and file entries: {u16 tag, u32 length, bytes}
// as in the workload spec; integers are little-endian u32 (u64 where noted).
enum class AgentTag : uint16_t {
  // Requests.
  kOp = 1,
  kRequestId = 2,
  kArg = 3,          // repeated
  kEnv = 4,          // repeated, "KEY=VALUE"
  kCwd = 5,
  kUser = 6,
  kTty = 7,          // one byte
  kRows = 8,
  kCols = 9,
  kPath = 10,
  kMode = 11,
  kUid = 12,
  kGid = 13,
  kMtime = 14,       // u64: seconds since the epoch
  kPort = 15,
  kTimeoutMs = 16,
  kParents = 17,     // one byte
  kLinkTarget = 18,
  // Results.
  kStatus = 32,
  kErrno = 33,
  kMessage = 34,
  kPid = 35,
  kExitCode = 36,
  kHttpStatus = 37,
  kInfo = 38,        // nested FileInfo fields
  // File entries (FileInfo).
  kName = 48,
  kType = 49,        // one byte, FileType
  kSize = 50,        // u64
  kEntry = 51,       // in kEntries frames: nested FileInfo fields
};

enum class FileType : uint8_t { kOther = 0, kRegular = 1, kDirectory = 2, kSymlink = 3 };

struct FileInfo {
  std::string name;  // in listings: the entry's name
  FileType type = FileType::kOther;
  uint32_t mode = 0;  // permission bits (07777)
  uint64_t size = 0;
  int64_t mtime = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  std::string link_target;  // symlinks

  bool operator==(const FileInfo&) const = default;
};

struct AgentRequest {
  uint32_t op = 0;  // an AgentOp; unknown values are kept (answer: kUnsupported)
  uint32_t id = 0;
  // kExec.
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string cwd;   // empty: the workload's working directory
  std::string user;  // empty: the workload's user
  bool tty = false;
  uint16_t rows = 0;
  uint16_t cols = 0;
  // Files (and kProbeHttp's request path).
  std::string path;
  std::optional<uint32_t> mode;
  std::optional<uint32_t> uid;
  std::optional<uint32_t> gid;
  std::optional<int64_t> mtime;
  std::string link_target;
  bool parents = false;
  // Probes.
  uint32_t port = 0;
  uint32_t timeout_ms = 0;  // 0: the agent's default

  bool operator==(const AgentRequest&) const = default;
};

struct AgentResult {
  uint32_t id = 0;
  AgentStatus status = AgentStatus::kOk;
  uint32_t error_number = 0;  // the guest's errno, when status is kFailed
  std::string message;
  uint32_t pid = 0;
  uint32_t exit_code = 0;
  uint32_t http_status = 0;
  std::optional<FileInfo> info;

  bool ok() const { return status == AgentStatus::kOk; }
  bool operator==(const AgentResult&) const = default;
};

inline void appendField(std::string& out, AgentTag tag, std::string_view value) {
  putLe16(out, static_cast<uint16_t>(tag));
  putLe32(out, static_cast<uint32_t>(value.size()));
  out.append(value);
}
inline void appendU32Field(std::string& out, AgentTag tag, uint32_t value) { appendField(out, tag, encodeU32(value)); }
inline void appendU64Field(std::string& out, AgentTag tag, uint64_t value) {
  std::string bytes;
  putLe32(bytes, static_cast<uint32_t>(value));
  putLe32(bytes, static_cast<uint32_t>(value >> 32));
  appendField(out, tag, bytes);
}
inline std::optional<uint64_t> decodeU64(std::string_view value) {
  if (value.size() != 8) return std::nullopt;
  return getLe32(value.data()) | uint64_t{getLe32(value.data() + 4)} << 32;
}
inline std::optional<bool> decodeBool(std::string_view value) {
  if (value.size() != 1) return std::nullopt;
  return value[0] != 0;
}

// Calls visit(tag, value) for each field; false if a field runs past the end
// of `payload` or visit returns false.
inline bool forEachField(std::string_view payload, const std::function<bool(AgentTag, std::string_view)>& visit) {
  size_t pos = 0;
  while (pos < payload.size()) {
    if (payload.size() - pos < 6) return false;
    auto tag = static_cast<AgentTag>(getLe16(payload.data() + pos));
    uint32_t length = getLe32(payload.data() + pos + 2);
    pos += 6;
    if (payload.size() - pos < length) return false;
    if (!visit(tag, payload.substr(pos, length))) return false;
    pos += length;
  }
  return true;
}

inline std::string encodeFileInfo(const FileInfo& info) {
  std::string out;
  if (!info.name.empty()) appendField(out, AgentTag::kName, info.name);
  appendField(out, AgentTag::kType, std::string(1, static_cast<char>(info.type)));
  appendU32Field(out, AgentTag::kMode, info.mode);
  appendU64Field(out, AgentTag::kSize, info.size);
  appendU64Field(out, AgentTag::kMtime, static_cast<uint64_t>(info.mtime));
  appendU32Field(out, AgentTag::kUid, info.uid);
  appendU32Field(out, AgentTag::kGid, info.gid);
  if (!info.link_target.empty()) appendField(out, AgentTag::kLinkTarget, info.link_target);
  return out;
}

inline std::optional<FileInfo> decodeFileInfo(std::string_view payload) {
  FileInfo info;
  bool valid = forEachField(payload, [&info](AgentTag tag, std::string_view value) {
    std::optional<uint32_t> u32;
    std::optional<uint64_t> u64;
    switch (tag) {
      case AgentTag::kName: info.name = value; return true;
      case AgentTag::kType:
        if (value.size() != 1 || static_cast<uint8_t>(value[0]) > static_cast<uint8_t>(FileType::kSymlink)) {
          return false;
        }
        info.type = static_cast<FileType>(value[0]);
        return true;
      case AgentTag::kMode:
        if (!(u32 = decodeU32(value))) return false;
        info.mode = *u32 & 07777;
        return true;
      case AgentTag::kSize:
        if (!(u64 = decodeU64(value))) return false;
        info.size = *u64;
        return true;
      case AgentTag::kMtime:
        if (!(u64 = decodeU64(value))) return false;
        info.mtime = static_cast<int64_t>(*u64);
        return true;
      case AgentTag::kUid:
        if (!(u32 = decodeU32(value))) return false;
        info.uid = *u32;
        return true;
      case AgentTag::kGid:
        if (!(u32 = decodeU32(value))) return false;
        info.gid = *u32;
        return true;
      case AgentTag::kLinkTarget: info.link_target = value; return true;
      default: return true;
    }
  });
  if (!valid) return std::nullopt;
  return info;
}

inline std::string encodeRequest(const AgentRequest& request) {
  std::string out;
  appendU32Field(out, AgentTag::kOp, request.op);
  appendU32Field(out, AgentTag::kRequestId, request.id);
  for (const auto& arg : request.argv) appendField(out, AgentTag::kArg, arg);
  for (const auto& var : request.env) appendField(out, AgentTag::kEnv, var);
  if (!request.cwd.empty()) appendField(out, AgentTag::kCwd, request.cwd);
  if (!request.user.empty()) appendField(out, AgentTag::kUser, request.user);
  if (request.tty) appendField(out, AgentTag::kTty, std::string(1, '\1'));
  if (request.rows != 0) appendU32Field(out, AgentTag::kRows, request.rows);
  if (request.cols != 0) appendU32Field(out, AgentTag::kCols, request.cols);
  if (!request.path.empty()) appendField(out, AgentTag::kPath, request.path);
  if (request.mode) appendU32Field(out, AgentTag::kMode, *request.mode);
  if (request.uid) appendU32Field(out, AgentTag::kUid, *request.uid);
  if (request.gid) appendU32Field(out, AgentTag::kGid, *request.gid);
  if (request.mtime) appendU64Field(out, AgentTag::kMtime, static_cast<uint64_t>(*request.mtime));
  if (!request.link_target.empty()) appendField(out, AgentTag::kLinkTarget, request.link_target);
  if (request.parents) appendField(out, AgentTag::kParents, std::string(1, '\1'));
  if (request.port != 0) appendU32Field(out, AgentTag::kPort, request.port);
  if (request.timeout_ms != 0) appendU32Field(out, AgentTag::kTimeoutMs, request.timeout_ms);
  return out;
}

// Returns nullopt for a malformed request: a truncated field, an integer of
// the wrong width, a window size above 65535, or no op.
inline std::optional<AgentRequest> decodeRequest(std::string_view payload) {
  AgentRequest request;
  bool has_op = false;
  bool valid = forEachField(payload, [&](AgentTag tag, std::string_view value) {
    std::optional<uint32_t> u32;
    std::optional<uint64_t> u64;
    std::optional<bool> flag;
    auto number = [&](uint32_t& target) {
      if (!(u32 = decodeU32(value))) return false;
      target = *u32;
      return true;
    };
    auto optional_number = [&](std::optional<uint32_t>& target) {
      if (!(u32 = decodeU32(value))) return false;
      target = *u32;
      return true;
    };
    auto window = [&](uint16_t& target) {
      if (!(u32 = decodeU32(value)) || *u32 > 0xffff) return false;
      target = static_cast<uint16_t>(*u32);
      return true;
    };
    auto boolean = [&](bool& target) {
      if (!(flag = decodeBool(value))) return false;
      target = *flag;
      return true;
    };
    switch (tag) {
      case AgentTag::kOp: has_op = true; return number(request.op);
      case AgentTag::kRequestId: return number(request.id);
      case AgentTag::kArg: request.argv.emplace_back(value); return true;
      case AgentTag::kEnv: request.env.emplace_back(value); return true;
      case AgentTag::kCwd: request.cwd = value; return true;
      case AgentTag::kUser: request.user = value; return true;
      case AgentTag::kTty: return boolean(request.tty);
      case AgentTag::kRows: return window(request.rows);
      case AgentTag::kCols: return window(request.cols);
      case AgentTag::kPath: request.path = value; return true;
      case AgentTag::kMode: return optional_number(request.mode);
      case AgentTag::kUid: return optional_number(request.uid);
      case AgentTag::kGid: return optional_number(request.gid);
      case AgentTag::kMtime:
        if (!(u64 = decodeU64(value))) return false;
        request.mtime = static_cast<int64_t>(*u64);
        return true;
      case AgentTag::kLinkTarget: request.link_target = value; return true;
      case AgentTag::kParents: return boolean(request.parents);
      case AgentTag::kPort: return number(request.port);
      case AgentTag::kTimeoutMs: return number(request.timeout_ms);
      default: return true;
    }
  });
  if (!valid || !has_op) return std::nullopt;
  return request;
}

inline std::string encodeResult(const AgentResult& result) {
  std::string out;
  appendU32Field(out, AgentTag::kRequestId, result.id);
  appendU32Field(out, AgentTag::kStatus, static_cast<uint32_t>(result.status));
  if (result.error_number != 0) appendU32Field(out, AgentTag::kErrno, result.error_number);
  if (!result.message.empty()) appendField(out, AgentTag::kMessage, result.message);
  if (result.pid != 0) appendU32Field(out, AgentTag::kPid, result.pid);
  if (result.exit_code != 0) appendU32Field(out, AgentTag::kExitCode, result.exit_code);
  if (result.http_status != 0) appendU32Field(out, AgentTag::kHttpStatus, result.http_status);
  if (result.info) appendField(out, AgentTag::kInfo, encodeFileInfo(*result.info));
  return out;
}

// Returns nullopt for a malformed result. An unknown status reads as kFailed:
// whatever a newer agent meant, it was not success.
inline std::optional<AgentResult> decodeResult(std::string_view payload) {
  AgentResult result;
  bool has_status = false;
  bool valid = forEachField(payload, [&](AgentTag tag, std::string_view value) {
    std::optional<uint32_t> u32;
    auto number = [&](uint32_t& target) {
      if (!(u32 = decodeU32(value))) return false;
      target = *u32;
      return true;
    };
    switch (tag) {
      case AgentTag::kRequestId: return number(result.id);
      case AgentTag::kStatus: {
        uint32_t status = 0;
        if (!number(status)) return false;
        has_status = true;
        result.status = status <= static_cast<uint32_t>(AgentStatus::kBadRequest) ? static_cast<AgentStatus>(status)
                                                                                    : AgentStatus::kFailed;
        return true;
      }
      case AgentTag::kErrno: return number(result.error_number);
      case AgentTag::kMessage: result.message = value; return true;
      case AgentTag::kPid: return number(result.pid);
      case AgentTag::kExitCode: return number(result.exit_code);
      case AgentTag::kHttpStatus: return number(result.http_status);
      case AgentTag::kInfo: {
        auto info = decodeFileInfo(value);
        if (!info) return false;
        result.info = std::move(*info);
        return true;
      }
      default: return true;
    }
  });
  if (!valid || !has_status) return std::nullopt;
  return result;
}

// kEntries payload: one kEntry field per FileInfo.
inline std::string encodeEntries(const std::vector<FileInfo>& entries) {
  std::string out;
  for (const auto& entry : entries) appendField(out, AgentTag::kEntry, encodeFileInfo(entry));
  return out;
}

inline std::optional<std::vector<FileInfo>> decodeEntries(std::string_view payload) {
  std::vector<FileInfo> entries;
  bool valid = forEachField(payload, [&entries](AgentTag tag, std::string_view value) {
    if (tag != AgentTag::kEntry) return true;
    auto info = decodeFileInfo(value);
    if (!info) return false;
    entries.push_back(std::move(*info));
    return true;
  });
  if (!valid) return std::nullopt;
  return entries;
}

// kResize payload.
struct WindowSize {
  uint16_t rows = 0;
  uint16_t cols = 0;
};
inline std::string encodeWindowSize(WindowSize size) {
  std::string out;
  putLe16(out, size.rows);
  putLe16(out, size.cols);
  return out;
}
inline std::optional<WindowSize> decodeWindowSize(std::string_view payload) {
  if (payload.size() != 4) return std::nullopt;
  return WindowSize{getLe16(payload.data()), getLe16(payload.data() + 2)};
}

}  // namespace microvm::agent
