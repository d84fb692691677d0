#include "requests.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <climits>
#include <nlohmann/json.hpp>
#include <set>

namespace microvm::daemon {

using nlohmann::json;

namespace {

Error bad(std::string message) {
  return Error(ErrorCode::kInvalidArgument, std::move(message));
}

Result<json> parseObject(std::string_view body, std::string_view what) {
  if (body.empty()) return json::object();
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad(std::string(what) + ": the body is not valid JSON");
  if (!j.is_object()) return bad(std::string(what) + ": the body must be a JSON object");
  return j;
}

Result<void> onlyKnown(const json& j, std::initializer_list<std::string_view> known, std::string_view what) {
  for (const auto& [key, value] : j.items()) {
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string list;
    for (auto name : known) list += (list.empty() ? "" : ", ") + std::string(name);
    return bad(std::string(what) + ": unknown field \"" + key + "\" (known: " + list + ")");
  }
  return success();
}

Result<std::string> stringField(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::string();
  if (!j[key].is_string()) return bad(std::string("\"") + key + "\" must be a string");
  return j[key].get<std::string>();
}

Result<std::vector<std::string>> stringList(const json& j, const char* key, size_t max = 4096) {
  std::vector<std::string> out;
  if (!j.contains(key) || j[key].is_null()) return out;
  const json& value = j[key];
  if (!value.is_array()) return bad(std::string("\"") + key + "\" must be an array of strings");
  if (value.size() > max) return bad(std::string("\"") + key + "\" has more than " + std::to_string(max) + " entries");
  for (const auto& item : value) {
    if (!item.is_string()) return bad(std::string("\"") + key + "\" must be an array of strings");
    out.push_back(item.get<std::string>());
  }
  return out;
}

Result<int64_t> intField(const json& j, const char* key, int64_t fallback, int64_t min, int64_t max) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const json& value = j[key];
  if (!value.is_number_integer()) return bad(std::string("\"") + key + "\" must be an integer");
  int64_t n = value.is_number_unsigned() && value.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)
                  ? INT64_MAX
                  : value.get<int64_t>();
  if (n < min || n > max) {
    return bad(std::string("\"") + key + "\" must be between " + std::to_string(min) + " and " + std::to_string(max));
  }
  return n;
}

bool validEnvKey(const std::string& key) {
  if (key.empty() || key.size() > 256) return false;
  return key.find('=') == std::string::npos && key.find('\0') == std::string::npos;
}

// {"KEY": "VALUE"} → KEY=VALUE lines.
Result<std::vector<std::string>> envObject(const json& j) {
  std::vector<std::string> out;
  if (!j.contains("env") || j["env"].is_null()) return out;
  const json& env = j["env"];
  if (!env.is_object()) return bad("\"env\" must be an object of strings, e.g. {\"KEY\": \"VALUE\"}");
  if (env.size() > 1024) return bad("\"env\" has more than 1024 entries");
  for (const auto& [key, value] : env.items()) {
    if (!validEnvKey(key)) return bad("\"env\": \"" + key + "\" is not a valid variable name");
    if (!value.is_string()) return bad("\"env\": the value of " + key + " must be a string");
    out.push_back(key + "=" + value.get<std::string>());
  }
  return out;
}

Result<std::vector<std::string>> commandField(const json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return std::vector<std::string>();
  if (j[key].is_string()) {
    // A string is a shell command line.
    std::string line = j[key].get<std::string>();
    if (line.empty()) return bad(std::string("\"") + key + "\" is empty");
    return std::vector<std::string>{"/bin/sh", "-c", line};
  }
  auto list = stringList(j, key);
  if (!list) return std::move(list).error();
  if (list->empty() || (*list)[0].empty()) return bad(std::string("\"") + key + "\" must not be empty");
  return list;
}

bool validLabelKey(const std::string& key) {
  if (key.empty() || key.size() > 128) return false;
  return std::all_of(key.begin(), key.end(),
                     [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == '/'; });
}

}  // namespace

