// The agent protocol: exec, files, probes and the workload's exit code,
// served by the guest agent on vsock port kAgentPort. agent/protocol.h
// documents the conversation (docs/AGENT_PROTOCOL.md is its reference); this
// header holds its messages and their codec.
//
// Usage:
//   appendFrame(wire, FrameType::kRequest, encodeRequest(request));  // client
//   auto request = decodeRequest(frame.payload);                     // agent
//   if (!request) refuse(request.error().message());
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/frame.h"
#include "agent/tlv.h"
#include "microvm/result.h"

namespace microvm::agent {

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
  kRefresh = 11,  // set the guest's clock and reseed its RNG (after a restore)
};

enum class AgentStatus : uint32_t {
  kOk = 0,
  kFailed = 1,       // error_number and message say why
  kUnsupported = 2,  // unknown op or protocol version
  kBadRequest = 3,   // a malformed request or frame
};

// Fields of kRequest, kResult and file entries: TLV fields (agent/tlv.h) as
// in the workload spec; integers are little-endian u32 (u64 where noted).
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
  kRealtimeNs = 19,  // u64: the host's CLOCK_REALTIME, ns since the epoch
  kEntropy = 20,     // host random bytes, at most kMaxRefreshEntropy
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

// The name of an AgentTag for error messages ("arg"); nullptr if unknown.
const char* agentTagName(uint16_t tag);

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

// The most entropy one kRefresh carries (the kernel's RNDADDENTROPY takes
// any size, but more than this adds nothing).
inline constexpr size_t kMaxRefreshEntropy = 512;

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
  // kRefresh: the host's wall clock (unset: leave the guest's) and bytes to
  // mix into the guest's RNG.
  std::optional<int64_t> realtime_ns;
  std::string entropy;

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

// One field appended to `out` (agent/tlv.h's TlvWriter, by AgentTag).
inline void appendField(std::string& out, AgentTag tag, std::string_view value) { TlvWriter(out).bytes(tag, value); }
inline void appendU32Field(std::string& out, AgentTag tag, uint32_t value) { TlvWriter(out).u32(tag, value); }
inline void appendU64Field(std::string& out, AgentTag tag, uint64_t value) { TlvWriter(out).u64(tag, value); }

// Every decoder below returns an ErrorCode::kProtocol error that says what
// was malformed and where. Unknown fields are skipped.
std::string encodeFileInfo(const FileInfo& info);
// An error for a truncated field, an integer of the wrong width or an
// unknown file type.
Result<FileInfo> decodeFileInfo(std::string_view payload);

std::string encodeRequest(const AgentRequest& request);
// An error for a truncated field, an integer of the wrong width, a window
// size above 65535, entropy above kMaxRefreshEntropy, or no op.
Result<AgentRequest> decodeRequest(std::string_view payload);

std::string encodeResult(const AgentResult& result);
// An error for a truncated field, an integer of the wrong width, malformed
// file info or no status. An unknown status reads as kFailed: whatever a
// newer agent meant, it was not success.
Result<AgentResult> decodeResult(std::string_view payload);

// kEntries payload: one kEntry field per FileInfo.
std::string encodeEntries(const std::vector<FileInfo>& entries);
Result<std::vector<FileInfo>> decodeEntries(std::string_view payload);

// kResize payload: u16 rows, u16 cols.
struct WindowSize {
  uint16_t rows = 0;
  uint16_t cols = 0;
};
std::string encodeWindowSize(WindowSize size);
Result<WindowSize> decodeWindowSize(std::string_view payload);

}  // namespace microvm::agent
