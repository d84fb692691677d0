#include "agent/control_protocol.h"

#include <sys/resource.h>

#include <cctype>
#include <charconv>
#include <optional>
#include <utility>

#include "agent/agent_protocol.h"
#include "agent/tlv.h"

namespace microvm::agent {

const char* specTagName(uint16_t tag) {
  switch (static_cast<SpecTag>(tag)) {
    case SpecTag::kArg: return "arg";
    case SpecTag::kEnv: return "env";
    case SpecTag::kWorkdir: return "workdir";
    case SpecTag::kUser: return "user";
    case SpecTag::kHostname: return "hostname";
    case SpecTag::kRootDevice: return "root device";
    case SpecTag::kRootFstype: return "root fstype";
    case SpecTag::kMount: return "mount";
    case SpecTag::kSysctl: return "sysctl";
    case SpecTag::kCapabilities: return "capabilities";
    case SpecTag::kNoNewPrivs: return "no_new_privs";
    case SpecTag::kSeccompDefault: return "seccomp default";
    case SpecTag::kSeccompRule: return "seccomp rule";
    case SpecTag::kSeccompProgram: return "seccomp program";
    case SpecTag::kNetAddress4: return "IPv4 address";
    case SpecTag::kNetGateway4: return "IPv4 gateway";
    case SpecTag::kNetAddress6: return "IPv6 address";
    case SpecTag::kNetGateway6: return "IPv6 gateway";
    case SpecTag::kEtcHosts: return "/etc/hosts";
    case SpecTag::kEtcResolvConf: return "/etc/resolv.conf";
    case SpecTag::kNetMac: return "net mac";
    case SpecTag::kUlimit: return "ulimit";
    case SpecTag::kNetMtu: return "net mtu";
    case SpecTag::kOpenStdin: return "open stdin";
    case SpecTag::kTty: return "tty";
    case SpecTag::kTtySize: return "tty size";
    case SpecTag::kInjected: return "injected file";
  }
  return nullptr;
}

std::string encodeSpec(const WorkloadSpec& spec) {
  std::string out;
  TlvWriter field(out);
  for (const auto& arg : spec.argv) field.bytes(SpecTag::kArg, arg);
  for (const auto& var : spec.env) field.bytes(SpecTag::kEnv, var);
  field.bytes(SpecTag::kWorkdir, spec.workdir);
  field.bytes(SpecTag::kUser, spec.user);
  field.bytes(SpecTag::kHostname, spec.hostname);
  field.bytes(SpecTag::kRootDevice, spec.root_device);
  field.bytes(SpecTag::kRootFstype, spec.root_fstype);
  for (const auto& mount : spec.mounts) {
    std::string value = mount.source;
    for (const std::string* part : {&mount.target, &mount.fstype, &mount.options}) {
      value.push_back('\0');
      value += *part;
    }
    value.push_back('\0');
    value += mount.readonly ? "ro" : "rw";
    field.bytes(SpecTag::kMount, value);
  }
  for (const auto& sysctl : spec.sysctls) field.bytes(SpecTag::kSysctl, sysctl);
  field.u64(SpecTag::kCapabilities, spec.capabilities);
  field.flag(SpecTag::kNoNewPrivs, spec.no_new_privs);
  if (spec.open_stdin) field.flag(SpecTag::kOpenStdin, true);
  if (!spec.seccomp_default.empty()) field.bytes(SpecTag::kSeccompDefault, spec.seccomp_default);
  for (const auto& rule : spec.seccomp_rules) field.bytes(SpecTag::kSeccompRule, rule);
  if (!spec.seccomp_program.empty()) field.bytes(SpecTag::kSeccompProgram, spec.seccomp_program);
  // Sent only when set: an older init skips them as unknown tags anyway.
  if (!spec.net_address4.empty()) field.bytes(SpecTag::kNetAddress4, spec.net_address4);
  if (!spec.net_gateway4.empty()) field.bytes(SpecTag::kNetGateway4, spec.net_gateway4);
  if (!spec.net_address6.empty()) field.bytes(SpecTag::kNetAddress6, spec.net_address6);
  if (!spec.net_gateway6.empty()) field.bytes(SpecTag::kNetGateway6, spec.net_gateway6);
  if (!spec.etc_hosts.empty()) field.bytes(SpecTag::kEtcHosts, spec.etc_hosts);
  if (!spec.etc_resolv_conf.empty()) field.bytes(SpecTag::kEtcResolvConf, spec.etc_resolv_conf);
  if (!spec.net_mac.empty()) field.bytes(SpecTag::kNetMac, spec.net_mac);
  if (spec.net_mtu != 0) field.u32(SpecTag::kNetMtu, spec.net_mtu);
  for (const auto& limit : spec.ulimits) field.bytes(SpecTag::kUlimit, limit);
  if (spec.tty) {
    field.flag(SpecTag::kTty, true);
    field.bytes(SpecTag::kTtySize, encodeWindowSize({spec.tty_rows, spec.tty_cols}));
  }
  for (const auto& file : spec.injected) {
    std::string value = encodeU32(file.mode) + encodeU32(file.uid) + encodeU32(file.gid);
    value.push_back(file.directory ? 1 : 0);
    value += file.path;
    value.push_back('\0');
    value += file.content;
    field.bytes(SpecTag::kInjected, value);
  }
  return out;
}

Result<InjectedFile> decodeInjected(std::string_view value) {
  constexpr size_t kFixed = 13;  // mode, uid, gid, directory
  if (value.size() < kFixed) return Error(ErrorCode::kProtocol, "injected file: shorter than its fixed fields");
  InjectedFile file;
  file.mode = *decodeU32(value.substr(0, 4));  // four bytes each: the size was checked
  file.uid = *decodeU32(value.substr(4, 4));
  file.gid = *decodeU32(value.substr(8, 4));
  unsigned char directory = static_cast<unsigned char>(value[12]);
  if (directory > 1) return Error(ErrorCode::kProtocol, "injected file: the directory byte is not 0 or 1");
  std::string_view rest = value.substr(kFixed);
  size_t nul = rest.find('\0');
  if (nul == std::string_view::npos) return Error(ErrorCode::kProtocol, "injected file: no NUL after the path");
  file.directory = directory == 1;
  file.path = std::string(rest.substr(0, nul));
  file.content = std::string(rest.substr(nul + 1));
  return file;
}

Result<MountSpec> decodeMount(std::string_view value) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t nul; (nul = value.find('\0', start)) != std::string_view::npos; start = nul + 1) {
    parts.emplace_back(value.substr(start, nul - start));
  }
  parts.emplace_back(value.substr(start));
  if (parts.size() != 5) {
    return Error(ErrorCode::kProtocol,
                 "mount: 5 NUL-separated parts expected, got " + std::to_string(parts.size()));
  }
  if (parts[4] != "ro" && parts[4] != "rw") {
    return Error(ErrorCode::kProtocol, "mount: the last part must be \"ro\" or \"rw\", not \"" + parts[4] + "\"");
  }
  return MountSpec{parts[0], parts[1], parts[2], parts[3], parts[4] == "ro"};
}

