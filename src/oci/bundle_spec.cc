// config.json → RunOptions (bundle_spec.h). Every field is looked at by name:
// an unknown one is an error, so a spec this runtime does not understand is
// never half-applied.
#include "oci/bundle_spec.h"

#include <sys/stat.h>

#include <algorithm>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

namespace microvm::oci {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int kMaxDepth = 32;
constexpr size_t kMaxList = 4096;
constexpr size_t kMaxString = 64 << 10;

// Docker's default capabilities: RunOptions' cap_add/cap_drop are relative to them.
constexpr const char* kDefaultCaps[] = {"CHOWN",  "DAC_OVERRIDE", "FSETID", "FOWNER",           "MKNOD",
                                        "NET_RAW", "SETGID",      "SETUID", "SETFCAP",          "SETPCAP",
                                        "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"};

Error invalid(const std::string& field, const std::string& why) {
  return Error(ErrorCode::kInvalidArgument, "config.json: " + field + ": " + why);
}

class Planner {
 public:
  explicit Planner(fs::path bundle) : bundle_(std::move(bundle)) {}

  Result<BundlePlan> plan(const json& spec);

 private:
  // A field the VM cannot honour: an error, unless org.microvm.ignore names it.
  Result<void> refuse(const std::string& field, const std::string& why) {
    if (ignore_all_ || ignore_.count(field)) {
      plan_.ignored.push_back(field);
      return success();
    }
    return Error(ErrorCode::kUnsupported, "config.json: " + field + " " + why +
                                              " (list it in the org.microvm.ignore annotation to run without it)");
  }
  // A field accepted and not applied: the VM boundary covers what it asks.
  void notApplied(const std::string& field) { plan_.ignored.push_back(field); }

  Result<void> readAnnotations(const json& spec);
  Result<void> readProcess(const json& process);
  Result<void> readUser(const json& user);
  Result<void> readCapabilities(const json& caps);
  Result<void> readRlimits(const json& rlimits);
  Result<void> readRoot(const json& root);
  Result<void> readMounts(const json& mounts);
  Result<void> readMount(const json& mount, size_t index);
  Result<void> readLinux(const json& linux);
  Result<void> readResources(const json& resources);
  Result<void> readHooks(const json& hooks);
  Result<void> applyOverrides();

  fs::path bundle_;
  BundlePlan plan_;
  std::set<std::string> ignore_;
  bool ignore_all_ = false;
  bool has_network_namespace_ = false;
};

Result<std::string> getString(const json& value, const std::string& field) {
  if (!value.is_string()) return invalid(field, "must be a string");
  const auto& text = value.get_ref<const std::string&>();
  if (text.size() > kMaxString) return invalid(field, "longer than 64 KiB");
  if (text.find('\0') != std::string::npos) return invalid(field, "holds a NUL byte");
  return text;
}

Result<std::vector<std::string>> getStrings(const json& value, const std::string& field) {
  if (!value.is_array()) return invalid(field, "must be an array of strings");
  if (value.size() > kMaxList) return invalid(field, "has more than 4096 entries");
  std::vector<std::string> out;
  for (size_t i = 0; i < value.size(); ++i) {
    auto text = getString(value[i], field + "[" + std::to_string(i) + "]");
    if (!text) return std::move(text).error();
    out.push_back(std::move(*text));
  }
  return out;
}

Result<int64_t> getInteger(const json& value, const std::string& field) {
  if (!value.is_number_integer()) return invalid(field, "must be an integer");
  if (value.is_number_unsigned() && value.get<uint64_t>() > uint64_t{INT64_MAX}) return invalid(field, "too large");
  return value.get<int64_t>();
}

bool isEmptyValue(const json& value) {
  return value.is_null() || ((value.is_array() || value.is_object() || value.is_string()) && value.empty());
}

Result<void> requireObject(const json& value, const std::string& field) {
  if (!value.is_object()) return invalid(field, "must be an object");
  return success();
}

Result<void> checkGuestPath(const std::string& path, const std::string& field) {
  if (path.empty() || path[0] != '/') return invalid(field, "must be an absolute path");
  for (const auto& part : fs::path(path)) {
    if (part == "..") return invalid(field, "must not contain ..");
  }
  return success();
}

Result<void> Planner::readAnnotations(const json& spec) {
  if (!spec.contains("annotations")) return success();
  const json& annotations = spec["annotations"];
  MICROVM_TRY(requireObject(annotations, "annotations"));
  if (annotations.size() > kMaxList) return invalid("annotations", "has more than 4096 entries");
  for (const auto& [key, value] : annotations.items()) {
    auto text = getString(value, "annotations." + key);
    if (!text) return std::move(text).error();
    plan_.annotations[key] = *text;
  }
  auto ignore = plan_.annotations.find(kIgnoreAnnotation);
  if (ignore != plan_.annotations.end()) {
    std::string list = ignore->second;
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      std::string item = list.substr(start, comma - start);
      item.erase(0, item.find_first_not_of(" \t"));
      item.erase(item.find_last_not_of(" \t") + 1);
      if (item == "*") ignore_all_ = true;
      if (!item.empty()) ignore_.insert(item);
      start = comma + 1;
    }
  }
  return success();
}