Result<CreateRequest> parseCreateRequest(std::string_view body) {
  auto parsed = parseObject(body, "create");
  if (!parsed) return std::move(parsed).error();
  const json& j = *parsed;
  MICROVM_TRY(onlyKnown(j,
                        {"image", "rootfs", "snapshot", "name", "cmd", "env", "cwd", "user", "cpus", "memory_mib",
                         "ports", "volumes", "egress", "labels", "ttl_seconds", "network"},
                        "create"));
  CreateRequest request;
  RunOptions& run = request.run;
  run.stdout_fd = run.stderr_fd = -1;
  auto image = stringField(j, "image");
  if (!image) return std::move(image).error();
  auto rootfs = stringField(j, "rootfs");
  if (!rootfs) return std::move(rootfs).error();
  auto snapshot = stringField(j, "snapshot");
  if (!snapshot) return std::move(snapshot).error();
  int given = !image->empty() + !rootfs->empty() + !snapshot->empty();
  if (given != 1)
    return bad(
        "create: give exactly one of \"image\" (a reference), \"rootfs\" (a host directory) or \"snapshot\" (a name)");
  if (!rootfs->empty() && (*rootfs)[0] != '/') return bad("\"rootfs\" must be an absolute host path");
  run.image = *image;
  run.rootfs = *rootfs;
  request.snapshot = *snapshot;
  request.source = !image->empty() ? *image : !rootfs->empty() ? *rootfs : "snapshot:" + *snapshot;

  auto name = stringField(j, "name");
  if (!name) return std::move(name).error();
  if (name->size() > 128) return bad("\"name\" is longer than 128 characters");
  run.name = *name;
  auto command = commandField(j, "cmd");
  if (!command) return std::move(command).error();
  // A sandbox is for exec: without a command it stays up until deleted.
  run.command = command->empty() ? std::vector<std::string>{"/bin/sh", "-c", "while :; do sleep 3600; done"} : *command;
  auto env = envObject(j);
  if (!env) return std::move(env).error();
  run.env = *env;
  auto cwd = stringField(j, "cwd");
  if (!cwd) return std::move(cwd).error();
  run.workdir = *cwd;
  auto user = stringField(j, "user");
  if (!user) return std::move(user).error();
  run.user = *user;
  auto cpus = intField(j, "cpus", 1, 1, 64);
  if (!cpus) return std::move(cpus).error();
  run.cpus = static_cast<int>(*cpus);
  auto memory = intField(j, "memory_mib", 512, 64, 1 << 20);
  if (!memory) return std::move(memory).error();
  run.memory_mib = static_cast<int>(*memory);
  auto network = stringField(j, "network");
  if (!network) return std::move(network).error();
  if (!network->empty()) {
    if (*network != "user" && *network != "none") return bad("\"network\" must be \"user\" or \"none\"");
    run.network = *network;
  }

  if (j.contains("ports") && !j["ports"].is_null()) {
    const json& ports = j["ports"];
    if (!ports.is_array() || ports.size() > 256)
      return bad("\"ports\" must be an array (at most 256) of -p mappings or port numbers");
    for (const auto& port : ports) {
      if (port.is_number_integer()) {
        int64_t n = port.get<int64_t>();
        if (n < 1 || n > 65535) return bad("\"ports\": " + std::to_string(n) + " is not a port (1-65535)");
        run.publish.push_back(std::to_string(n));
      } else if (port.is_string()) {
        run.publish.push_back(port.get<std::string>());
      } else {
        return bad("\"ports\": each entry is a port number or a mapping \"[HOSTIP:]HOSTPORT:GUESTPORT[/tcp|/udp]\"");
      }
    }
  }

  if (j.contains("volumes") && !j["volumes"].is_null()) {
    const json& volumes = j["volumes"];
    if (!volumes.is_array() || volumes.size() > 64)
      return bad("\"volumes\" must be an array (at most 64) of {\"host\", \"guest\", \"readonly\"}");
    for (const auto& item : volumes) {
      if (!item.is_object())
        return bad("\"volumes\": each entry is {\"host\": DIR, \"guest\": PATH, \"readonly\": BOOL}");
      MICROVM_TRY(onlyKnown(item, {"host", "guest", "readonly"}, "volumes"));
      Volume volume;
      auto host = stringField(item, "host");
      if (!host) return std::move(host).error();
      auto guest = stringField(item, "guest");
      if (!guest) return std::move(guest).error();
      if (host->empty() || (*host)[0] != '/' || guest->empty() || (*guest)[0] != '/') {
        return bad("\"volumes\": \"host\" and \"guest\" must be absolute paths");
      }
      volume.host = *host;
      volume.guest = *guest;
      if (item.contains("readonly")) {
        if (!item["readonly"].is_boolean()) return bad("\"volumes\": \"readonly\" must be true or false");
        volume.readonly = item["readonly"].get<bool>();
      }
      run.volumes.push_back(std::move(volume));
    }
  }

  if (j.contains("egress") && !j["egress"].is_null()) {
    const json& egress = j["egress"];
    if (!egress.is_object())
      return bad("\"egress\" must be {\"allow\": [...], \"allow_cidr\": [...], \"deny\": [...], \"deny_all\": BOOL}");
    MICROVM_TRY(onlyKnown(egress, {"allow", "allow_cidr", "deny", "deny_all"}, "egress"));
    auto allow = stringList(egress, "allow", 1024);
    if (!allow) return std::move(allow).error();
    auto allow_cidr = stringList(egress, "allow_cidr", 1024);
    if (!allow_cidr) return std::move(allow_cidr).error();
    auto deny = stringList(egress, "deny", 1024);
    if (!deny) return std::move(deny).error();
    run.egress_allow = *allow;
    run.egress_allow_cidr = *allow_cidr;
    run.egress_deny = *deny;
    if (egress.contains("deny_all")) {
      if (!egress["deny_all"].is_boolean()) return bad("\"egress\": \"deny_all\" must be true or false");
      run.egress_deny_all = egress["deny_all"].get<bool>();
    }
  }

  if (j.contains("labels") && !j["labels"].is_null()) {
    const json& labels = j["labels"];
    if (!labels.is_object() || labels.size() > 64) return bad("\"labels\" must be an object (at most 64) of strings");
    for (const auto& [key, value] : labels.items()) {
      if (!validLabelKey(key)) return bad("\"labels\": \"" + key + "\" is not a valid key (1-128 of [A-Za-z0-9._/-])");
      if (!value.is_string() || value.get<std::string>().size() > 1024) {
        return bad("\"labels\": the value of " + key + " must be a string of at most 1024 bytes");
      }
      request.labels[key] = value.get<std::string>();
    }
  }
  auto ttl = intField(j, "ttl_seconds", 0, 0, kMaxTtlSeconds);
  if (!ttl) return std::move(ttl).error();
  request.ttl_seconds = *ttl;
  return request;
}

