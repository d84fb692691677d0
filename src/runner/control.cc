#include "runner/control.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/overloaded.h"
#include "base/unique_fd.h"
#include "base/unix_socket.h"

namespace microvm {

using nlohmann::json;

namespace {

constexpr int kReplyTimeoutMs = 180000;  // a snapshot of a large guest takes a while
constexpr size_t kMaxLine = 64 * 1024;

}  // namespace

std::string encodeRequest(const RunnerRequest& request) {
  json message = std::visit(Overloaded{
                                [](const StopRequest& stop) { return json{{"op", "stop"}, {"timeout", stop.timeout_seconds}}; },
                                [](const KillRequest& kill) { return json{{"op", "kill"}, {"signal", kill.signal}}; },
                                [](const PauseRequest&) { return json{{"op", "pause"}}; },
                                [](const ResumeRequest&) { return json{{"op", "resume"}}; },
                                [](const SnapshotRequest& snapshot) { return json{{"op", "snapshot"}, {"dir", snapshot.dir}}; },
                                [](const SuspendRequest&) { return json{{"op", "suspend"}}; },
                                [](const SuspendCommitRequest&) { return json{{"op", "suspend_commit"}}; },
                                [](const AttachRequest& attach) { return json{{"op", "attach"}, {"stdin", attach.stdin}}; },
                                [](const PortAddRequest& add) { return json{{"op", "port_add"}, {"mapping", add.mapping}}; },
                                [](const PortRemoveRequest& remove) {
                                  return json{{"op", "port_rm"}, {"mapping", remove.mapping}};
                                },
                                [](const TimingRequest& timing) {
                                  return json{{"op", "timing"}, {"name", timing.name}, {"ms", timing.ms}};
                                },
                                [](const ResizeRequest& resize) {
                                  return json{{"op", "resize"}, {"rows", resize.rows}, {"cols", resize.cols}};
                                },
                            },
                            request);
  return message.dump() + "\n";
}

Result<RunnerRequest> decodeRequest(std::string_view line) {
  json message = json::parse(line, nullptr, /*allow_exceptions=*/false);
  auto invalid = [](const std::string& why) { return Error(ErrorCode::kProtocol, "bad runner request: " + why); };
  if (!message.is_object() || !message["op"].is_string()) return invalid("not an object with an op");
  std::string op = message["op"];
  if (op == "stop") {
    const json& timeout = message["timeout"];
    if (!timeout.is_number_integer() || timeout.get<long long>() < 0 || timeout.get<long long>() > 86400) {
      return invalid("timeout must be 0..86400 seconds");
    }
    return RunnerRequest(StopRequest{timeout.get<int>()});
  }
  if (op == "kill") {
    const json& signal = message["signal"];
    if (!signal.is_number_integer() || signal.get<long long>() < 1 || signal.get<long long>() >= NSIG) {
      return invalid("signal out of range");
    }
    return RunnerRequest(KillRequest{signal.get<int>()});
  }
  if (op == "pause") return RunnerRequest(PauseRequest{});
  if (op == "resume") return RunnerRequest(ResumeRequest{});
  if (op == "suspend") return RunnerRequest(SuspendRequest{});
  if (op == "suspend_commit") return RunnerRequest(SuspendCommitRequest{});
  if (op == "snapshot") {
    const json& dir = message["dir"];
    if (!dir.is_string() || dir.get<std::string>().empty() || dir.get<std::string>()[0] != '/') {
      return invalid("snapshot dir must be an absolute path");
    }
    return RunnerRequest(SnapshotRequest{dir.get<std::string>()});
  }
  if (op == "attach") {
    const json& stdin = message["stdin"];
    if (!stdin.is_null() && !stdin.is_boolean()) return invalid("stdin must be a boolean");
    return RunnerRequest(AttachRequest{stdin.is_boolean() && stdin.get<bool>()});
  }
  if (op == "port_add" || op == "port_rm") {
    // The runner parses the mapping itself; here it only has to be a short string.
    const json& mapping = message["mapping"];
    if (!mapping.is_string() || mapping.get<std::string>().empty() || mapping.get<std::string>().size() > 128) {
      return invalid("mapping must be a port mapping");
    }
    if (op == "port_add") return RunnerRequest(PortAddRequest{mapping.get<std::string>()});
    return RunnerRequest(PortRemoveRequest{mapping.get<std::string>()});
  }
  if (op == "timing") {
    const json& name = message["name"];
    const json& ms = message["ms"];
    bool name_ok = name.is_string() && !name.get<std::string>().empty() && name.get<std::string>().size() <= 32 &&
                   name.get<std::string>().find_first_not_of("abcdefghijklmnopqrstuvwxyz_") == std::string::npos;
    if (!name_ok) return invalid("timing name must be 1-32 of [a-z_]");
    if (!ms.is_number() || ms.get<double>() < 0 || ms.get<double>() > 1e9) return invalid("timing ms out of range");
    return RunnerRequest(TimingRequest{name.get<std::string>(), ms.get<double>()});
  }
  if (op == "resize") {
    const json& rows = message["rows"];
    const json& cols = message["cols"];
    auto dimension = [](const json& value) {
      return value.is_number_integer() && value.get<long long>() >= 1 && value.get<long long>() <= 65535;
    };
    if (!dimension(rows) || !dimension(cols)) return invalid("rows and cols must be 1..65535");
    return RunnerRequest(ResizeRequest{static_cast<uint16_t>(rows.get<int>()), static_cast<uint16_t>(cols.get<int>())});
  }
  return Error(ErrorCode::kUnsupported, "unsupported runner request \"" + op + "\"");
}

std::string encodeReply(const Result<void>& outcome) {
  json reply = outcome ? json{{"ok", true}} : json{{"ok", false}, {"error", outcome.error().message()}};
  return reply.dump() + "\n";
}

Result<void> decodeReply(std::string_view line) {
  json reply = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!reply.is_object() || !reply["ok"].is_boolean()) return Error(ErrorCode::kProtocol, "malformed reply from the runner");
  if (reply["ok"].get<bool>()) return success();
  return Error(ErrorCode::kIo, reply.value("error", std::string("the runner refused")));
}

Result<UniqueFd> openRunnerStream(const std::filesystem::path& socket_path, const RunnerRequest& request) {
  auto connected = connectUnix(socket_path);
  if (!connected) return std::move(connected).error().withContext("the VM's runner");
  UniqueFd fd = std::move(*connected);
  MICROVM_TRY(writeAll(fd.get(), encodeRequest(request)));
  // Byte by byte: what follows the reply line belongs to the caller. Replies
  // are one short line.
  std::string reply;
  while (reply.size() < kMaxLine) {
    pollfd pfd{fd.get(), POLLIN, 0};
    int ready = ::poll(&pfd, 1, kReplyTimeoutMs);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return Error(ErrorCode::kTimeout, "the VM's runner did not answer");
    char c;
    ssize_t got = ::read(fd.get(), &c, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return Error(ErrorCode::kIo, "the VM's runner closed the connection without answering");
    if (c == '\n') break;
    reply.push_back(c);
  }
  MICROVM_TRY(decodeReply(reply));
  return fd;
}

Result<void> sendRunnerRequest(const std::filesystem::path& socket_path, const RunnerRequest& request) {
  auto stream = openRunnerStream(socket_path, request);
  if (!stream) return std::move(stream).error();
  return success();
}

}  // namespace microvm