namespace {

// Applies one field to the spec; unknown tags are skipped.
Result<void> applySpecField(const TlvReader& reader, const TlvField& field, WorkloadSpec& spec) {
  std::string value(field.value);
  switch (static_cast<SpecTag>(field.tag)) {
    case SpecTag::kArg: spec.argv.push_back(std::move(value)); break;
    case SpecTag::kEnv: spec.env.push_back(std::move(value)); break;
    case SpecTag::kWorkdir: spec.workdir = std::move(value); break;
    case SpecTag::kUser: spec.user = std::move(value); break;
    case SpecTag::kHostname: spec.hostname = std::move(value); break;
    case SpecTag::kRootDevice: spec.root_device = std::move(value); break;
    case SpecTag::kRootFstype: spec.root_fstype = std::move(value); break;
    case SpecTag::kMount: {
      auto mount = decodeMount(value);
      if (!mount) return reader.fieldError(field, mount.error().message());
      spec.mounts.push_back(std::move(*mount));
      break;
    }
    case SpecTag::kSysctl: spec.sysctls.push_back(std::move(value)); break;
    case SpecTag::kCapabilities: {
      auto capabilities = reader.u64(field);
      if (!capabilities) return capabilities.error();
      spec.capabilities = *capabilities;
      break;
    }
    case SpecTag::kNoNewPrivs: {
      auto flag = reader.flag(field);
      if (!flag) return flag.error();
      spec.no_new_privs = *flag;
      break;
    }
    case SpecTag::kOpenStdin: {
      auto flag = reader.flag(field);
      if (!flag) return flag.error();
      spec.open_stdin = *flag;
      break;
    }
    case SpecTag::kSeccompDefault: spec.seccomp_default = std::move(value); break;
    case SpecTag::kSeccompRule: spec.seccomp_rules.push_back(std::move(value)); break;
    case SpecTag::kSeccompProgram:
      if (value.empty() || value.size() % kSeccompInstructionBytes != 0 ||
          value.size() > kMaxSeccompProgramInstructions * kSeccompInstructionBytes) {
        return reader.fieldError(field, "not a seccomp program of 1 to " +
                                            std::to_string(kMaxSeccompProgramInstructions) + " instructions (" +
                                            std::to_string(value.size()) + " bytes)");
      }
      spec.seccomp_program = std::move(value);
      break;
    case SpecTag::kNetAddress4: spec.net_address4 = std::move(value); break;
    case SpecTag::kNetGateway4: spec.net_gateway4 = std::move(value); break;
    case SpecTag::kNetAddress6: spec.net_address6 = std::move(value); break;
    case SpecTag::kNetGateway6: spec.net_gateway6 = std::move(value); break;
    case SpecTag::kEtcHosts: spec.etc_hosts = std::move(value); break;
    case SpecTag::kEtcResolvConf: spec.etc_resolv_conf = std::move(value); break;
    case SpecTag::kNetMac: spec.net_mac = std::move(value); break;
    case SpecTag::kUlimit: spec.ulimits.push_back(std::move(value)); break;
    case SpecTag::kNetMtu: {
      auto mtu = reader.u32(field);
      if (!mtu) return mtu.error();
      spec.net_mtu = *mtu;
      break;
    }
    case SpecTag::kTty: {
      auto flag = reader.flag(field);
      if (!flag) return flag.error();
      spec.tty = *flag;
      break;
    }
    case SpecTag::kTtySize: {
      auto size = decodeWindowSize(value);
      if (!size) return reader.fieldError(field, size.error().message());
      spec.tty_rows = size->rows;
      spec.tty_cols = size->cols;
      break;
    }
    case SpecTag::kInjected: {
      auto file = decodeInjected(value);
      if (!file) return reader.fieldError(field, file.error().message());
      if (spec.injected.size() >= kMaxSpecInjectedFiles) {
        return reader.fieldError(field, "more than " + std::to_string(kMaxSpecInjectedFiles) + " injected files");
      }
      spec.injected.push_back(std::move(*file));
      break;
    }
    default: break;
  }
  return success();
}

}  // namespace