Result<void> Planner::readUser(const json& user) {
  MICROVM_TRY(requireObject(user, "process.user"));
  int64_t uid = 0, gid = 0;
  std::vector<int64_t> additional;
  for (const auto& [key, value] : user.items()) {
    if (key == "uid" || key == "gid") {
      auto id = getInteger(value, "process.user." + key);
      if (!id) return std::move(id).error();
      if (*id < 0 || *id > UINT32_MAX) return invalid("process.user." + key, "out of range");
      (key == "uid" ? uid : gid) = *id;
    } else if (key == "umask") {
      notApplied("process.user.umask");
    } else if (key == "additionalGids") {
      if (!value.is_array() || value.size() > 1024) return invalid("process.user.additionalGids", "must be an array");
      for (const auto& id : value) {
        auto gid_value = getInteger(id, "process.user.additionalGids");
        if (!gid_value) return std::move(gid_value).error();
        additional.push_back(*gid_value);
      }
    } else if (key == "username") {
      continue;  // Windows only
    } else {
      return invalid("process.user." + key, "unknown field");
    }
  }
  plan_.options.user = std::to_string(uid) + ":" + std::to_string(gid);
  // Only the primary group is expressible (containerd lists it here).
  for (int64_t extra : additional) {
    if (extra != gid) return refuse("process.user.additionalGids", "other than the primary group are not supported");
  }
  return success();
}

// process.rlimits: [{"type": "RLIMIT_NOFILE", "soft": N, "hard": N}], as the
// library's ulimits ("RLIMIT_NOFILE=N:N"), which the guest sets on the
// workload and every exec; the library refuses an unknown type by name.
Result<void> Planner::readRlimits(const json& rlimits) {
  if (!rlimits.is_array()) return invalid("process.rlimits", "must be an array");
  if (rlimits.size() > 64) return invalid("process.rlimits", "more than 64 entries");
  for (const auto& entry : rlimits) {
    MICROVM_TRY(requireObject(entry, "process.rlimits[]"));
    std::string limit;
    for (const char* key : {"type", "soft", "hard"}) {
      if (!entry.contains(key)) return invalid(std::string("process.rlimits[].") + key, "is required");
    }
    for (const auto& [key, value] : entry.items()) {
      if (key != "type" && key != "soft" && key != "hard") return invalid("process.rlimits[]." + key, "unknown field");
    }
    auto type = getString(entry["type"], "process.rlimits[].type");
    if (!type) return std::move(type).error();
    auto number = [](const json& value) -> std::optional<std::string> {
      if (value.is_number_unsigned()) {
        uint64_t n = value.get<uint64_t>();
        return n == UINT64_MAX ? std::string("unlimited") : std::to_string(n);
      }
      if (value.is_number_integer()) {
        int64_t n = value.get<int64_t>();
        if (n == -1) return std::string("unlimited");
        if (n >= 0) return std::to_string(n);
      }
      return std::nullopt;
    };
    auto soft = number(entry["soft"]);
    auto hard = number(entry["hard"]);
    if (!soft || !hard) return invalid("process.rlimits[]", "soft and hard must be non-negative integers");
    plan_.options.ulimits.push_back(*type + "=" + *soft + ":" + *hard);
  }
  return success();
}