Result<ExecRequest> parseExecRequest(std::string_view body, bool streaming) {
  auto parsed = parseObject(body, "exec");
  if (!parsed) return std::move(parsed).error();
  const json& j = *parsed;
  if (streaming) {
    MICROVM_TRY(onlyKnown(j, {"cmd", "env", "cwd", "user", "timeout_seconds", "tty", "rows", "cols"}, "exec"));
  } else {
    MICROVM_TRY(onlyKnown(j, {"cmd", "env", "cwd", "user", "stdin", "timeout_seconds"}, "exec"));
  }
  ExecRequest request;
  auto command = commandField(j, "cmd");
  if (!command) return std::move(command).error();
  if (command->empty()) return bad("exec: \"cmd\" is required (an array of strings, or a shell command line)");
  request.command = *command;
  auto env = envObject(j);
  if (!env) return std::move(env).error();
  request.env = *env;
  auto cwd = stringField(j, "cwd");
  if (!cwd) return std::move(cwd).error();
  request.cwd = *cwd;
  auto user = stringField(j, "user");
  if (!user) return std::move(user).error();
  request.user = *user;
  auto input = stringField(j, "stdin");
  if (!input) return std::move(input).error();
  auto decoded = base64Decode(*input);
  if (!decoded) return bad("\"stdin\" must be base64: " + decoded.error().message());
  request.stdin_data = *decoded;
  // A stream is often a shell: no timeout unless asked for.
  auto timeout = intField(j, "timeout_seconds", streaming ? 0 : 60, streaming ? 0 : 1, kMaxExecTimeoutSeconds);
  if (!timeout) return std::move(timeout).error();
  request.timeout_seconds = static_cast<int>(*timeout);
  for (const char* key : {"rows", "cols"}) {
    auto size = intField(j, key, 0, 0, 65535);
    if (!size) return std::move(size).error();
  }
  if (j.contains("tty")) {
    if (!j["tty"].is_boolean()) return bad("\"tty\" must be true or false");
    request.tty = j["tty"].get<bool>();
  }
  return request;
}