Result<WorkloadSpec> decodeSpec(std::string_view payload) {
  WorkloadSpec spec;
  TlvReader reader(payload, "workload spec", specTagName);
  while (!reader.done()) {
    auto field = reader.next();
    if (!field) return std::move(field).error();
    MICROVM_TRY(applySpecField(reader, *field, spec));
  }
  if (spec.argv.empty()) return reader.error("no arg field: argv is empty");
  size_t injected_bytes = 0;
  for (const auto& file : spec.injected) injected_bytes += file.content.size();
  if (injected_bytes > kMaxSpecInjectedBytes) {
    return reader.error("injected files hold more than " + std::to_string(kMaxSpecInjectedBytes) + " bytes");
  }
  return spec;
}

namespace {

struct UlimitName {
  const char* name;
  int resource;
};
constexpr UlimitName kUlimitNames[] = {
    {"core", RLIMIT_CORE},         {"cpu", RLIMIT_CPU},         {"data", RLIMIT_DATA},
    {"fsize", RLIMIT_FSIZE},       {"locks", RLIMIT_LOCKS},     {"memlock", RLIMIT_MEMLOCK},
    {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},       {"nofile", RLIMIT_NOFILE},
    {"nproc", RLIMIT_NPROC},       {"rss", RLIMIT_RSS},         {"rtprio", RLIMIT_RTPRIO},
    {"rttime", RLIMIT_RTTIME},     {"sigpending", RLIMIT_SIGPENDING}, {"stack", RLIMIT_STACK},
    {"as", RLIMIT_AS},
};

std::optional<uint64_t> ulimitValue(std::string_view text) {
  if (text == "unlimited" || text == "-1") return uint64_t{RLIM_INFINITY};
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::string ulimitText(uint64_t value) { return value == RLIM_INFINITY ? "unlimited" : std::to_string(value); }

}  // namespace

Result<Ulimit> parseUlimit(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "ulimit \"" + std::string(text.substr(0, 64)) + "\": " + why);
  };
  size_t eq = text.find('=');
  if (eq == std::string_view::npos) return bad("want NAME=SOFT[:HARD], e.g. nofile=1024:2048");
  std::string name(text.substr(0, eq));
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (name.rfind("rlimit_", 0) == 0) name = name.substr(7);
  Ulimit limit;
  bool known = false;
  for (const auto& entry : kUlimitNames) {
    if (name == entry.name) {
      limit.resource = entry.resource;
      known = true;
    }
  }
  if (!known) return bad("unknown limit \"" + name + "\" (core, cpu, data, fsize, locks, memlock, msgqueue, nice, "
                         "nofile, nproc, rss, rtprio, rttime, sigpending, stack, as)");
  limit.name = name;
  std::string_view values = text.substr(eq + 1);
  size_t colon = values.find(':');
  auto soft = ulimitValue(values.substr(0, colon));
  auto hard = colon == std::string_view::npos ? soft : ulimitValue(values.substr(colon + 1));
  if (!soft || !hard) return bad("limits are numbers or \"unlimited\"");
  if (*soft > *hard) return bad("the soft limit is above the hard one");
  limit.soft = *soft;
  limit.hard = *hard;
  return limit;
}