Result<void> Planner::readCapabilities(const json& caps) {
  MICROVM_TRY(requireObject(caps, "process.capabilities"));
  std::set<std::string> wanted;
  bool have_bounding = false;
  for (const auto& [key, value] : caps.items()) {
    if (key != "bounding" && key != "effective" && key != "permitted" && key != "inheritable" && key != "ambient") {
      return invalid("process.capabilities." + key, "unknown field");
    }
    auto names = getStrings(value, "process.capabilities." + key);
    if (!names) return std::move(names).error();
    if (key != "bounding") continue;
    have_bounding = true;
    for (std::string name : *names) {
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
      if (name.rfind("CAP_", 0) == 0) name = name.substr(4);
      wanted.insert(name);
    }
  }
  if (!have_bounding) return success();  // the set the workload gets is the bounding set
  std::set<std::string> defaults(std::begin(kDefaultCaps), std::end(kDefaultCaps));
  for (const auto& name : wanted) {
    if (!defaults.count(name)) plan_.options.cap_add.push_back(name);
  }
  for (const auto& name : defaults) {
    if (!wanted.count(name)) plan_.options.cap_drop.push_back(name);
  }
  return success();
}

Result<void> Planner::readProcess(const json& process) {
  MICROVM_TRY(requireObject(process, "process"));
  RunOptions& options = plan_.options;
  options.no_new_privs = false;  // the spec's default
  for (const auto& [key, value] : process.items()) {
    const std::string field = "process." + key;
    if (key == "args") {
      auto args = getStrings(value, field);
      if (!args) return std::move(args).error();
      options.command = std::move(*args);
    } else if (key == "env") {
      auto env = getStrings(value, field);
      if (!env) return std::move(env).error();
      for (const auto& entry : *env) {
        if (entry.find('=') == std::string::npos || entry[0] == '=') return invalid(field, "\"" + entry + "\" is not KEY=VALUE");
      }
      options.env = std::move(*env);
    } else if (key == "cwd") {
      auto cwd = getString(value, field);
      if (!cwd) return std::move(cwd).error();
      MICROVM_TRY(checkGuestPath(*cwd, field));
      options.workdir = *cwd;
    } else if (key == "terminal") {
      if (!value.is_boolean()) return invalid(field, "must be a boolean");
      plan_.terminal = value.get<bool>();
    } else if (key == "consoleSize") {
      // The console's size to begin with; the engine resizes it later.
      if (!value.is_object()) return invalid(field, "must be an object");
      for (const char* dimension : {"height", "width"}) {
        if (!value.contains(dimension)) continue;
        auto number = getInteger(value[dimension], field + "." + dimension);
        if (!number) return std::move(number).error();
        if (*number < 0 || *number > 65535) return invalid(field + "." + dimension, "must be 0..65535");
        (dimension[0] == 'h' ? plan_.console_rows : plan_.console_cols) = static_cast<uint16_t>(*number);
      }
    } else if (key == "user") {
      MICROVM_TRY(readUser(value));
    } else if (key == "capabilities") {
      MICROVM_TRY(readCapabilities(value));
    } else if (key == "noNewPrivileges") {
      if (!value.is_boolean()) return invalid(field, "must be a boolean");
      options.no_new_privs = value.get<bool>();
    } else if (key == "rlimits") {
      MICROVM_TRY(readRlimits(value));
    } else if (key == "oomScoreAdj") {
      notApplied(field);  // the VM's size bounds the workload
    } else if (key == "apparmorProfile" || key == "selinuxLabel") {
      if (!isEmptyValue(value)) MICROVM_TRY(refuse(field, "is not supported (the guest has no LSM)"));
    } else {
      if (!isEmptyValue(value)) MICROVM_TRY(refuse(field, "is not supported"));
    }
  }
  if (options.command.empty()) return invalid("process.args", "must not be empty");
  return success();
}

Result<void> Planner::readRoot(const json& root) {
  MICROVM_TRY(requireObject(root, "root"));
  if (!root.contains("path")) return invalid("root.path", "missing");
  for (const auto& [key, value] : root.items()) {
    if (key == "path") {
      auto path = getString(value, "root.path");
      if (!path) return std::move(path).error();
      fs::path rootfs = fs::path(*path).is_absolute() ? fs::path(*path) : bundle_ / *path;
      std::error_code error;
      if (!fs::is_directory(rootfs, error)) {
        return Error(ErrorCode::kNotFound, "config.json: root.path: " + rootfs.string() + " is not a directory");
      }
      plan_.options.rootfs = rootfs;
    } else if (key == "readonly") {
      if (!value.is_boolean()) return invalid("root.readonly", "must be a boolean");
      if (value.get<bool>()) MICROVM_TRY(refuse("root.readonly", "is not supported (the VM's disk is writable)"));
    } else {
      return invalid("root." + key, "unknown field");
    }
  }
  return success();
}

