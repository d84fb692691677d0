// microvmd's request bodies: the JSON a client sends, checked and turned into
// the library's options. Everything here is untrusted input (fuzz/
// daemon_request_fuzz.cc drives it); every error names the field and says
// what to fix.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "microvm/result.h"
#include "microvm/runtime.h"

namespace microvm::daemon {

// POST /v1/sandboxes.
struct CreateRequest {
  RunOptions run;        // image or rootfs, command, env, ... (output fds: -1)
  std::string snapshot;  // start from this snapshot instead of image/rootfs
  std::map<std::string, std::string> labels;
  int64_t ttl_seconds = 0;  // 0: none
  std::string source;       // what to show: the image reference, rootfs path or snapshot
};

// POST /v1/sandboxes/{id}/exec.
struct ExecRequest {
  std::vector<std::string> command;
  std::vector<std::string> env;  // KEY=VALUE
  std::string cwd;
  std::string user;
  std::string stdin_data;    // decoded
  int timeout_seconds = 60;  // 0 (streaming only): none
  bool tty = false;
};

// A label filter "k=v" (or "k": the label exists).
struct LabelFilter {
  std::string key;
  std::optional<std::string> value;
};

inline constexpr int64_t kMaxTtlSeconds = int64_t{30} * 24 * 3600;
inline constexpr int kMaxExecTimeoutSeconds = 24 * 3600;

Result<CreateRequest> parseCreateRequest(std::string_view body);
// `streaming`: the WebSocket form (no stdin in the body; tty, rows and cols
// allowed; no timeout unless given).
Result<ExecRequest> parseExecRequest(std::string_view body, bool streaming = false);
// {"name": "..."} for /snapshot.
Result<std::string> parseSnapshotName(std::string_view body);
// A fork's body: {"count": N} (1 to 64; empty body or no count: 1).
Result<int> parseForkCount(std::string_view body);
Result<LabelFilter> parseLabelFilter(std::string_view text);

// Base64 (RFC 4648, with padding). decode fails on anything else.
std::string base64Encode(std::string_view data);
Result<std::string> base64Decode(std::string_view text);
// True when `data` is valid UTF-8 (then JSON can carry it as a string).
bool isUtf8(std::string_view data);

// Percent-decoding of a query component ('+' is a space).
Result<std::string> percentDecode(std::string_view text);
// The value of `key` in a query string "a=1&b=2" (all of them, in order).
Result<std::vector<std::string>> queryValues(std::string_view query, std::string_view key);

}  // namespace microvm::daemon
