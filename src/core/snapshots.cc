// Snapshots: a paused VM's memory and device state (saved by QEMU) plus a
// copy of its disk overlay, kept under <data dir>/snapshots/<name>/:
//   memory.bin  disk.qcow2  layers/ (the source's disk layers)  spec.json
//   (the source VM's)  snapshot.json
// A restore makes a new VM whose disk is its own overlay of the saved one
// (core/disk_layers.h), and resumes it.
#include <nlohmann/json.hpp>

#include "base/paths.h"
#include "base/fs.h"
#include "base/hash.h"
#include "base/scope_guard.h"
#include "image/root_disk.h"
#include "microvm/runtime.h"
#include "runner/control.h"
#include "core/disk_layers.h"
#include "core/runtime_impl.h"
#include "core/snapshot_checks.h"
#include "state/vm_store.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

Result<void> checkSnapshotName(const std::string& name) {
  bool valid = !name.empty() && name.size() <= 128 && name[0] != '.' &&
               name.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
                   std::string::npos;
  if (!valid) {
    return Error(ErrorCode::kInvalidArgument,
                 "invalid snapshot name \"" + name + "\" (letters, digits, '_', '.', '-'; not starting with '.')");
  }
  return success();
}

fs::path snapshotsDir(const Layout& layout) { return SnapshotPaths(layout.dataDir()).dir(); }

Result<SnapshotInfo> loadSnapshotInfo(const fs::path& dir) {
  auto text = readFile(SnapshotPaths::meta(dir));
  if (!text) return std::move(text).error();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return Error(ErrorCode::kProtocol, "malformed " + SnapshotPaths::meta(dir).string());
  SnapshotInfo info;
  info.name = dir.filename();
  info.created_at = j.value("created_at", "");
  info.source_id = j.value("source_id", "");
  info.source_name = j.value("source_name", "");
  std::error_code ec;
  std::vector<fs::path> files = {SnapshotPaths::memory(dir), SnapshotPaths::disk(dir)};
  for (fs::directory_iterator it(SnapshotPaths::diskLayers(dir), ec), end; !ec && it != end; it.increment(ec)) {
    files.push_back(it->path());
  }
  for (const auto& file : files) {
    auto size = fs::file_size(file, ec);
    if (!ec) info.bytes += size;
  }
  return info;
}

}  // namespace

Result<void> Runtime::snapshot(const std::string& reference, const std::string& name) {
  MICROVM_TRY(checkSnapshotName(name));
  auto layout = impl_->layout();
  if (!layout) return std::move(layout).error();
  auto record = VmStore(*layout).find(reference);
  if (!record) return std::move(record).error();
  if (record->state.status != VmStatus::kRunning && record->state.status != VmStatus::kPaused) {
    return Error(ErrorCode::kInvalidArgument, "VM " + record->spec.name + " is not running");
  }
  MICROVM_TRY(checkCanSnapshot(record->spec));
  MICROVM_TRY(waitForWorkload(*record));
  fs::path final_dir = snapshotsDir(*layout) / name;
  if (fs::exists(final_dir)) return Error(ErrorCode::kAlreadyExists, "snapshot \"" + name + "\" already exists");

  // Built under a temporary name and renamed when whole: a crash leaves no
  // half snapshot under the real name.
  fs::path temp_dir = snapshotsDir(*layout) / (".tmp-" + name + "-" + randomHex(4));
  MICROVM_TRY(makeDirs(temp_dir));
  ScopeGuard remove_temp([&] { (void)removeTree(temp_dir); });
  MICROVM_TRY(sendRunnerRequest(VmSockets(record->spec.runtime_dir).runner(), SnapshotRequest{temp_dir}));
  MICROVM_TRY(keepDiskLayers(record->spec, temp_dir));
  MICROVM_TRY(writeSeal(SnapshotPaths::memory(temp_dir), record->spec, SnapshotPaths::seal(temp_dir)));
  MICROVM_TRY(saveSpec(temp_dir, record->spec));
  json meta = {{"created_at", nowRfc3339()}, {"source_id", record->spec.id}, {"source_name", record->spec.name}};
  MICROVM_TRY(writeFileAtomic(SnapshotPaths::meta(temp_dir), meta.dump(2) + "\n"));
  if (::rename(temp_dir.c_str(), final_dir.c_str()) != 0) {
    return Error::fromErrno("rename snapshot to " + final_dir.string());
  }
  remove_temp.dismiss();
  return success();
}