Result<void> Planner::readMount(const json& mount, size_t index) {
  const std::string field = "mounts[" + std::to_string(index) + "]";
  MICROVM_TRY(requireObject(mount, field));
  std::string destination, type, source;
  std::vector<std::string> mount_options;
  for (const auto& [key, value] : mount.items()) {
    if (key == "destination" || key == "type" || key == "source") {
      auto text = getString(value, field + "." + key);
      if (!text) return std::move(text).error();
      (key == "destination" ? destination : key == "type" ? type : source) = *text;
    } else if (key == "options") {
      auto list = getStrings(value, field + ".options");
      if (!list) return std::move(list).error();
      mount_options = std::move(*list);
    } else if (key == "uidMappings" || key == "gidMappings") {
      if (!isEmptyValue(value)) MICROVM_TRY(refuse(field + "." + key, "is not supported"));
    } else {
      return invalid(field + "." + key, "unknown field");
    }
  }
  MICROVM_TRY(checkGuestPath(destination, field + ".destination"));
  auto has = [&](const char* option) {
    return std::find(mount_options.begin(), mount_options.end(), option) != mount_options.end();
  };
  bool bind = type == "bind" || ((type.empty() || type == "none") && (has("bind") || has("rbind")));
  // What the guest's init mounts itself.
  static const std::set<std::string> kGuestMade = {"proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2"};
  if (kGuestMade.count(type)) return success();
  if (type == "tmpfs") {
    if (destination == "/dev" || destination == "/tmp") return success();
    std::string tmpfs = destination;
    std::string opts;
    for (const auto& option : mount_options) {
      if (option.rfind("size=", 0) == 0 || option.rfind("mode=", 0) == 0) opts += (opts.empty() ? "" : ",") + option;
    }
    if (tmpfs.find(':') != std::string::npos) return invalid(field + ".destination", "must not contain ':'");
    plan_.options.tmpfs.push_back(opts.empty() ? tmpfs : tmpfs + ":" + opts);
    return success();
  }
  if (!bind) return refuse(field + ".type", "\"" + type + "\" is not supported (bind, tmpfs and the guest's own proc, sysfs, devpts, mqueue, cgroup are)");
  if (destination == "/dev/shm") return success();  // the guest has its own
  if (destination.rfind("/dev/", 0) == 0) return refuse(field, "binds a device (" + destination + "), which a VM cannot share");
  fs::path host = fs::path(source).is_absolute() ? fs::path(source) : bundle_ / source;
  struct stat st {};
  if (::stat(host.c_str(), &st) != 0) {
    return Error(ErrorCode::kNotFound, "config.json: " + field + ".source: " + host.string() + " does not exist");
  }
  if (S_ISDIR(st.st_mode)) {
    Volume volume;
    volume.host = host;
    volume.guest = destination;
    volume.readonly = has("ro");
    plan_.options.volumes.push_back(std::move(volume));
  } else if (S_ISREG(st.st_mode)) {
    plan_.files.push_back({host, destination});
  } else {
    return refuse(field + ".source", "is neither a directory nor a regular file");
  }
  return success();
}

Result<void> Planner::readMounts(const json& mounts) {
  if (!mounts.is_array()) return invalid("mounts", "must be an array");
  if (mounts.size() > kMaxList) return invalid("mounts", "has more than 4096 entries");
  for (size_t i = 0; i < mounts.size(); ++i) MICROVM_TRY(readMount(mounts[i], i));
  return success();
}

