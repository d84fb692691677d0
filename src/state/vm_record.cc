#include "state/vm_record.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>

#include <algorithm>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/paths.h"
#include "base/process.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

const char* toString(VmStatus status) {
  switch (status) {
    case VmStatus::kCreated: return "created";
    case VmStatus::kRunning: return "running";
    case VmStatus::kPaused: return "paused";
    case VmStatus::kExited: return "exited";
    case VmStatus::kSuspended: return "suspended";
  }
  return "unknown";
}

namespace {

Result<VmStatus> statusFromString(const std::string& text) {
  for (auto status :
       {VmStatus::kCreated, VmStatus::kRunning, VmStatus::kPaused, VmStatus::kExited, VmStatus::kSuspended}) {
    if (text == toString(status)) return status;
  }
  return Error(ErrorCode::kProtocol, "unknown VM status \"" + text + "\"");
}

// Parses a JSON record, turning a malformed file into an Error (never a throw).
// With max_bytes, the file is one a less trusted process writes (see
// readUntrustedFile).
template <typename T, typename Decode>
Result<T> loadJson(const fs::path& path, Decode decode, size_t max_bytes = 0) {
  auto text = max_bytes != 0 ? readUntrustedFile(path, max_bytes) : readFile(path);
  if (!text) return std::move(text).error();
  try {
    return decode(json::parse(*text));
  } catch (const json::exception& e) {
    return Error(ErrorCode::kProtocol, "parse " + path.string() + ": " + e.what());
  }
}

std::string toHex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char byte : bytes) {
    out.push_back(kDigits[byte >> 4]);
    out.push_back(kDigits[byte & 0xf]);
  }
  return out;
}

std::string fromHex(std::string_view hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    throw json::other_error::create(501, "content is not lower-case hex", nullptr);
  };
  if (hex.size() % 2 != 0) throw json::other_error::create(501, "content has an odd number of hex digits", nullptr);
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2) out.push_back(static_cast<char>(digit(hex[i]) * 16 + digit(hex[i + 1])));
  return out;
}

json injectedJson(const std::vector<VmSpec::InjectedFile>& files) {
  json list = json::array();
  for (const auto& file : files) {
    list.push_back({{"path", file.path}, {"directory", file.directory}, {"content_hex", toHex(file.content)},
                    {"mode", file.mode}, {"uid", file.uid}, {"gid", file.gid}});
  }
  return list;
}

json sharesJson(const std::vector<VmSpec::Share>& shares) {
  json list = json::array();
  for (const auto& share : shares) {
    json entry = {{"host", share.host}, {"guest", share.guest}, {"readonly", share.readonly}, {"tag", share.tag}};
    if (share.uid) entry["uid"] = *share.uid;
    if (share.gid) entry["gid"] = *share.gid;
    list.push_back(std::move(entry));
  }
  return list;
}

json vsockPortsJson(const std::vector<VmSpec::VsockPort>& ports) {
  json list = json::array();
  for (const auto& port : ports) list.push_back({{"port", port.port}, {"path", port.path}, {"listen", port.listen}});
  return list;
}

json addressJson(const net::IpAddress& address) {
  return std::vector<uint8_t>(address.bytes.begin(), address.bytes.begin() + (address.v4 ? 4 : 16));
}

net::IpAddress addressFromJson(const json& j) {
  auto bytes = j.get<std::vector<uint8_t>>();
  if (bytes.size() != 4 && bytes.size() != 16) throw json::other_error::create(501, "an address has 4 or 16 bytes", &j);
  net::IpAddress address;
  address.v4 = bytes.size() == 4;
  std::copy(bytes.begin(), bytes.end(), address.bytes.begin());
  return address;
}

json rulesJson(const std::vector<net::EgressRule>& rules) {
  json list = json::array();
  for (const auto& rule : rules) {
    list.push_back({{"kind", static_cast<int>(rule.kind)},
                    {"host", rule.host},
                    {"network", addressJson(rule.network)},
                    {"prefix_bits", rule.prefix_bits},
                    {"port", rule.port},
                    {"protocol", static_cast<int>(rule.protocol)},
                    {"text", rule.text}});
  }
  return list;
}

std::vector<net::EgressRule> rulesFromJson(const json& list) {
  std::vector<net::EgressRule> rules;
  for (const auto& entry : list) {
    net::EgressRule rule;
    int kind = entry.at("kind");
    int protocol = entry.at("protocol");
    if (kind < 0 || kind > 2 || protocol < 0 || protocol > 2) {
      throw json::other_error::create(501, "unknown egress rule kind or protocol", &entry);
    }
    rule.kind = static_cast<net::EgressRule::Kind>(kind);
    rule.protocol = static_cast<net::RuleProtocol>(protocol);
    entry.at("host").get_to(rule.host);
    rule.network = addressFromJson(entry.at("network"));
    entry.at("prefix_bits").get_to(rule.prefix_bits);
    entry.at("port").get_to(rule.port);
    entry.at("text").get_to(rule.text);
    rules.push_back(std::move(rule));
  }
  return rules;
}

