// A container's record under the runtime's --root: ROOT/ID/ holds state.json
// (bundle, VM id, the supervisor's pid and start time, annotations), the
// start fifo the supervisor waits on between `create` and `start`, and the
// VM's microvm data dir (ROOT/.vm/HASH, short: socket paths live there).
// ROOT/.vm/images and ROOT/.vm/templates are caches all containers share.
//
// The supervisor is the process whose pid the engine gets (--pid-file): it
// lives exactly as long as the workload, exits with its code, and forwards
// the signals it receives to it (oci/commands.cc).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "microvm/result.h"

namespace microvm::oci {

struct ContainerState {
  std::string id;
  std::string bundle;
  std::string vm_id;
  std::string oci_version;
  std::string created;        // RFC 3339
  std::string netns;          // the engine's network namespace the runner joins ("" none)
  pid_t pid = 0;              // the supervisor
  unsigned long long pid_start = 0;  // its start time (/proc/PID/stat), against pid reuse
  std::map<std::string, std::string> annotations;
};

class ContainerDir {
 public:
  ContainerDir(std::filesystem::path root, std::string id) : root_(std::move(root)), id_(std::move(id)) {}

  const std::string& id() const { return id_; }
  std::filesystem::path dir() const { return root_ / id_; }
  std::filesystem::path stateFile() const { return dir() / "state.json"; }
  std::filesystem::path startFifo() const { return dir() / "start.fifo"; }
  std::filesystem::path startedMark() const { return dir() / "started"; }
  std::filesystem::path startError() const { return dir() / "start-error"; }
  // The VM's microvm data dir: short (unix socket paths live under it, and
  // engines' ids are 64 characters), named by a hash of the id.
  std::filesystem::path dataDir() const;
  // ROOT/.vm: beside the containers' data dirs, the images (root disks) and
  // boot templates they share.
  std::filesystem::path sharedCacheDir() const { return root_ / ".vm"; }
  bool exists() const;

  Result<ContainerState> load() const;
  Result<void> save(const ContainerState& state) const;
  // "created", "running" or "stopped" (runtime-spec's statuses).
  std::string status(const ContainerState& state) const;

 private:
  std::filesystem::path root_;
  std::string id_;
};

// Container ids are one path component: [A-Za-z0-9][A-Za-z0-9_.+-]{0,255}.
Result<void> checkContainerId(const std::string& id);
// Ids of every container under root, sorted.
std::vector<std::string> listContainers(const std::filesystem::path& root);

// runtime-spec's state JSON.
std::string stateJson(const ContainerState& state, const std::string& status);

// Host helpers.
unsigned long long processStartTime(pid_t pid);  // 0: no such process, or a zombie
bool processAlive(pid_t pid, unsigned long long start_time);
Result<void> writeFileAtomic(const std::filesystem::path& path, const std::string& content);
Result<std::string> readFileBounded(const std::filesystem::path& path, size_t max_bytes);
// "KILL", "SIGKILL", "9" → 9.
Result<int> parseSignal(const std::string& text);
std::string nowRfc3339();

// A pty pair; the master goes to the engine's console socket (SCM_RIGHTS).
struct Pty {
  int master = -1;
  int slave = -1;
};
Result<Pty> openPty();
Result<void> sendConsole(const std::filesystem::path& socket_path, int master_fd);

}  // namespace microvm::oci