std::string formatUlimit(const Ulimit& limit) {
  return limit.name + "=" + ulimitText(limit.soft) + ":" + ulimitText(limit.hard);
}

std::string encodeRefresh(const ControlRefresh& refresh) {
  std::string entropy = refresh.entropy.substr(0, kMaxControlRefreshEntropy);
  std::string out(10, '\0');
  uint64_t ns = static_cast<uint64_t>(refresh.realtime_ns);
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((ns >> (8 * i)) & 0xff);
  out[8] = static_cast<char>(entropy.size() & 0xff);
  out[9] = static_cast<char>(entropy.size() >> 8);
  out += entropy;
  out += refresh.hostname.substr(0, kMaxControlRefreshHostname);
  return out;
}

Result<ControlRefresh> decodeRefresh(std::string_view payload) {
  if (payload.size() < 10) return Error(ErrorCode::kProtocol, "refresh frame: shorter than its header");
  uint64_t ns = 0;
  for (int i = 0; i < 8; ++i) ns |= uint64_t{static_cast<unsigned char>(payload[i])} << (8 * i);
  if (ns > static_cast<uint64_t>(INT64_MAX)) return Error(ErrorCode::kProtocol, "refresh frame: clock out of range");
  size_t entropy = static_cast<unsigned char>(payload[8]) | (size_t{static_cast<unsigned char>(payload[9])} << 8);
  if (entropy > kMaxControlRefreshEntropy) {
    return Error(ErrorCode::kProtocol, "refresh frame: more than " + std::to_string(kMaxControlRefreshEntropy) +
                                           " bytes of entropy");
  }
  if (payload.size() < 10 + entropy) return Error(ErrorCode::kProtocol, "refresh frame: entropy cut short");
  std::string_view hostname = payload.substr(10 + entropy);
  if (hostname.size() > kMaxControlRefreshHostname || hostname.find('\0') != std::string_view::npos) {
    return Error(ErrorCode::kProtocol, "refresh frame: hostname longer than " +
                                           std::to_string(kMaxControlRefreshHostname) + " bytes or with a NUL");
  }
  ControlRefresh refresh;
  refresh.realtime_ns = static_cast<int64_t>(ns);
  refresh.entropy = std::string(payload.substr(10, entropy));
  refresh.hostname = std::string(hostname);
  return refresh;
}

std::string encodeClock(const ControlClock& clock) {
  std::string out;
  putLe64(out, static_cast<uint64_t>(clock.realtime_ns));
  putLe64(out, clock.echo_ns);
  return out;
}

Result<ControlClock> decodeClock(std::string_view payload) {
  if (payload.size() != 16) return Error(ErrorCode::kProtocol, "clock frame: not 16 bytes");
  uint64_t ns = getLe64(payload.data());
  if (ns > static_cast<uint64_t>(INT64_MAX)) return Error(ErrorCode::kProtocol, "clock frame: clock out of range");
  return ControlClock{static_cast<int64_t>(ns), getLe64(payload.data() + 8)};
}

int64_t clockFromAnswer(const ControlClock& answer, uint64_t now_ns) {
  constexpr uint64_t kLongestRoundTripNs = 1'000'000'000;
  if (answer.echo_ns > now_ns || now_ns - answer.echo_ns > kLongestRoundTripNs) return answer.realtime_ns;
  auto half = static_cast<int64_t>((now_ns - answer.echo_ns) / 2);
  if (answer.realtime_ns > INT64_MAX - half) return answer.realtime_ns;
  return answer.realtime_ns + half;
}

}  // namespace microvm::agent
