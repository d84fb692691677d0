#include "state/vm_store.h"

#include <fcntl.h>
#include <sys/file.h>

#include <algorithm>

#include "base/fs.h"
#include "base/paths.h"
#include "base/scope_guard.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

bool isHexId(const std::string& text) {
  return !text.empty() && text.size() <= 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

}  // namespace

Result<VmRecord> VmStore::load(const std::string& id) const {
  VmRecord record;
  record.dir = layout_.vmDir(id);
  auto spec = loadSpec(record.dir);
  if (!spec) return std::move(spec).error();
  record.spec = std::move(*spec);
  if (!fs::exists(record.dir / VmFiles::kState)) return record;  // created, or a run cut short before boot

  // Nothing here may hide a VM from `ps -a` or keep `rm` from it: not a
  // full disk (the lock file cannot be made, the corrected state cannot be
  // saved), not an unreadable state.json. state.json is replaced by rename,
  // so reading it without the lock still sees a whole file.
  auto lock = StateLock::acquire(record.dir);
  auto state = loadState(record.dir);
  if (!state) {
    record.state.status = VmStatus::kExited;
    record.state.error = "its state cannot be read: " + state.error().message();
    return record;
  }
  record.state = std::move(*state);
  bool active = record.state.status == VmStatus::kRunning || record.state.status == VmStatus::kPaused;
  if (active && !runnerAlive(record.state)) {
    // The runner died without recording an end (SIGKILL, OOM): QEMU died
    // with it (PR_SET_PDEATHSIG), so the VM is over. Say so, once.
    record.state.status = VmStatus::kExited;
    record.state.exit_code = 137;
    record.state.error = "the VM's runner (pid " + std::to_string(record.state.runner_pid) + ") died unexpectedly";
    record.state.finished_at = nowRfc3339();
    // Said once if it can be saved; if not (a full disk), said each time.
    if (lock) (void)saveState(record.dir, record.state);
  }
  return record;
}

Result<std::vector<VmRecord>> VmStore::list() const {
  std::vector<VmRecord> records;
  std::error_code ec;
  for (fs::directory_iterator it(layout_.vmsDir(), ec), end; !ec && it != end; it.increment(ec)) {
    std::string id = it->path().filename();
    if (!isHexId(id)) continue;
    auto record = load(id);
    if (record) records.push_back(std::move(*record));  // half-written entries are skipped, not fatal
  }
  std::sort(records.begin(), records.end(),
            [](const VmRecord& a, const VmRecord& b) { return a.spec.created_at < b.spec.created_at; });
  return records;
}

Result<VmRecord> VmStore::find(const std::string& reference) const {
  if (reference.empty()) return Error(ErrorCode::kInvalidArgument, "empty VM reference");
  if (isHexId(reference) && reference.size() == 64 && fs::exists(layout_.vmDir(reference))) return load(reference);
  auto records = list();
  if (!records) return std::move(records).error();
  for (auto& record : *records) {
    if (record.spec.name == reference) return std::move(record);
  }
  std::vector<VmRecord*> matches;
  if (isHexId(reference)) {
    for (auto& record : *records) {
      if (record.spec.id.rfind(reference, 0) == 0) matches.push_back(&record);
    }
  }
  if (matches.size() == 1) return std::move(*matches[0]);
  if (matches.size() > 1) {
    return Error(ErrorCode::kInvalidArgument, "VM reference \"" + reference + "\" is ambiguous: it matches " +
                                                  std::to_string(matches.size()) + " VMs");
  }
  return Error(ErrorCode::kNotFound, "no such VM: " + reference);
}

Result<void> VmStore::checkNameFree(const std::string& name) const {
  auto records = list();
  if (!records) return std::move(records).error();
  for (const auto& record : *records) {
    if (record.spec.name == name) {
      return Error(ErrorCode::kAlreadyExists, "the name \"" + name + "\" is already in use by VM " +
                                                  record.spec.id.substr(0, 12) + "; remove it or pick another name");
    }
  }
  return success();
}

Result<void> VmStore::add(const VmSpec& spec, bool name_chosen,
                          const std::function<Result<void>(const fs::path& vm_dir)>& populate) const {
  // The name check and the VM's appearance happen under one lock, so two
  // concurrent creates cannot both take a name.
  auto names = lockNames();
  if (!names) return std::move(names).error();
  if (name_chosen) MICROVM_TRY(checkNameFree(spec.name));
  fs::path vm_dir = layout_.vmDir(spec.id);
  MICROVM_TRY(makeDirs(vm_dir));
  ScopeGuard remove_vm([&] { (void)removeTree(vm_dir); });
  MICROVM_TRY(populate(vm_dir));
  MICROVM_TRY(saveSpec(vm_dir, spec));
  remove_vm.dismiss();
  return success();
}

Result<UniqueFd> VmStore::lockNames() const {
  MICROVM_TRY(makeDirs(layout_.vmsDir()));
  fs::path path = layout_.vmsDir() / ".names.lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Error::fromErrno("lock " + path.string());
  }
  return fd;
}

}  // namespace microvm