json networkPlanJson(const net::NetworkPlan& network) {
  json ports = json::array();
  for (const auto& port : network.ports) {
    ports.push_back({{"host_ip", port.host_ip},
                     {"host_port", port.host_port},
                     {"guest_port", port.guest_port},
                     {"udp", port.transport == net::Transport::kUdp}});
  }
  json dns = json::array();
  for (const auto& upstream : network.dns) dns.push_back({{"address", addressJson(upstream.address)}, {"port", upstream.port}});
  return {{"ports", ports},
          {"dns", dns},
          {"egress_active", network.egress.active},
          {"egress_rules", rulesJson(network.egress.rules)},
          {"egress_deny_rules", rulesJson(network.egress.deny_rules)},
          {"egress_default_allow", network.egress.default_allow}};
}

net::NetworkPlan networkPlanFromJson(const json& j) {
  net::NetworkPlan network;
  for (const auto& port : j.value("ports", json::array())) {
    network.ports.push_back({port.at("host_ip"), port.at("host_port"), port.at("guest_port"),
                             port.at("udp").get<bool>() ? net::Transport::kUdp : net::Transport::kTcp});
  }
  for (const auto& upstream : j.value("dns", json::array())) {
    network.dns.push_back({addressFromJson(upstream.at("address")), upstream.at("port")});
  }
  network.egress.active = j.value("egress_active", false);
  network.egress.rules = rulesFromJson(j.value("egress_rules", json::array()));
  network.egress.deny_rules = rulesFromJson(j.value("egress_deny_rules", json::array()));
  network.egress.default_allow = j.value("egress_default_allow", false);
  return network;
}

}  // namespace

std::string shareTag(size_t index) { return "vol" + std::to_string(index); }

Result<void> saveSpec(const fs::path& vm_dir, const VmSpec& spec) {
  json j = {
      {"id", spec.id},
      {"name", spec.name},
      {"created_at", spec.created_at},
      {"machine",
       {{"qemu", spec.qemu},
        {"accel", spec.accel},
        {"tsc_khz", spec.tsc_khz},
        {"cpus", spec.cpus},
        {"memory_mib", spec.memory_mib},
        {"kernel", spec.kernel},
        {"initramfs", spec.initramfs},
        {"root_disk", spec.root_disk},
        {"base_disk", spec.base_disk},
        {"disk_layers", spec.disk_layers},
        {"runtime_dir", spec.runtime_dir},
        {"restore_from", spec.restore_from},
        {"template",
         {{"dir", spec.template_dir},
          {"capture", spec.template_capture},
          {"note", spec.template_note},
          {"share_memory", spec.template_share_memory}}}}},
      {"workload",
       {{"image", spec.image},
        {"exposed_ports", spec.exposed_ports},
        {"argv", spec.argv},
        {"env", spec.env},
        {"workdir", spec.workdir},
        {"user", spec.user},
        {"hostname", spec.hostname},
        {"open_stdin", spec.open_stdin},
        {"tty", spec.tty},
        {"tty_rows", spec.tty_rows},
        {"tty_cols", spec.tty_cols}}},
      {"shares", sharesJson(spec.shares)},
      {"injected", injectedJson(spec.injected)},
      {"tmpfs", spec.tmpfs},
      {"vsock", spec.vsock},
      {"vsock_ports", vsockPortsJson(spec.vsock_ports)},
      {"confinement",
       {{"capabilities", spec.capabilities},
        {"no_new_privs", spec.no_new_privs},
        {"seccomp_default", spec.seccomp_default},
        {"seccomp_rules", spec.seccomp_rules},
        {"sysctls", spec.sysctls},
        {"ulimits", spec.ulimits}}},
      {"network",
       {{"mode", spec.network},
        {"ports", spec.ports},
        {"dns", spec.dns},
        {"extra_hosts", spec.extra_hosts},
        {"egress_allow", spec.egress_allow},
        {"egress_allow_cidr", spec.egress_allow_cidr},
        {"egress_deny", spec.egress_deny},
        {"egress_deny_all", spec.egress_deny_all},
        {"egress_default_allow", spec.egress_default_allow},
        {"egress_log", spec.egress_log},
        {"parsed", networkPlanJson(spec.network_plan)}}},
      {"timings_ms", spec.timings_ms},
      {"remove_on_exit", spec.remove_on_exit},
      {"stop_timeout_seconds", spec.stop_timeout_seconds},
      {"logging", {{"max_size", spec.log_max_size}, {"max_files", spec.log_max_files}}},
  };
  return writeFileAtomic(vm_dir / VmFiles::kSpec, j.dump(2) + "\n");
}