Result<VmHandle> Runtime::restore(const std::string& snapshot_name, const RunOptions& options) {
  MICROVM_TRY(checkSnapshotName(snapshot_name));
  auto layout = impl_->layout();
  if (!layout) return std::move(layout).error();
  fs::path snapshot_dir = snapshotsDir(*layout) / snapshot_name;
  if (!fs::exists(SnapshotPaths::meta(snapshot_dir))) {
    return Error(ErrorCode::kNotFound, "no such snapshot: " + snapshot_name);
  }
  auto source = loadSpec(snapshot_dir);
  if (!source) return std::move(source).error();
  MICROVM_TRY(checkSeal(SnapshotPaths::memory(snapshot_dir), *source, SnapshotPaths::seal(snapshot_dir)));
  auto id = createRestoredVm(*layout, snapshot_dir, *source, options.name, options.remove,
                             "restored from snapshot " + snapshot_name);
  if (!id) return std::move(id).error();
  // The runner refreshes the guest's clock and RNG as it resumes it.
  return start(*id, options.stdout_fd, options.stderr_fd);
}

// A new VM (not started) that resumes the state saved in `saved_dir` from
// `source`'s VM, on its own overlay of the saved disk (core/disk_layers.h).
Result<std::string> createRestoredVm(const Layout& layout, const fs::path& saved_dir, const VmSpec& source,
                                     const std::string& name, bool remove, const std::string& note) {
  // The machine must match the saved one exactly; only identity and
  // lifecycle options are the new VM's own.
  VmSpec spec = source;
  spec.id = randomHex(32);
  spec.name = name.empty() ? spec.id.substr(0, 12) : name;
  spec.created_at = nowRfc3339();
  spec.remove_on_exit = remove;
  // A hostname that was only the source's short id becomes the copy's own
  // (the runner's refresh sets it); one the user chose stays.
  if (source.hostname == source.id.substr(0, 12)) spec.hostname = spec.id.substr(0, 12);
  spec.restore_from = SnapshotPaths::memory(saved_dir).string();
  spec.template_dir.clear();
  spec.template_capture.clear();
  spec.template_note = note;
  fs::path vm_dir = layout.vmDir(spec.id);
  spec.root_disk = VmPaths(vm_dir).disk().string();
  spec.runtime_dir = layout.vmRuntimeDir(spec.id).string();
  MICROVM_TRY(checkSocketPath(VmSockets(spec.runtime_dir).runner()));

  MICROVM_TRY(checkDiskLayerRoom(source));
  MICROVM_TRY(VmStore(layout).add(spec, !name.empty(), [&](const fs::path&) -> Result<void> {
    auto layers = layDiskLayers(saved_dir, source, vm_dir);
    if (!layers) return std::move(layers).error().withContext("the restored disk");
    spec.disk_layers = std::move(*layers);
    return createOverlay(spec.base_disk, spec.root_disk);
  }));
  return spec.id;
}

Result<std::vector<SnapshotInfo>> Runtime::listSnapshots() {
  auto layout = impl_->layout();
  if (!layout) return std::move(layout).error();
  std::vector<SnapshotInfo> snapshots;
  std::error_code ec;
  for (fs::directory_iterator it(snapshotsDir(*layout), ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string()[0] == '.') continue;  // being written
    if (auto info = loadSnapshotInfo(it->path()); info) snapshots.push_back(std::move(*info));
  }
  std::sort(snapshots.begin(), snapshots.end(),
            [](const SnapshotInfo& a, const SnapshotInfo& b) { return a.created_at < b.created_at; });
  return snapshots;
}

Result<void> Runtime::removeSnapshot(const std::string& name) {
  MICROVM_TRY(checkSnapshotName(name));
  auto layout = impl_->layout();
  if (!layout) return std::move(layout).error();
  fs::path dir = snapshotsDir(*layout) / name;
  if (!fs::exists(dir)) return Error(ErrorCode::kNotFound, "no such snapshot: " + name);
  // VMs restored from it still read its memory state on their first start.
  auto records = VmStore(*layout).list();
  if (records) {
    for (const auto& record : *records) {
      if (record.spec.restore_from == SnapshotPaths::memory(dir).string() && record.state.status == VmStatus::kCreated) {
        return Error(ErrorCode::kInvalidArgument,
                     "snapshot \"" + name + "\" is needed by VM " + record.spec.name + ", which has not started yet");
      }
    }
  }
  return removeTree(dir);
}

}  // namespace microvm
