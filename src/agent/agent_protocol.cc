#include "agent/agent_protocol.h"

#include <utility>

namespace microvm::agent {

const char* agentTagName(uint16_t tag) {
  switch (static_cast<AgentTag>(tag)) {
    case AgentTag::kOp: return "op";
    case AgentTag::kRequestId: return "request id";
    case AgentTag::kArg: return "arg";
    case AgentTag::kEnv: return "env";
    case AgentTag::kCwd: return "cwd";
    case AgentTag::kUser: return "user";
    case AgentTag::kTty: return "tty";
    case AgentTag::kRows: return "rows";
    case AgentTag::kCols: return "cols";
    case AgentTag::kPath: return "path";
    case AgentTag::kMode: return "mode";
    case AgentTag::kUid: return "uid";
    case AgentTag::kGid: return "gid";
    case AgentTag::kMtime: return "mtime";
    case AgentTag::kPort: return "port";
    case AgentTag::kTimeoutMs: return "timeout ms";
    case AgentTag::kParents: return "parents";
    case AgentTag::kLinkTarget: return "link target";
    case AgentTag::kRealtimeNs: return "realtime ns";
    case AgentTag::kEntropy: return "entropy";
    case AgentTag::kStatus: return "status";
    case AgentTag::kErrno: return "errno";
    case AgentTag::kMessage: return "message";
    case AgentTag::kPid: return "pid";
    case AgentTag::kExitCode: return "exit code";
    case AgentTag::kHttpStatus: return "http status";
    case AgentTag::kInfo: return "info";
    case AgentTag::kName: return "name";
    case AgentTag::kType: return "type";
    case AgentTag::kSize: return "size";
    case AgentTag::kEntry: return "entry";
  }
  return nullptr;
}

namespace {

// Reads a field's integer into `target` (any integer type it fits).
template <typename T>
Result<void> readU32(const TlvReader& reader, const TlvField& field, T& target) {
  auto value = reader.u32(field);
  if (!value) return value.error();
  target = *value;
  return success();
}

Result<void> readBool(const TlvReader& reader, const TlvField& field, bool& target) {
  auto value = reader.flag(field);
  if (!value) return value.error();
  target = *value;
  return success();
}

Result<void> readMtime(const TlvReader& reader, const TlvField& field, int64_t& target) {
  auto value = reader.u64(field);
  if (!value) return value.error();
  target = static_cast<int64_t>(*value);
  return success();
}

// A terminal dimension: a u32 on the wire, at most 65535.
Result<void> readWindow(const TlvReader& reader, const TlvField& field, uint16_t& target) {
  auto value = reader.u32(field);
  if (!value) return value.error();
  if (*value > 0xffff) return reader.fieldError(field, std::to_string(*value) + " exceeds 65535");
  target = static_cast<uint16_t>(*value);
  return success();
}

Result<void> applyFileInfoField(const TlvReader& reader, const TlvField& field, FileInfo& info) {
  switch (static_cast<AgentTag>(field.tag)) {
    case AgentTag::kName: info.name = field.value; return success();
    case AgentTag::kType:
      if (field.value.size() != 1) {
        return reader.fieldError(field, "one byte expected, got " + std::to_string(field.value.size()));
      }
      if (static_cast<uint8_t>(field.value[0]) > static_cast<uint8_t>(FileType::kSymlink)) {
        return reader.fieldError(field,
                                 "unknown file type " + std::to_string(static_cast<uint8_t>(field.value[0])));
      }
      info.type = static_cast<FileType>(field.value[0]);
      return success();
    case AgentTag::kMode: {
      MICROVM_TRY(readU32(reader, field, info.mode));
      info.mode &= 07777;
      return success();
    }
    case AgentTag::kSize: {
      auto size = reader.u64(field);
      if (!size) return size.error();
      info.size = *size;
      return success();
    }
    case AgentTag::kMtime: return readMtime(reader, field, info.mtime);
    case AgentTag::kUid: return readU32(reader, field, info.uid);
    case AgentTag::kGid: return readU32(reader, field, info.gid);
    case AgentTag::kLinkTarget: info.link_target = field.value; return success();
    default: return success();
  }
}

Result<void> applyRequestField(const TlvReader& reader, const TlvField& field, AgentRequest& request) {
  auto optional_number = [&](std::optional<uint32_t>& target) -> Result<void> {
    uint32_t value = 0;
    MICROVM_TRY(readU32(reader, field, value));
    target = value;
    return success();
  };
  switch (static_cast<AgentTag>(field.tag)) {
    case AgentTag::kOp: return readU32(reader, field, request.op);
    case AgentTag::kRequestId: return readU32(reader, field, request.id);
    case AgentTag::kArg: request.argv.emplace_back(field.value); return success();
    case AgentTag::kEnv: request.env.emplace_back(field.value); return success();
    case AgentTag::kCwd: request.cwd = field.value; return success();
    case AgentTag::kUser: request.user = field.value; return success();
    case AgentTag::kTty: return readBool(reader, field, request.tty);
    case AgentTag::kRows: return readWindow(reader, field, request.rows);
    case AgentTag::kCols: return readWindow(reader, field, request.cols);
    case AgentTag::kPath: request.path = field.value; return success();
    case AgentTag::kMode: return optional_number(request.mode);
    case AgentTag::kUid: return optional_number(request.uid);
    case AgentTag::kGid: return optional_number(request.gid);
    case AgentTag::kMtime: {
      int64_t mtime = 0;
      MICROVM_TRY(readMtime(reader, field, mtime));
      request.mtime = mtime;
      return success();
    }
    case AgentTag::kLinkTarget: request.link_target = field.value; return success();
    case AgentTag::kParents: return readBool(reader, field, request.parents);
    case AgentTag::kPort: return readU32(reader, field, request.port);
    case AgentTag::kTimeoutMs: return readU32(reader, field, request.timeout_ms);
    case AgentTag::kRealtimeNs: {
      int64_t realtime = 0;
      MICROVM_TRY(readMtime(reader, field, realtime));
      request.realtime_ns = realtime;
      return success();
    }
    case AgentTag::kEntropy:
      if (field.value.size() > kMaxRefreshEntropy) {
        return reader.fieldError(field, std::to_string(field.value.size()) + " bytes exceed " +
                                            std::to_string(kMaxRefreshEntropy));
      }
      request.entropy = field.value;
      return success();
    default: return success();
  }
}

Result<void> applyResultField(const TlvReader& reader, const TlvField& field, AgentResult& result) {
  switch (static_cast<AgentTag>(field.tag)) {
    case AgentTag::kRequestId: return readU32(reader, field, result.id);
    case AgentTag::kStatus: {
      uint32_t status = 0;
      MICROVM_TRY(readU32(reader, field, status));
      result.status = status <= static_cast<uint32_t>(AgentStatus::kBadRequest) ? static_cast<AgentStatus>(status)
                                                                                  : AgentStatus::kFailed;
      return success();
    }
    case AgentTag::kErrno: return readU32(reader, field, result.error_number);
    case AgentTag::kMessage: result.message = field.value; return success();
    case AgentTag::kPid: return readU32(reader, field, result.pid);
    case AgentTag::kExitCode: return readU32(reader, field, result.exit_code);
    case AgentTag::kHttpStatus: return readU32(reader, field, result.http_status);
    case AgentTag::kInfo: {
      auto info = decodeFileInfo(field.value);
      if (!info) return reader.fieldError(field, info.error().message());
      result.info = std::move(*info);
      return success();
    }
    default: return success();
  }
}

}  // namespace

std::string encodeFileInfo(const FileInfo& info) {
  std::string out;
  TlvWriter field(out);
  if (!info.name.empty()) field.bytes(AgentTag::kName, info.name);
  field.bytes(AgentTag::kType, std::string(1, static_cast<char>(info.type)));
  field.u32(AgentTag::kMode, info.mode);
  field.u64(AgentTag::kSize, info.size);
  field.u64(AgentTag::kMtime, static_cast<uint64_t>(info.mtime));
  field.u32(AgentTag::kUid, info.uid);
  field.u32(AgentTag::kGid, info.gid);
  if (!info.link_target.empty()) field.bytes(AgentTag::kLinkTarget, info.link_target);
  return out;
}

Result<FileInfo> decodeFileInfo(std::string_view payload) {
  FileInfo info;
  TlvReader reader(payload, "file info", agentTagName);
  while (!reader.done()) {
    auto field = reader.next();
    if (!field) return std::move(field).error();
    MICROVM_TRY(applyFileInfoField(reader, *field, info));
  }
  return info;
}

std::string encodeRequest(const AgentRequest& request) {
  std::string out;
  TlvWriter field(out);
  field.u32(AgentTag::kOp, request.op);
  field.u32(AgentTag::kRequestId, request.id);
  for (const auto& arg : request.argv) field.bytes(AgentTag::kArg, arg);
  for (const auto& var : request.env) field.bytes(AgentTag::kEnv, var);
  if (!request.cwd.empty()) field.bytes(AgentTag::kCwd, request.cwd);
  if (!request.user.empty()) field.bytes(AgentTag::kUser, request.user);
  if (request.tty) field.flag(AgentTag::kTty, true);
  if (request.rows != 0) field.u32(AgentTag::kRows, request.rows);
  if (request.cols != 0) field.u32(AgentTag::kCols, request.cols);
  if (!request.path.empty()) field.bytes(AgentTag::kPath, request.path);
  if (request.mode) field.u32(AgentTag::kMode, *request.mode);
  if (request.uid) field.u32(AgentTag::kUid, *request.uid);
  if (request.gid) field.u32(AgentTag::kGid, *request.gid);
  if (request.mtime) field.u64(AgentTag::kMtime, static_cast<uint64_t>(*request.mtime));
  if (!request.link_target.empty()) field.bytes(AgentTag::kLinkTarget, request.link_target);
  if (request.parents) field.flag(AgentTag::kParents, true);
  if (request.port != 0) field.u32(AgentTag::kPort, request.port);
  if (request.timeout_ms != 0) field.u32(AgentTag::kTimeoutMs, request.timeout_ms);
  if (request.realtime_ns) field.u64(AgentTag::kRealtimeNs, static_cast<uint64_t>(*request.realtime_ns));
  if (!request.entropy.empty()) field.bytes(AgentTag::kEntropy, request.entropy);
  return out;
}

Result<AgentRequest> decodeRequest(std::string_view payload) {
  AgentRequest request;
  bool has_op = false;
  TlvReader reader(payload, "request", agentTagName);
  while (!reader.done()) {
    auto field = reader.next();
    if (!field) return std::move(field).error();
    MICROVM_TRY(applyRequestField(reader, *field, request));
    if (field->tag == static_cast<uint16_t>(AgentTag::kOp)) has_op = true;
  }
  if (!has_op) return reader.error("no op field");
  return request;
}

std::string encodeResult(const AgentResult& result) {
  std::string out;
  TlvWriter field(out);
  field.u32(AgentTag::kRequestId, result.id);
  field.u32(AgentTag::kStatus, static_cast<uint32_t>(result.status));
  if (result.error_number != 0) field.u32(AgentTag::kErrno, result.error_number);
  if (!result.message.empty()) field.bytes(AgentTag::kMessage, result.message);
  if (result.pid != 0) field.u32(AgentTag::kPid, result.pid);
  if (result.exit_code != 0) field.u32(AgentTag::kExitCode, result.exit_code);
  if (result.http_status != 0) field.u32(AgentTag::kHttpStatus, result.http_status);
  if (result.info) field.bytes(AgentTag::kInfo, encodeFileInfo(*result.info));
  return out;
}

Result<AgentResult> decodeResult(std::string_view payload) {
  AgentResult result;
  bool has_status = false;
  TlvReader reader(payload, "result", agentTagName);
  while (!reader.done()) {
    auto field = reader.next();
    if (!field) return std::move(field).error();
    MICROVM_TRY(applyResultField(reader, *field, result));
    if (field->tag == static_cast<uint16_t>(AgentTag::kStatus)) has_status = true;
  }
  if (!has_status) return reader.error("no status field");
  return result;
}

std::string encodeEntries(const std::vector<FileInfo>& entries) {
  std::string out;
  TlvWriter field(out);
  for (const auto& entry : entries) field.bytes(AgentTag::kEntry, encodeFileInfo(entry));
  return out;
}

Result<std::vector<FileInfo>> decodeEntries(std::string_view payload) {
  std::vector<FileInfo> entries;
  TlvReader reader(payload, "directory entries", agentTagName);
  while (!reader.done()) {
    auto field = reader.next();
    if (!field) return std::move(field).error();
    if (field->tag != static_cast<uint16_t>(AgentTag::kEntry)) continue;
    auto info = decodeFileInfo(field->value);
    if (!info) return reader.fieldError(*field, info.error().message());
    entries.push_back(std::move(*info));
  }
  return entries;
}

std::string encodeWindowSize(WindowSize size) {
  std::string out;
  putLe16(out, size.rows);
  putLe16(out, size.cols);
  return out;
}

Result<WindowSize> decodeWindowSize(std::string_view payload) {
  if (payload.size() != 4) {
    return Error(ErrorCode::kProtocol,
                 "window size: 4 bytes expected, got " + std::to_string(payload.size()) + " byte(s)");
  }
  return WindowSize{getLe16(payload.data()), getLe16(payload.data() + 2)};
}

}  // namespace microvm::agent
