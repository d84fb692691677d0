// The text forms of RunOptions' fields (include/microvm/options.h).
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <utility>

#include "microvm/options.h"

namespace microvm {

namespace {

// The comma-separated items of `text`, empty ones included ("a,,b" has three).
std::vector<std::string> splitCommas(std::string_view text) {
  std::vector<std::string> items;
  for (size_t start = 0; start <= text.size();) {
    size_t comma = text.find(',', start);
    items.emplace_back(text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    start = comma == std::string_view::npos ? text.size() + 1 : comma + 1;
  }
  return items;
}

size_t leadingDigits(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) ++digits;
  return digits;
}

}  // namespace

Result<Volume> parseVolume(std::string_view text) {
  auto invalid = Error(ErrorCode::kInvalidArgument, "invalid volume \"" + std::string(text) +
                                                        "\" (want HOST:GUEST[:OPTIONS], OPTIONS from ro, rw, uid=N, gid=N)");
  size_t first = text.find(':');
  if (first == std::string_view::npos || first == 0) return invalid;
  Volume volume;
  volume.host = std::string(text.substr(0, first));
  std::string_view rest = text.substr(first + 1);
  size_t second = rest.find(':');
  volume.guest = std::string(rest.substr(0, second));
  if (second != std::string_view::npos) {
    bool mode_given = false;
    for (const auto& option : splitCommas(rest.substr(second + 1))) {
      if (option == "ro" || option == "rw") {
        if (mode_given) return invalid;
        mode_given = true;
        volume.readonly = option == "ro";
      } else if (option.rfind("uid=", 0) == 0 || option.rfind("gid=", 0) == 0) {
        std::string digits = option.substr(4);
        if (digits.empty() || digits.size() > 10 || digits.find_first_not_of("0123456789") != std::string::npos) {
          return invalid;
        }
        unsigned long long id = std::stoull(digits);
        if (id >= 4294967295ull) return invalid;
        auto& field = option[0] == 'u' ? volume.uid : volume.gid;
        if (field) return invalid;
        field = static_cast<uint32_t>(id);
      } else {
        return invalid;
      }
    }
  }
  if (volume.guest.empty()) return invalid;
  return volume;
}

Result<VsockPort> parseVsockPort(std::string_view text) {
  auto invalid = Error(ErrorCode::kInvalidArgument,
                       "invalid vsock mapping \"" + std::string(text) + "\" (want PORT:HOST_SOCKET_PATH[:listen])");
  size_t colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return invalid;
  std::string port_text(text.substr(0, colon));
  if (port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 10) return invalid;
  unsigned long long port = std::stoull(port_text);
  if (port > UINT32_MAX) return invalid;
  VsockPort mapping;
  mapping.port = static_cast<uint32_t>(port);
  std::string_view path = text.substr(colon + 1);
  constexpr std::string_view kListen = ":listen";
  if (path.size() > kListen.size() && path.substr(path.size() - kListen.size()) == kListen) {
    mapping.listen = true;
    path.remove_suffix(kListen.size());
  }
  if (path.empty()) return invalid;
  mapping.host_socket = std::string(path);
  return mapping;
}

Result<int> parseMemoryMib(std::string_view text) {
  auto invalid = Error(ErrorCode::kInvalidArgument, "invalid memory size \"" + std::string(text) +
                                                        "\" (want MiB, or a number with b, k, m or g)");
  if (text.empty()) return invalid;
  size_t digits = leadingDigits(text);
  if (digits == 0 || digits > 15 || text.size() - digits > 1) return invalid;
  unsigned long long value = std::stoull(std::string(text.substr(0, digits)));
  char unit = digits < text.size() ? static_cast<char>(std::tolower(static_cast<unsigned char>(text[digits]))) : 'm';
  unsigned long long bytes = 0;
  switch (unit) {
    case 'b': bytes = value; break;
    case 'k': bytes = value << 10; break;
    case 'm': bytes = value << 20; break;
    case 'g': bytes = value << 30; break;
    default: return invalid;
  }
  if (bytes % (1 << 20) != 0) {
    return Error(ErrorCode::kInvalidArgument, "memory size \"" + std::string(text) + "\" is not a whole number of MiB");
  }
  return static_cast<int>(std::min<unsigned long long>(bytes >> 20, 1u << 30));
}

Result<void> applySecurityOpt(std::string_view text, RunOptions& options) {
  size_t equals = text.find('=');
  std::string_view key = text.substr(0, equals);
  std::string_view value = equals == std::string_view::npos ? "true" : text.substr(equals + 1);
  if (key == "seccomp") {
    options.seccomp = std::string(value);
  } else if (key == "no-new-privileges" && (value == "true" || value == "false")) {
    options.no_new_privs = value == "true";
  } else if (key == "sysctl-hardening" && (value == "true" || value == "false")) {
    options.sysctl_hardening = value == "true";
  } else {
    return Error(ErrorCode::kInvalidArgument, "unknown --security-opt \"" + std::string(text) + "\"");
  }
  return success();
}

Result<void> applyLogOpt(std::string_view text, RunOptions& options) {
  for (const auto& opt : splitCommas(text)) {
    size_t equals = opt.find('=');
    std::string key = opt.substr(0, equals);
    std::string value = equals == std::string::npos ? "" : opt.substr(equals + 1);
    size_t digits = leadingDigits(value);
    if (key == "max-size") {
      char unit = digits < value.size() ? static_cast<char>(std::tolower(static_cast<unsigned char>(value[digits]))) : 'b';
      int shift = unit == 'b' ? 0 : unit == 'k' ? 10 : unit == 'm' ? 20 : unit == 'g' ? 30 : -1;
      if (digits == 0 || digits > 10 || value.size() - digits > 1 || shift < 0) {
        return Error(ErrorCode::kInvalidArgument,
                     "invalid --log-opt max-size \"" + value + "\" (want bytes, or a number with k, m or g)");
      }
      options.log_max_size = std::stoull(value.substr(0, digits)) << shift;
    } else if (key == "max-file") {
      if (digits == 0 || digits != value.size() || digits > 6) {
        return Error(ErrorCode::kInvalidArgument, "invalid --log-opt max-file \"" + value + "\" (want a number)");
      }
      options.log_max_files = std::stoi(value);
    } else {
      return Error(ErrorCode::kInvalidArgument, "unknown --log-opt \"" + opt + "\" (want max-size=SIZE or max-file=N)");
    }
  }
  return success();
}

std::vector<std::string> parseEnvFile(std::string_view content) {
  std::vector<std::string> env;
  while (!content.empty()) {
    size_t newline = content.find('\n');
    std::string_view line = content.substr(0, newline);
    content.remove_prefix(newline == std::string_view::npos ? content.size() : newline + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    size_t start = line.find_first_not_of(' ');
    if (start == std::string_view::npos || line[start] == '#') continue;
    env.emplace_back(line.substr(start));
  }
  return env;
}

Result<std::vector<std::string>> readEnvFiles(const std::vector<std::string>& paths) {
  std::vector<std::string> env;
  for (const auto& path : paths) {
    std::ifstream file(path);
    if (!file) return Error(ErrorCode::kNotFound, "env file " + path + ": cannot be read");
    std::string content{std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>()};
    for (auto& entry : parseEnvFile(content)) env.push_back(std::move(entry));
  }
  return env;
}

Result<int> parseSignal(std::string_view text) {
  static const std::pair<const char*, int> kNames[] = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL}, {"USR1", SIGUSR1},
      {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"WINCH", SIGWINCH}};
  std::string name(text);
  for (auto& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (const auto& [known, number] : kNames) {
    if (name == known) return number;
  }
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos && name.size() < 3) {
    int number = std::stoi(name);
    if (number >= 1 && number < NSIG) return number;
  }
  return Error(ErrorCode::kInvalidArgument, "invalid signal \"" + std::string(text) + "\"");
}

}  // namespace microvm
