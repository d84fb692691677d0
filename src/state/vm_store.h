// VmStore: the set of VMs in a data dir. Finds a VM by full id, unique id
// prefix or name; lists them; and reconciles the record of a VM whose runner
// died without saying so (SIGKILL, OOM, host crash), so that `ps` tells the
// truth and `rm` can clean up.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "state/layout.h"
#include "state/vm_record.h"

namespace microvm {

struct VmRecord {
  std::filesystem::path dir;
  VmSpec spec;
  VmState state;
};

class VmStore {
 public:
  explicit VmStore(Layout layout) : layout_(std::move(layout)) {}

  const Layout& layout() const { return layout_; }

  // Every VM with a readable spec, oldest first, states reconciled.
  Result<std::vector<VmRecord>> list() const;

  // Full id, a unique prefix of one, or a name.
  Result<VmRecord> find(const std::string& reference) const;

  // Fails if another VM already has `name` (to be called under lockNames()).
  Result<void> checkNameFree(const std::string& name) const;

  // Serializes name checks against VM creation across processes.
  Result<UniqueFd> lockNames() const;

  // Makes a new VM's directory: under the names lock, checks that a chosen
  // name is free, creates vms/<id>/, lets `populate` put the disk there, and
  // writes spec.json last. On any failure nothing is left behind.
  Result<void> add(const VmSpec& spec, bool name_chosen,
                   const std::function<Result<void>(const std::filesystem::path& vm_dir)>& populate) const;

  // Loads one VM's records and reconciles a dead runner.
  Result<VmRecord> load(const std::string& id) const;

 private:
  Layout layout_;
};

}  // namespace microvm