Result<VmSpec> loadSpec(const fs::path& vm_dir) {
  return loadJson<VmSpec>(vm_dir / VmFiles::kSpec, [](const json& j) {
    VmSpec spec;
    j.at("id").get_to(spec.id);
    j.at("name").get_to(spec.name);
    j.at("created_at").get_to(spec.created_at);
    const json& machine = j.at("machine");
    machine.at("qemu").get_to(spec.qemu);
    machine.at("accel").get_to(spec.accel);
    machine.at("tsc_khz").get_to(spec.tsc_khz);
    machine.at("cpus").get_to(spec.cpus);
    machine.at("memory_mib").get_to(spec.memory_mib);
    machine.at("kernel").get_to(spec.kernel);
    machine.at("initramfs").get_to(spec.initramfs);
    machine.at("root_disk").get_to(spec.root_disk);
    machine.at("base_disk").get_to(spec.base_disk);
    spec.disk_layers = machine.value("disk_layers", std::vector<std::string>());
    machine.at("runtime_dir").get_to(spec.runtime_dir);
    spec.restore_from = machine.value("restore_from", "");
    if (auto boot_template = machine.find("template"); boot_template != machine.end() && boot_template->is_object()) {
      spec.template_dir = boot_template->value("dir", "");
      spec.template_capture = boot_template->value("capture", "");
      spec.template_note = boot_template->value("note", "");
      spec.template_share_memory = boot_template->value("share_memory", false);
    }
    const json& workload = j.at("workload");
    spec.image = workload.value("image", "");
    spec.exposed_ports = workload.value("exposed_ports", std::vector<std::string>());
    workload.at("argv").get_to(spec.argv);
    workload.at("env").get_to(spec.env);
    workload.at("workdir").get_to(spec.workdir);
    workload.at("user").get_to(spec.user);
    workload.at("hostname").get_to(spec.hostname);
    spec.open_stdin = workload.value("open_stdin", false);
    spec.tty = workload.value("tty", false);
    spec.tty_rows = workload.value("tty_rows", uint16_t{0});
    spec.tty_cols = workload.value("tty_cols", uint16_t{0});
    for (const auto& share : j.value("shares", json::array())) {
      VmSpec::Share entry{share.at("host"), share.at("guest"), share.at("readonly"), {}, {}, {}};
      // A spec.json from before tags were recorded: the N-th share had "volN".
      entry.tag = share.value("tag", shareTag(spec.shares.size()));
      if (share.contains("uid")) entry.uid = share.at("uid").get<uint32_t>();
      if (share.contains("gid")) entry.gid = share.at("gid").get<uint32_t>();
      spec.shares.push_back(std::move(entry));
    }
    for (const auto& file : j.value("injected", json::array())) {
      spec.injected.push_back({file.at("path"), file.at("directory"), fromHex(file.at("content_hex").get<std::string>()),
                               file.at("mode"), file.at("uid"), file.at("gid")});
    }
    spec.tmpfs = j.value("tmpfs", std::vector<std::pair<std::string, std::string>>());
    spec.vsock = j.value("vsock", true);
    for (const auto& port : j.value("vsock_ports", json::array())) {
      spec.vsock_ports.push_back({port.at("port"), port.at("path"), port.value("listen", false)});
    }
    const json confinement = j.value("confinement", json::object());
    spec.capabilities = confinement.value("capabilities", uint64_t{0});
    spec.no_new_privs = confinement.value("no_new_privs", true);
    spec.seccomp_default = confinement.value("seccomp_default", "");
    spec.seccomp_rules = confinement.value("seccomp_rules", std::vector<std::string>());
    spec.sysctls = confinement.value("sysctls", std::vector<std::string>());
    spec.ulimits = confinement.value("ulimits", std::vector<std::string>());
    // Absent in records made before networking: the default user network.
    const json network = j.value("network", json::object());
    spec.network = network.value("mode", "user");
    spec.ports = network.value("ports", std::vector<std::string>());
    spec.dns = network.value("dns", std::vector<std::string>());
    spec.extra_hosts = network.value("extra_hosts", std::vector<std::string>());
    spec.egress_allow = network.value("egress_allow", std::vector<std::string>());
    spec.egress_allow_cidr = network.value("egress_allow_cidr", std::vector<std::string>());
    spec.egress_deny = network.value("egress_deny", std::vector<std::string>());
    spec.egress_deny_all = network.value("egress_deny_all", false);
    spec.egress_default_allow = network.value("egress_default_allow", false);
    spec.timings_ms = j.value("timings_ms", std::map<std::string, double>());
    spec.egress_log = network.value("egress_log", false);
    spec.network_plan = networkPlanFromJson(network.value("parsed", json::object()));
    spec.network_plan.egress_log = spec.egress_log;
    spec.network_plan_recorded = network.contains("parsed");
    j.at("remove_on_exit").get_to(spec.remove_on_exit);
    j.at("stop_timeout_seconds").get_to(spec.stop_timeout_seconds);
    // Absent in records made before logs rotated: the defaults.
    const json logging = j.value("logging", json::object());
    spec.log_max_size = logging.value("max_size", VmSpec{}.log_max_size);
    spec.log_max_files = logging.value("max_files", VmSpec{}.log_max_files);
    return spec;
  });
}