Result<void> Planner::readResources(const json& resources) {
  MICROVM_TRY(requireObject(resources, "linux.resources"));
  for (const auto& [key, value] : resources.items()) {
    const std::string field = "linux.resources." + key;
    if (key == "memory") {
      MICROVM_TRY(requireObject(value, field));
      for (const auto& [mkey, mvalue] : value.items()) {
        if (mkey == "limit") {
          auto limit = getInteger(mvalue, field + ".limit");
          if (!limit) return std::move(limit).error();
          if (*limit > 0) {
            int64_t mib = (*limit + (1 << 20) - 1) >> 20;
            plan_.options.memory_mib = static_cast<int>(std::clamp<int64_t>(mib, 128, 1 << 20));
          }
        } else {
          notApplied(field + "." + mkey);
        }
      }
    } else if (key == "cpu") {
      MICROVM_TRY(requireObject(value, field));
      int64_t quota = 0, period = 100000;
      for (const auto& [ckey, cvalue] : value.items()) {
        if (ckey == "quota" || ckey == "period") {
          auto number = getInteger(cvalue, field + "." + ckey);
          if (!number) return std::move(number).error();
          (ckey == "quota" ? quota : period) = *number;
        } else {
          notApplied(field + "." + ckey);
        }
      }
      if (quota > 0 && period > 0) {
        plan_.options.cpus = static_cast<int>(std::clamp<int64_t>((quota + period - 1) / period, 1, 64));
      }
    } else if (key == "devices" || key == "pids") {
      notApplied(field);  // the guest has only its own devices; the VM's memory bounds its tasks
    } else {
      if (!isEmptyValue(value)) MICROVM_TRY(refuse(field, "is not supported (only cpu and memory size a VM)"));
    }
  }
  return success();
}

Result<void> Planner::readLinux(const json& linux) {
  MICROVM_TRY(requireObject(linux, "linux"));
  for (const auto& [key, value] : linux.items()) {
    const std::string field = "linux." + key;
    if (key == "namespaces") {
      if (!value.is_array() || value.size() > 64) return invalid(field, "must be an array of at most 64 entries");
      for (size_t i = 0; i < value.size(); ++i) {
        const json& ns = value[i];
        MICROVM_TRY(requireObject(ns, field));
        if (!ns.contains("type")) return invalid(field, "an entry has no type");
        auto type = getString(ns["type"], field + ".type");
        if (!type) return std::move(type).error();
        std::string path;
        if (ns.contains("path")) {
          auto text = getString(ns["path"], field + ".path");
          if (!text) return std::move(text).error();
          path = *text;
        }
        if (*type == "network") {
          has_network_namespace_ = true;
          if (!path.empty() && path[0] != '/') return invalid(field + "[network].path", "must be absolute");
          plan_.netns_path = path;
        } else if (!path.empty()) {
          notApplied(field + "[" + *type + "].path");  // the VM has its own kernel: nothing to share
        }
      }
    } else if (key == "resources") {
      MICROVM_TRY(readResources(value));
    } else if (key == "seccomp") {
      MICROVM_TRY(requireObject(value, field));
      // The guest's filter takes whole syscalls: a rule with argument
      // filters would become stricter than written (a deny of socket(AF_VSOCK)
      // would deny every socket). Such profiles, engines' defaults among them,
      // get microvm's default profile (Docker's, with its AF_VSOCK rule) instead.
      bool has_args = false;
      if (value.contains("syscalls") && value["syscalls"].is_array()) {
        for (const auto& rule : value["syscalls"]) {
          if (rule.is_object() && rule.contains("args") && !isEmptyValue(rule["args"])) has_args = true;
        }
      }
      if (has_args) {
        notApplied("linux.seccomp (argument filters: microvm's default profile instead)");
      } else {
        plan_.seccomp_profile = value.dump();
      }
    } else if (key == "cgroupsPath" || key == "sysctl" || key == "maskedPaths" || key == "readonlyPaths" ||
               key == "mountLabel" || key == "rootfsPropagation") {
      notApplied(field);  // host kernel features the VM boundary stands in for
    } else {
      if (!isEmptyValue(value)) MICROVM_TRY(refuse(field, "is not supported in a VM"));
    }
  }
  return success();
}

Result<void> Planner::readHooks(const json& hooks) {
  MICROVM_TRY(requireObject(hooks, "hooks"));
  std::vector<std::string> refused;
  auto parsed = parseHooks(hooks.dump(), refused);
  if (!parsed) return std::move(parsed).error();
  plan_.hooks = std::move(*parsed);
  for (const auto& stage : refused) {
    MICROVM_TRY(refuse("hooks." + stage, "would run in the container's namespaces, which a VM does not have"));
  }
  return success();
}

