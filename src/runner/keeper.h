// The runner's privileged keeper: when microvm runs as root, the runner
// forks it before anything else and then gives up root for the VM's runner
// id (runner_confinement.h). The keeper stays root, holds nothing but its
// end of a socket to the runner, and does for it only the few things its id
// may not, each checked against the VM's spec as read while still root:
//
//   - connect a guest's vsock connection to a host unix socket the spec
//     allows ("<vsock.sock>_P" or a --vsock mapping), which may sit in
//     directories or belong to users the runner's id cannot reach;
//   - create a snapshot's files in the snapshot directory the CLI made,
//     and a suspending VM's memory file in its directory's saving dir;
//   - at the end, remove the VM's runtime directory and, for --rm, its
//     directory (both are root's).
//
// Whatever the runner (which parses guest frames) sends is untrusted: a
// request for anything else is refused. The keeper ends when the runner
// says it is finished or goes away.
//
//   auto keeper = Keeper::start(spec, vm_dir);      // before dropping root
//   auto fd = keeper->connect(target);              // Result<UniqueFd>
//   MICROVM_TRY(keeper->finish());
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "microvm/result.h"
#include "state/vm_record.h"

namespace microvm {

// A snapshot's files, created empty by the keeper (SnapshotPaths).
struct SnapshotFiles {
  UniqueFd memory;  // QEMU's device state
  UniqueFd disk;    // the disk overlay's copy
  UniqueFd ram;     // guest RAM, sparse
  UniqueFd network;  // the network stack's state
};

class Keeper {
 public:
  // Forks the keeper. Call while single-threaded.
  static Result<Keeper> start(const VmSpec& spec, const std::filesystem::path& vm_dir);

  Keeper(Keeper&& other) noexcept : socket_(std::move(other.socket_)), pid_(std::exchange(other.pid_, -1)) {}
  Keeper& operator=(Keeper&&) = delete;
  ~Keeper();

  pid_t pid() const { return pid_; }

  // A non-blocking connection to `target`, if the spec allows it.
  Result<UniqueFd> connect(const std::filesystem::path& target);
  // memory.bin and disk.qcow2, created (write-only, 0600) in `dir`, which
  // must be a snapshot being made: <data dir>/snapshots/.tmp-*.
  Result<SnapshotFiles> snapshotFiles(const std::filesystem::path& dir);
  // The memory and RAM files of a suspend (no disk), created (write-only,
  // 0600) in the VM's saving dir (VmPaths::saving), which the CLI made as root.
  Result<SnapshotFiles> savedStateFiles();
  // Removes the runtime directory (and for --rm the VM's directory) and
  // waits for the keeper to exit.
  Result<void> finish();

 private:
  Keeper(UniqueFd socket, pid_t pid) : socket_(std::move(socket)), pid_(pid) {}
  Result<std::vector<UniqueFd>> ask(char op, const std::string& argument, size_t fds);

  UniqueFd socket_;
  pid_t pid_ = -1;
};

// Whether the keeper of a VM with `spec` may connect a guest to `target`: a
// non-listening --vsock mapping's path, or "<vsock.sock>_<port>".
bool keeperMayConnect(const VmSpec& spec, const std::filesystem::path& target);

// Whether `dir` is a snapshot being made in the data dir that holds vm_dir.
bool keeperMayWriteSnapshot(const std::filesystem::path& vm_dir, const std::filesystem::path& dir);

// Whether vm_dir's saving dir is one the CLI made: a real directory of root's.
bool keeperMayWriteSavedState(const std::filesystem::path& vm_dir);

}  // namespace microvm