Result<void> saveState(const fs::path& vm_dir, const VmState& state) {
  json j = {
      {"status", toString(state.status)},
      {"runner_pid", state.runner_pid},
      {"runner_start_time", state.runner_start_time},
      {"qemu_pid", state.qemu_pid},
      {"qemu_start_time", state.qemu_start_time},
      {"qemu_uid", state.qemu_uid ? json(*state.qemu_uid) : json(nullptr)},
      {"qemu_gid", state.qemu_gid ? json(*state.qemu_gid) : json(nullptr)},
      {"runner_uid", state.runner_uid ? json(*state.runner_uid) : json(nullptr)},
      {"started_at", state.started_at},
      {"finished_at", state.finished_at},
      {"exit_code", state.exit_code ? json(*state.exit_code) : json(nullptr)},
      {"error", state.error},
      {"ports", state.ports},
      {"net_counters", state.net_counters},
      {"timings_ms", state.timings_ms},
  };
  return writeFileAtomic(vm_dir / VmFiles::kState, j.dump(2) + "\n");
}

// The runner writes state.json under its own uid when microvm runs as root,
// and root reads it: a bounded read of a regular file. What the runner
// writes stays far below this.
constexpr size_t kMaxStateBytes = 1 << 20;

Result<VmState> loadState(const fs::path& vm_dir) {
  return loadJson<VmState>(vm_dir / VmFiles::kState, [](const json& j) -> Result<VmState> {
    VmState state;
    auto status = statusFromString(j.at("status").get<std::string>());
    if (!status) return std::move(status).error();
    state.status = *status;
    j.at("runner_pid").get_to(state.runner_pid);
    j.at("runner_start_time").get_to(state.runner_start_time);
    j.at("qemu_pid").get_to(state.qemu_pid);
    state.qemu_start_time = j.value("qemu_start_time", 0ull);
    if (j.contains("qemu_uid") && j.at("qemu_uid").is_number_unsigned()) state.qemu_uid = j.at("qemu_uid").get<uint32_t>();
    if (j.contains("qemu_gid") && j.at("qemu_gid").is_number_unsigned()) state.qemu_gid = j.at("qemu_gid").get<uint32_t>();
    j.at("started_at").get_to(state.started_at);
    j.at("finished_at").get_to(state.finished_at);
    if (!j.at("exit_code").is_null()) state.exit_code = j.at("exit_code").get<int>();
    j.at("error").get_to(state.error);
    state.ports = j.value("ports", std::vector<std::string>());
    state.net_counters = j.value("net_counters", std::map<std::string, uint64_t>());
    state.timings_ms = j.value("timings_ms", std::map<std::string, double>());
    if (j.contains("runner_uid") && j.at("runner_uid").is_number_unsigned()) {
      state.runner_uid = j.at("runner_uid").get<uint32_t>();
    }
    return state;
  }, kMaxStateBytes);
}

Result<StateLock> StateLock::acquire(const fs::path& vm_dir) {
  fs::path path = vm_dir / VmFiles::kStateLock;
  // O_NOFOLLOW: the VM's directory may be writable by its runner's id.
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Error::fromErrno("lock " + path.string());
  }
  return StateLock(std::move(fd));
}

bool runnerAlive(const VmState& state) {
  if (state.runner_pid <= 0 || ::kill(state.runner_pid, 0) != 0) return false;
  auto start_time = processStartTime(state.runner_pid);
  if (!start_time || *start_time != state.runner_start_time) return false;
  // A zombie has exited; only its parent has not reaped it yet.
  auto stat = readFile("/proc/" + std::to_string(state.runner_pid) + "/stat");
  size_t close = stat ? stat->rfind(')') : std::string::npos;
  return close != std::string::npos && close + 2 < stat->size() && (*stat)[close + 2] != 'Z';
}

}  // namespace microvm