Result<void> Planner::applyOverrides() {
  RunOptions& options = plan_.options;
  // A new, empty network namespace: the VM has only lo. The engine's
  // namespace, or none (the host's): the runner's NAT, from there.
  options.network = has_network_namespace_ && plan_.netns_path.empty() ? "none" : "user";
  auto number = [&](const char* key, int low, int high, int& out) -> Result<void> {
    auto found = plan_.annotations.find(key);
    if (found == plan_.annotations.end()) return success();
    const std::string& text = found->second;
    if (text.empty() || text.size() > 9 || text.find_first_not_of("0123456789") != std::string::npos) {
      return invalid(std::string("annotations.") + key, "must be a number");
    }
    int value = std::stoi(text);
    if (value < low || value > high) return invalid(std::string("annotations.") + key, "out of range");
    out = value;
    return success();
  };
  MICROVM_TRY(number(kCpusAnnotation, 1, 64, options.cpus));
  MICROVM_TRY(number(kMemoryAnnotation, 64, 1 << 20, options.memory_mib));
  auto network = plan_.annotations.find(kNetworkAnnotation);
  if (network != plan_.annotations.end()) {
    if (network->second != "none" && network->second != "user" && network->second != "tap") {
      return invalid(std::string("annotations.") + kNetworkAnnotation, "must be none, user or tap");
    }
    if (network->second == "tap" && plan_.netns_path.empty()) {
      // Without the engine's namespace the runner would take the host's link.
      return invalid(std::string("annotations.") + kNetworkAnnotation,
                     "tap needs the engine's network namespace (linux.namespaces network with a path)");
    }
    options.network = network->second;
  }
  plan_.pick_network = network == plan_.annotations.end() && !plan_.netns_path.empty() &&
                       plan_.annotations.find(kPublishAnnotation) == plan_.annotations.end();
  auto publish = plan_.annotations.find(kPublishAnnotation);
  if (publish != plan_.annotations.end()) {
    std::string list = publish->second;
    size_t start = 0;
    while (start < list.size()) {
      size_t comma = list.find(',', start);
      if (comma == std::string::npos) comma = list.size();
      std::string item = list.substr(start, comma - start);
      if (!item.empty()) options.publish.push_back(item);  // checked by Runtime::create
      start = comma + 1;
    }
    if (options.publish.size() > 256) return invalid(std::string("annotations.") + kPublishAnnotation, "too many ports");
  }
  return success();
}

Result<BundlePlan> Planner::plan(const json& spec) {
  MICROVM_TRY(requireObject(spec, "the document"));
  MICROVM_TRY(readAnnotations(spec));
  if (!spec.contains("process")) return invalid("process", "missing");
  if (!spec.contains("root")) return invalid("root", "missing");
  for (const auto& [key, value] : spec.items()) {
    if (key == "ociVersion") {
      auto version = getString(value, key);
      if (!version) return std::move(version).error();
      if (version->rfind("1.", 0) != 0) return invalid(key, "\"" + *version + "\" is not a 1.x version");
      plan_.oci_version = *version;
    } else if (key == "process") {
      MICROVM_TRY(readProcess(value));
    } else if (key == "root") {
      MICROVM_TRY(readRoot(value));
    } else if (key == "mounts") {
      MICROVM_TRY(readMounts(value));
    } else if (key == "hostname") {
      auto hostname = getString(value, key);
      if (!hostname) return std::move(hostname).error();
      if (hostname->size() > 64) return invalid(key, "longer than 64 characters");
      plan_.options.hostname = *hostname;
    } else if (key == "domainname") {
      if (!isEmptyValue(value)) MICROVM_TRY(refuse(key, "is not supported"));
    } else if (key == "linux") {
      MICROVM_TRY(readLinux(value));
    } else if (key == "hooks") {
      MICROVM_TRY(readHooks(value));
    } else if (key == "annotations") {
      continue;
    } else {
      if (!isEmptyValue(value)) MICROVM_TRY(refuse(key, "is not supported by a Linux VM runtime"));
    }
  }
  if (plan_.oci_version.empty()) return invalid("ociVersion", "missing");
  MICROVM_TRY(applyOverrides());
  return std::move(plan_);
}

Result<json> parseBounded(const std::string& text, const std::string& what) {
  if (text.size() > kMaxConfigBytes) return invalid(what, "larger than 4 MiB");
  bool too_deep = false;
  json::parser_callback_t depth_check = [&too_deep](int depth, json::parse_event_t, json&) {
    if (depth > kMaxDepth) too_deep = true;
    return !too_deep;
  };
  json parsed = json::parse(text, depth_check, /*allow_exceptions=*/false);
  if (too_deep) return invalid(what, "nested deeper than 32 levels");
  if (parsed.is_discarded()) return invalid(what, "not valid JSON");
  return parsed;
}

}  // namespace

