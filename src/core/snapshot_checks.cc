// See snapshot_checks.h.
#include "core/snapshot_checks.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "base/eintr.h"
#include "base/fs.h"
#include "base/hash.h"
#include "base/paths.h"
#include "base/process.h"
#include "base/unique_fd.h"
#include "base/xxh64.h"
#include "hypervisor/qemu/qemu_command.h"
#include "net/slirp_state.h"
#include "runner/machine_config.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kReadChunk = size_t{1} << 20;
// A seal is a few hundred bytes; anything far larger is not one.
constexpr size_t kMaxSealBytes = 64 * 1024;

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

Error refused(const std::string& message) {
  return Error(ErrorCode::kInvalidArgument, message);
}

// Streams a file through `update`.
template <typename Update>
Result<uint64_t> readThrough(const fs::path& path, Update update) {
  UniqueFd fd(retryOnEintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  (void)::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  std::string buffer(kReadChunk, '\0');
  uint64_t total = 0;
  for (;;) {
    ssize_t got = retryOnEintr([&] { return ::read(fd.get(), buffer.data(), buffer.size()); });
    if (got < 0) return Error::fromErrno("read " + path.string());
    if (got == 0) return total;
    update(std::string_view(buffer.data(), static_cast<size_t>(got)));
    total += static_cast<uint64_t>(got);
  }
}

// Guest RAM beside the device state (memory.bin): memory.ram, sparse.
fs::path ramFile(const fs::path& memory_file) { return memory_file.parent_path() / "memory.ram"; }

// Feeds `hasher` the RAM file's non-zero 4 KiB blocks with their offsets:
// what it holds, however sparse a copy of it is. A missing file adds nothing.
Result<void> hashRam(const fs::path& path, Xxh64& hasher) {
  UniqueFd fd(retryOnEintr([&] { return ::open(path.c_str(), O_RDONLY | O_CLOEXEC); }));
  if (!fd.valid() && errno == ENOENT) return success();
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  auto hashed = forEachNonZeroBlock(fd.get(), UINT64_MAX, [&](uint64_t offset, std::string_view block) {
    hasher.update(std::string_view(reinterpret_cast<const char*>(&offset), sizeof offset));
    hasher.update(block);
    return success();
  });
  if (!hashed) return std::move(hashed).error().withContext(path.string());
  return success();
}

// The device state's bytes, then the RAM's blocks.
Result<std::string> memoryChecksum(const fs::path& path) {
  Xxh64 hasher;
  auto read = readThrough(path, [&](std::string_view bytes) { hasher.update(bytes); });
  if (!read) return std::move(read).error();
  MICROVM_TRY(hashRam(ramFile(path), hasher));
  return hex64(hasher.finish());
}

uint64_t ramSize(const fs::path& memory_file) {
  std::error_code ec;
  uint64_t size = fs::file_size(ramFile(memory_file), ec);
  return ec ? 0 : size;
}

Result<std::string> fileSha256(const fs::path& path) {
  Sha256 hasher;
  auto read = readThrough(path, [&](std::string_view bytes) { hasher.update(bytes); });
  if (!read) return std::move(read).error();
  return hasher.finishHex();
}

Result<std::string> qemuVersion(const std::string& qemu) {
  std::string output;
  auto ran = runCommand({qemu, "--version"}, &output);
  if (!ran) return ran.error().withContext("QEMU version (" + qemu + " --version)");
  return output.substr(0, output.find('\n'));
}

// Identifies one version of a file without reading it: a write, a truncate,
// a replacement or a copy changes at least one of these. Empty if the file
// cannot be stat'ed.
struct FileStamp {
  std::string id;
  int64_t changed_ns = 0;  // ctime
};

FileStamp fileStamp(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return {};
  FileStamp stamp;
  stamp.id = std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino) + ":" + std::to_string(info.st_size) +
             ":" + std::to_string(info.st_mtim.tv_sec) + "." + std::to_string(info.st_mtim.tv_nsec) + ":" +
             std::to_string(info.st_ctim.tv_sec) + "." + std::to_string(info.st_ctim.tv_nsec);
  stamp.changed_ns = static_cast<int64_t>(info.st_ctim.tv_sec) * 1'000'000'000 + info.st_ctim.tv_nsec;
  return stamp;
}

int64_t realtimeNs() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return static_cast<int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

// File times come from a coarse clock (one tick, up to 10 ms, behind): a
// file changed less than this before a check began could change again
// within the same tick after it, unseen by its stamp ("racy", as git says
// of its index), so such a stamp is not trusted.
constexpr int64_t kRacyNs = 50'000'000;

