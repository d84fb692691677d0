// Where microvm keeps things on the host.
//
//   $MICROVM_HOME (else $XDG_DATA_HOME/microvm, or /var/lib/microvm for root)
//     images/rootfs/<key>/base.ext4       cached root disks (never written by a VM)
//     vms/<id>/  spec.json state.json ... (the names: base/paths.h)
//   runtime dir (short, for unix sockets, which are limited to 107 bytes):
//     $MICROVM_HOME/run, else $XDG_RUNTIME_DIR/microvm, or /run/microvm for root
//     <short id>/qmp.sock ...
//   cache dir ($XDG_CACHE_HOME/microvm or ~/.cache/microvm): kernels, probe verdicts
#pragma once

#include <filesystem>
#include <string>

#include "base/paths.h"
#include "microvm/result.h"

namespace microvm {

class Layout {
 public:
  // An empty data_dir resolves from the environment as described above.
  static Result<Layout> resolve(const std::filesystem::path& data_dir = {});

  const std::filesystem::path& dataDir() const { return data_dir_; }
  const std::filesystem::path& runtimeDir() const { return runtime_dir_; }
  const std::filesystem::path& cacheDir() const { return cache_dir_; }

  std::filesystem::path vmsDir() const { return data_dir_ / "vms"; }
  std::filesystem::path vmDir(const std::string& id) const { return vmsDir() / id; }
  std::filesystem::path vmRuntimeDir(const std::string& id) const { return runtime_dir_ / id.substr(0, 12); }

 private:
  std::filesystem::path data_dir_;
  std::filesystem::path runtime_dir_;
  std::filesystem::path cache_dir_;
};

// Fails with a clear message if `path` cannot be a unix socket address
// (sun_path holds at most 107 bytes plus the terminator).
Result<void> checkSocketPath(const std::filesystem::path& path);

}  // namespace microvm