Result<BundlePlan> planBundle(const std::string& config_json, const fs::path& bundle) {
  auto spec = parseBounded(config_json, "the document");
  if (!spec) return std::move(spec).error();
  return Planner(bundle).plan(*spec);
}

Result<ProcessPlan> planProcess(const std::string& process_json) {
  auto spec = parseBounded(process_json, "process");
  if (!spec) return std::move(spec).error();
  if (!spec->is_object()) return invalid("process", "must be an object");
  ProcessPlan plan;
  for (const auto& [key, value] : spec->items()) {
    if (key == "args" || key == "env") {
      auto list = getStrings(value, "process." + key);
      if (!list) return std::move(list).error();
      (key == "args" ? plan.args : plan.env) = std::move(*list);
    } else if (key == "cwd") {
      auto cwd = getString(value, "process.cwd");
      if (!cwd) return std::move(cwd).error();
      plan.cwd = *cwd;
    } else if (key == "terminal") {
      if (!value.is_boolean()) return invalid("process.terminal", "must be a boolean");
      plan.terminal = value.get<bool>();
    } else if (key == "user") {
      if (!value.is_object()) return invalid("process.user", "must be an object");
      auto uid = value.contains("uid") ? getInteger(value["uid"], "process.user.uid") : Result<int64_t>(0);
      auto gid = value.contains("gid") ? getInteger(value["gid"], "process.user.gid") : Result<int64_t>(0);
      if (!uid) return std::move(uid).error();
      if (!gid) return std::move(gid).error();
      if (*uid < 0 || *uid > UINT32_MAX || *gid < 0 || *gid > UINT32_MAX) return invalid("process.user", "out of range");
      plan.user = std::to_string(*uid) + ":" + std::to_string(*gid);
    }
    // The rest (capabilities, rlimits, labels) is the container's: exec
    // gets the workload's confinement.
  }
  if (plan.args.empty()) return invalid("process.args", "must not be empty");
  return plan;
}

std::string featuresJson() {
  json features = {
      {"ociVersionMin", "1.0.0"},
      {"ociVersionMax", "1.1.0"},
      {"hooks", {"prestart", "createRuntime", "poststart", "poststop"}},
      {"mountOptions", {"bind", "rbind", "ro", "rw"}},
      {"linux",
       {{"namespaces", {"pid", "network", "ipc", "uts", "mount", "cgroup"}},
        {"capabilities", json::array()},
        {"cgroup", {{"v1", false}, {"v2", false}, {"systemd", false}, {"systemdUser", false}}},
        {"seccomp", {{"enabled", true}, {"actions", {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL"}}}},
        {"apparmor", {{"enabled", false}}},
        {"selinux", {{"enabled", false}}}}},
      {"annotations",
       {{"org.microvm.vm", "true"},
        {kIgnoreAnnotation, "comma-separated spec fields to run without (or *) instead of refusing them"},
        {kCpusAnnotation, "vCPUs (default: linux.resources.cpu quota/period, else 1)"},
        {kMemoryAnnotation, "memory in MiB (default: linux.resources.memory.limit, else 512)"},
        {kNetworkAnnotation,
         "none, user or tap (default: none with a new network namespace; in the engine's namespace when it "
         "gives a path, tap (the guest owns the pod's address) if it has a configured interface, else user (the "
         "runner's NAT there); with no namespace, user in the host's)"},
        {kPublishAnnotation, "comma-separated [IP:]PORT:GUESTPORT[/udp], listened on in the container's network namespace"},
        {"org.microvm.not-applied",
         "process.oomScoreAdj, process.user.umask, linux.cgroupsPath, linux.sysctl, "
         "linux.namespaces paths other than network (a VM shares no kernel namespace), "
         "linux.maskedPaths, linux.readonlyPaths, linux.resources.devices, linux.resources.pids: the VM boundary "
         "stands in for them"},
        {"org.microvm.unsupported",
         "root.readonly, hooks createContainer/startContainer, process.user.additionalGids, apparmor/selinux labels, "
         "linux.uidMappings/gidMappings, linux.devices, mounts other than bind/tmpfs/proc/sysfs/devpts/mqueue/cgroup"}}}};
  return features.dump(2);
}

}  // namespace microvm::oci