fs::path checkedFile(const fs::path& seal_file) {
  return seal_file.parent_path() / "seal.checked.json";
}

// What a check sees before it reads anything: the seal's digest and every
// file's stamp; taken before the hashing, so that a write during it shows as
// a changed stamp. Each file is trusted or checked on its own: a new
// snapshot's memory file is racy, its kernel, initramfs and QEMU are not.
struct CheckedRecord {
  json files;                  // "seal": digest; "memory", "kernel", ...: stamps
  std::set<std::string> racy;  // files whose stamp cannot be trusted
};

CheckedRecord checkedRecord(const std::string& seal_text, const fs::path& memory_file, const VmSpec& spec) {
  CheckedRecord record;
  int64_t now = realtimeNs();
  record.files = {{"seal", hex64(xxh64(seal_text))}};
  for (const auto& [key, path] : {std::pair<const char*, fs::path>{"memory", memory_file},
                                  {"ram", ramFile(memory_file)},
                                  {"kernel", spec.kernel},
                                  {"initramfs", spec.initramfs},
                                  {"qemu", spec.qemu}}) {
    FileStamp stamp = fileStamp(path);
    if (stamp.id.empty() || now - stamp.changed_ns < kRacyNs) record.racy.insert(key);
    record.files[key] = stamp.id;
  }
  return record;
}

// Records the files a passed check found as the seal says (`seen`, taken as
// it began), but not racy ones; best effort: a read-only snapshot directory
// only costs the next restore a full check.
void recordChecked(const CheckedRecord& seen, const fs::path& seal_file) {
  json files = seen.files;
  for (const auto& key : seen.racy) files.erase(key);
  (void)writeFileAtomic(checkedFile(seal_file), files.dump() + "\n");
}

// The files a former check found as the seal says and that have not changed
// since; empty if the seal itself changed.
std::set<std::string> checkedBefore(const CheckedRecord& now, const fs::path& seal_file) {
  std::set<std::string> unchanged;
  auto text = readFile(checkedFile(seal_file));
  if (!text || text->size() > kMaxSealBytes) return unchanged;
  json recorded = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!recorded.is_object() || recorded.value("seal", json()) != now.files["seal"]) return unchanged;
  for (const auto& [key, stamp] : now.files.items()) {
    if (key != "seal" && !now.racy.count(key) && recorded.value(key, json()) == stamp) unchanged.insert(key);
  }
  return unchanged;
}

// The seal's memory checksum, on the file as it is now.
Result<void> checkMemory(const fs::path& memory_file, const Seal& seal) {
  auto checksum = memoryChecksum(memory_file);
  if (!checksum) return std::move(checksum).error();
  if (*checksum != seal.memory_xxh64) {
    return refused("the snapshot's memory file " + memory_file.string() +
                   " is corrupted (its checksum does not match the one recorded when it was saved)");
  }
  return success();
}

}  // namespace

Result<void> checkCanSnapshot(const VmSpec& spec) {
  if (!spec.vsock_ports.empty()) {
    const auto& port = spec.vsock_ports.front();
    std::string number = std::to_string(port.port);
    return Error(ErrorCode::kUnsupported,
                 "VM " + spec.name + " has vsock port " + number + " (--vsock " + number + ":" + port.path +
                     (port.listen ? ":listen" : "") +
                     "), and QEMU cannot save a vhost-user-vsock device; snapshots need a VM without --vsock ports");
  }
  // A writable volume first: it could not be held even if QEMU could save
  // the device.
  for (const auto& share : spec.shares) {
    if (share.readonly) continue;
    return Error(ErrorCode::kUnsupported,
                 "VM " + spec.name + " has a writable volume at " + share.guest + " (-v " + share.host + ":" +
                     share.guest +
                     "), and a snapshot cannot hold the host files the guest may change under it; "
                     "snapshots need a VM without writable volumes");
  }
  // QEMU 7.2 blocks migration while the guest has a 9p export mounted
  // ("Migration is disabled when VirtFS export path ... is mounted"), and
  // init mounts every volume: refused here in one line instead.
  if (!spec.shares.empty()) {
    const auto& share = spec.shares.front();
    return Error(ErrorCode::kUnsupported, "VM " + spec.name + " has a volume at " + share.guest + " (-v " + share.host +
                                              ":" + share.guest +
                                              ":ro), and QEMU cannot save a mounted 9p volume; snapshots need a "
                                              "VM without volumes");
  }
  return success();
}

