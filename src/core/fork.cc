// `fork`: a running VM saved once and resumed as N children, which continue
// from the instant of the save while the parent runs on. The save is a
// snapshot's (memory, devices, disk) in a private directory that goes once
// every child's runner has read it; the saved disk stays as the frozen
// layer under every child's own overlay (core/disk_layers.h).
#include "base/fs.h"
#include "base/hash.h"
#include "base/paths.h"
#include "base/scope_guard.h"
#include "core/disk_layers.h"
#include "core/runtime_impl.h"
#include "core/snapshot_checks.h"
#include "microvm/runtime.h"
#include "runner/control.h"
#include "state/vm_store.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

constexpr int kMaxForkCount = 64;

}  // namespace

Result<std::vector<VmHandle>> Runtime::fork(const std::string& reference, int count, const std::string& name_prefix) {
  if (count < 1 || count > kMaxForkCount) {
    return Error(ErrorCode::kInvalidArgument,
                 "fork count " + std::to_string(count) + " is out of range (1 to " + std::to_string(kMaxForkCount) + ")");
  }
  auto layout = impl_->layout();
  if (!layout) return std::move(layout).error();
  VmStore store(*layout);
  auto parent = store.find(reference);
  if (!parent) return std::move(parent).error();
  if (!isActive(*parent)) return Error(ErrorCode::kInvalidArgument, "VM " + parent->spec.name + " is not running");
  MICROVM_TRY(checkCanSnapshot(parent->spec));
  MICROVM_TRY(checkDiskLayerRoom(parent->spec));
  MICROVM_TRY(waitForWorkload(*parent));
  std::vector<std::string> names;
  for (int i = 1; i <= count; ++i) {
    std::string name = name_prefix.empty() ? "" : name_prefix + "-" + std::to_string(i);
    // Taken names fail before the parent is paused for nothing.
    if (!name.empty() && store.find(name)) return Error(ErrorCode::kAlreadyExists, "a VM named " + name + " exists");
    names.push_back(name);
  }

  // Named as a snapshot being made: the only place the runner's keeper writes one.
  fs::path saved = SnapshotPaths(layout->dataDir()).dir() / (std::string(SnapshotPaths::kTempPrefix) + "fork-" + randomHex(8));
  MICROVM_TRY(makeDirs(saved));
  ScopeGuard remove_saved([&] { (void)removeTree(saved); });
  MICROVM_TRY(sendRunnerRequest(runnerSocket(*parent), SnapshotRequest{saved}));
  MICROVM_TRY(keepDiskLayers(parent->spec, saved));

  std::vector<std::string> ids;
  for (const auto& name : names) {
    auto id = createRestoredVm(*layout, saved, parent->spec, name, false, "forked from VM " + parent->spec.name);
    if (!id) return std::move(id).error().withContext("fork child " + std::to_string(ids.size() + 1));
    ids.push_back(std::move(*id));
  }
  // All at once: each returns once its runner has loaded the state, and
  // the saved directory goes only after the last.
  return startDetached(ids);
}

}  // namespace microvm