Result<std::string> parseSnapshotName(std::string_view body) {
  auto parsed = parseObject(body, "snapshot");
  if (!parsed) return std::move(parsed).error();
  MICROVM_TRY(onlyKnown(*parsed, {"name"}, "snapshot"));
  auto name = stringField(*parsed, "name");
  if (!name) return std::move(name).error();
  if (name->empty()) return bad("snapshot: \"name\" is required");
  return name;
}

Result<int> parseForkCount(std::string_view body) {
  auto parsed = parseObject(body, "fork");
  if (!parsed) return std::move(parsed).error();
  MICROVM_TRY(onlyKnown(*parsed, {"count"}, "fork"));
  auto count = intField(*parsed, "count", 1, 1, 64);
  if (!count) return std::move(count).error();
  return static_cast<int>(*count);
}

Result<LabelFilter> parseLabelFilter(std::string_view text) {
  LabelFilter filter;
  size_t eq = text.find('=');
  filter.key = std::string(text.substr(0, eq));
  if (eq != std::string_view::npos) filter.value = std::string(text.substr(eq + 1));
  if (!validLabelKey(filter.key))
    return bad("label filter \"" + std::string(text) + "\": give label=KEY=VALUE or label=KEY");
  return filter;
}

namespace {
constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64Encode(std::string_view data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(data[i])) << 16) | (uint32_t(uint8_t(data[i + 1])) << 8) | uint8_t(data[i + 2]);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  size_t rest = data.size() - i;
  if (rest > 0) {
    uint32_t v = uint32_t(uint8_t(data[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(data[i + 1])) << 8;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

Result<std::string> base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return bad("length is not a multiple of 4");
  std::array<int, 256> value{};
  value.fill(-1);
  for (int k = 0; k < 64; ++k) value[static_cast<unsigned char>(kAlphabet[k])] = k;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int pad = 0;
    for (int k = 0; k < 4; ++k) {
      unsigned char c = static_cast<unsigned char>(text[i + k]);
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        v[k] = 0;
        ++pad;
      } else if (pad > 0 || value[c] < 0) {
        return bad("invalid character at offset " + std::to_string(i + k));
      } else {
        v[k] = value[c];
      }
    }
    uint32_t n = (uint32_t(v[0]) << 18) | (uint32_t(v[1]) << 12) | (uint32_t(v[2]) << 6) | uint32_t(v[3]);
    out += static_cast<char>(n >> 16);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
  }
  return out;
}

bool isUtf8(std::string_view data) {
  size_t i = 0;
  while (i < data.size()) {
    unsigned char c = static_cast<unsigned char>(data[i]);
    size_t extra;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xe0) == 0xc0) {
      extra = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3;
      cp = c & 0x07;
    } else
      return false;
    if (i + extra >= data.size()) return false;
    for (size_t k = 1; k <= extra; ++k) {
      unsigned char next = static_cast<unsigned char>(data[i + k]);
      if ((next & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (next & 0x3f);
    }
    if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += extra + 1;
  }
  return true;
}

Result<std::string> percentDecode(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= text.size()) return bad("bad %-escape in the query");
      auto hex = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;
      };
      int hi = hex(text[i + 1]), lo = hex(text[i + 2]);
      if (hi < 0 || lo < 0) return bad("bad %-escape in the query");
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

Result<std::vector<std::string>> queryValues(std::string_view query, std::string_view key) {
  std::vector<std::string> out;
  while (!query.empty()) {
    size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    size_t eq = part.find('=');
    auto name = percentDecode(part.substr(0, eq));
    if (!name) return std::move(name).error();
    if (*name != key) continue;
    auto value = percentDecode(eq == std::string_view::npos ? std::string_view() : part.substr(eq + 1));
    if (!value) return std::move(value).error();
    out.push_back(*value);
  }
  return out;
}

}  // namespace microvm::daemon