std::string machineSignature(const VmSpec& spec) {
  // Placeholder fds: only which devices exist matters, not where they lead.
  MachineFds fds;
  fds.control = 3;
  if (spec.network != "none") fds.net = 4;
  if (spec.vsock) fds.agent = 5;
  fds.memory = 6;
  MachineConfig config = machineConfigFor(spec, {}, fds);
  QemuCommand command = buildQemuCommand("qemu", config, false);
  std::string signature;
  const auto& argv = command.argv;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    const std::string& option = argv[i];
    if (option == "-M" || option == "-accel" || option == "-cpu" || option == "-m" || option == "-smp" ||
        option == "-device" || option == "-object") {
      if (!signature.empty()) signature += ' ';
      signature += option + " " + argv[i + 1];
      ++i;
    }
  }
  return signature;
}

std::string encodeSeal(const Seal& seal) {
  json j = {{"version", kSealVersion},
            {"memory", {{"size", seal.memory_size}, {"ram_size", seal.ram_size}, {"xxh64", seal.memory_xxh64}}},
            {"kernel", {{"sha256", seal.kernel_sha256}}},
            {"initramfs", {{"sha256", seal.initramfs_sha256}}},
            {"machine", seal.machine},
            {"qemu", {{"version", seal.qemu_version}}}};
  return j.dump(2) + "\n";
}

Result<Seal> parseSeal(std::string_view text) {
  auto malformed = [](const std::string& why) { return Error(ErrorCode::kProtocol, "malformed seal: " + why); };
  if (text.size() > kMaxSealBytes) return malformed("larger than " + std::to_string(kMaxSealBytes) + " bytes");
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return malformed("not a JSON object");
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer()) return malformed("no version");
  if (*version != kSealVersion) {
    return Error(ErrorCode::kUnsupported, "seal version " + version->dump() + " is not " +
                                              std::to_string(kSealVersion) + " (made by another microvm)");
  }
  // section.key as a string, present and of the right type.
  auto text_at = [&](const char* section, const char* key, std::string& out) -> Result<void> {
    auto outer = j.find(section);
    const json* value = nullptr;
    if (key == nullptr) {
      if (outer != j.end()) value = &*outer;
    } else if (outer != j.end() && outer->is_object()) {
      auto inner = outer->find(key);
      if (inner != outer->end()) value = &*inner;
    }
    std::string name = key == nullptr ? std::string(section) : std::string(section) + "." + key;
    if (value == nullptr || !value->is_string()) return malformed("no " + name);
    out = value->get<std::string>();
    return success();
  };
  Seal seal;
  auto memory = j.find("memory");
  if (memory == j.end() || !memory->is_object()) return malformed("no memory");
  auto size = memory->find("size");
  if (size == memory->end() || !size->is_number_unsigned()) return malformed("no memory.size");
  seal.memory_size = size->get<uint64_t>();
  if (auto ram = memory->find("ram_size"); ram != memory->end()) {
    if (!ram->is_number_unsigned()) return malformed("memory.ram_size is not a size");
    seal.ram_size = ram->get<uint64_t>();
  }
  MICROVM_TRY(text_at("memory", "xxh64", seal.memory_xxh64));
  MICROVM_TRY(text_at("kernel", "sha256", seal.kernel_sha256));
  MICROVM_TRY(text_at("initramfs", "sha256", seal.initramfs_sha256));
  MICROVM_TRY(text_at("machine", nullptr, seal.machine));
  MICROVM_TRY(text_at("qemu", "version", seal.qemu_version));
  return seal;
}

Result<void> writeSeal(const fs::path& memory_file, const VmSpec& spec, const fs::path& seal_file) {
  // The seal's digest is known only at the end; the stamps are taken now.
  CheckedRecord before = checkedRecord("", memory_file, spec);
  Seal seal;
  std::error_code ec;
  seal.memory_size = fs::file_size(memory_file, ec);
  if (ec) return Error(ErrorCode::kIo, "size of " + memory_file.string() + ": " + ec.message(), ec.value());
  seal.ram_size = ramSize(memory_file);
  auto checksum = memoryChecksum(memory_file);
  if (!checksum) return std::move(checksum).error();
  seal.memory_xxh64 = *checksum;
  auto kernel = fileSha256(spec.kernel);
  if (!kernel) return std::move(kernel).error();
  seal.kernel_sha256 = *kernel;
  auto initramfs = fileSha256(spec.initramfs);
  if (!initramfs) return std::move(initramfs).error();
  seal.initramfs_sha256 = *initramfs;
  seal.machine = machineSignature(spec);
  auto version = qemuVersion(spec.qemu);
  if (!version) return std::move(version).error();
  seal.qemu_version = *version;
  std::string text = encodeSeal(seal);
  before.files["seal"] = hex64(xxh64(text));
  MICROVM_TRY(writeFileAtomic(seal_file, text));
  // Everything was just read: unless QEMU wrote the file a moment ago (it
  // usually did), the first restore need not read it again.
  recordChecked(before, seal_file);
  return success();
}

Result<void> checkSeal(const fs::path& memory_file, const VmSpec& spec, const fs::path& seal_file) {
  std::string where = "snapshot " + seal_file.parent_path().filename().string();
  auto text = readFile(seal_file);
  if (!text) {
    return refused(where + " has no seal (" + seal_file.string() +
                   "): it is incomplete, or was made by an older microvm; take it again");
  }
  auto seal = parseSeal(*text);
  if (!seal) return refused(where + ": " + seal.error().message());

  std::error_code ec;
  uint64_t size = fs::file_size(memory_file, ec);
  if (ec) return refused(where + ": its memory file " + memory_file.string() + " cannot be read: " + ec.message());
  if (size != seal->memory_size) {
    return refused(where + " is " + (size < seal->memory_size ? "truncated" : "damaged") + ": its memory file " +
                   memory_file.string() + " has " + std::to_string(size) + " bytes, " +
                   std::to_string(seal->memory_size) + " were saved");
  }
  if (uint64_t ram = ramSize(memory_file); ram != seal->ram_size) {
    return refused(where + " is " + (ram < seal->ram_size ? "truncated" : "damaged") + ": its guest memory file " +
                   ramFile(memory_file).string() + " has " + std::to_string(ram) + " bytes, " +
                   std::to_string(seal->ram_size) + " were saved");
  }
  // Cheap, and the code that builds the machine may have changed since.
  if (std::string machine = machineSignature(spec); machine != seal->machine) {
    return refused(where +
                   " was saved from another machine type or device set than microvm now builds for it "
                   "(saved: " +
                   seal->machine + "; now: " + machine + ")");
  }
  CheckedRecord before = checkedRecord(*text, memory_file, spec);
  std::set<std::string> unchanged = checkedBefore(before, seal_file);

  if (!unchanged.count("kernel")) {
    auto kernel = fileSha256(spec.kernel);
    if (!kernel) return refused(where + " needs the kernel " + spec.kernel + ": " + kernel.error().message());
    if (*kernel != seal->kernel_sha256) {
      return refused(where + " was saved with another kernel than " + spec.kernel + " now holds (sha256 " +
                     seal->kernel_sha256.substr(0, 12) + ", now " + kernel->substr(0, 12) + ")");
    }
  }
  if (!unchanged.count("initramfs")) {
    auto initramfs = fileSha256(spec.initramfs);
    if (!initramfs) {
      return refused(where + " needs the initramfs " + spec.initramfs + ": " + initramfs.error().message());
    }
    if (*initramfs != seal->initramfs_sha256) {
      return refused(where + " was saved with another initramfs than " + spec.initramfs + " now holds (sha256 " +
                     seal->initramfs_sha256.substr(0, 12) + ", now " + initramfs->substr(0, 12) + ")");
    }
  }
  if (!unchanged.count("qemu")) {
    auto version = qemuVersion(spec.qemu);
    if (!version) return refused(where + ": " + version.error().message());
    if (*version != seal->qemu_version) {
      return refused(where + " was saved by " + seal->qemu_version + ", but " + spec.qemu + " is " + *version);
    }
  }
  if (!unchanged.count("memory") || !unchanged.count("ram")) {
    if (auto memory = checkMemory(memory_file, *seal); !memory) return refused(where + ": " + memory.error().message());
  }
  if (unchanged.size() < 4) recordChecked(before, seal_file);
  // The network stack's state beside it carries its own checksum
  // (net/slirp_state.h); absent or empty, the stack starts afresh.
  fs::path network = memory_file.parent_path() / SnapshotPaths::network({}).filename();
  auto bytes = readUntrustedFile(network, net::kMaxSlirpStateFileBytes);
  if (!bytes && bytes.error().sysErrno() != ENOENT) {
    return refused(where + ": " + network.string() + " cannot be read: " + bytes.error().message());
  }
  if (bytes && !bytes->empty()) {
    if (auto state = net::decodeSlirpState(*bytes); !state) {
      return refused(where + ": " + network.string() + " is corrupted or truncated (" + state.error().message() + ")");
    }
  }
  return success();
}

}  // namespace microvm
