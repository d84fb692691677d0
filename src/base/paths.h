// The names of everything microvm keeps on disk, in one place.
//
//   <data dir>/vms/<id>/                 VmPaths
//     spec.json state.json state.lock    the plan the runner runs; its state (state/vm_record.h)
//     disk.qcow2 initramfs.cpio          the VM's overlay; its own initramfs (rootfs hooks)
//     workload.log console.log runner.log
//     saved/{memory.bin,seal.json}       a suspended VM's memory and devices (made in .saving/)
//   <runtime dir>/<short id>/            VmSockets (unix socket paths: 107 bytes at most)
//     runner.sock qmp.sock vsock.sock vsock.sock_<port> vhost-vsock.sock
//   <data dir>/images/                   ImagePaths
//     store.lock blobs/sha256/<hex> rootfs/<key>/{base.ext4,image.json}
//   <data dir>/snapshots/<name>/          SnapshotPaths: memory.bin memory.ram disk.qcow2 snapshot.json seal.json
//
// Where the data, runtime and cache dirs are is state/layout.h's job; this
// header only names what is inside them, so that every reader and writer of a
// file agrees on its name. The runner, which works inside a VM's directory,
// uses the bare names (VmFiles).
//
// Usage:
//   auto log = RotatingFile::open(VmPaths(vm_dir).workloadLog(), rotation);
//   auto client = agent::AgentClient::viaVsock(VmSockets(spec.runtime_dir).vsock());
#pragma once

#include <filesystem>
#include <string>

namespace microvm {

// File names inside a VM's directory and its runtime directory.
struct VmFiles {
  static constexpr const char* kSpec = "spec.json";
  static constexpr const char* kState = "state.json";
  static constexpr const char* kStateLock = "state.lock";
  static constexpr const char* kDisk = "disk.qcow2";
  // Frozen qcow2 layers under the disk (VmSpec::disk_layers), hard links
  // shared with the snapshots and VMs of one chain.
  static constexpr const char* kDiskLayers = "layers";
  static constexpr const char* kInitramfs = "initramfs.cpio";
  static constexpr const char* kWorkloadLog = "workload.log";
  static constexpr const char* kConsoleLog = "console.log";
  static constexpr const char* kRunnerLog = "runner.log";
  static constexpr const char* kSaved = "saved";
  static constexpr const char* kSaving = ".saving";
  static constexpr const char* kRunnerSocket = "runner.sock";
  static constexpr const char* kQmpSocket = "qmp.sock";
  static constexpr const char* kVsockSocket = "vsock.sock";
  static constexpr const char* kVhostVsockSocket = "vhost-vsock.sock";
};

// A VM's sockets, in its short runtime directory.
class VmSockets {
 public:
  explicit VmSockets(std::filesystem::path runtime_dir) : dir_(std::move(runtime_dir)) {}

  const std::filesystem::path& dir() const { return dir_; }
  // The runner's control surface (runner/control.h).
  std::filesystem::path runner() const { return dir_ / VmFiles::kRunnerSocket; }
  std::filesystem::path qmp() const { return dir_ / VmFiles::kQmpSocket; }
  // The hybrid-vsock base socket: host clients connect here and send
  // "CONNECT <port>\n"; guest port P without a mapping goes to "<it>_P".
  std::filesystem::path vsock() const { return dir_ / VmFiles::kVsockSocket; }
  // Where QEMU's vhost-user-vsock device meets the runner.
  std::filesystem::path vhostVsock() const { return dir_ / VmFiles::kVhostVsockSocket; }

 private:
  std::filesystem::path dir_;
};

// A VM's files, in <data dir>/vms/<id>.
class VmPaths {
 public:
  explicit VmPaths(std::filesystem::path vm_dir) : vm_dir_(std::move(vm_dir)) {}

  const std::filesystem::path& dir() const { return vm_dir_; }
  std::filesystem::path spec() const { return vm_dir_ / VmFiles::kSpec; }
  std::filesystem::path state() const { return vm_dir_ / VmFiles::kState; }
  std::filesystem::path stateLock() const { return vm_dir_ / VmFiles::kStateLock; }
  std::filesystem::path disk() const { return vm_dir_ / VmFiles::kDisk; }
  std::filesystem::path diskLayers() const { return vm_dir_ / VmFiles::kDiskLayers; }
  std::filesystem::path initramfs() const { return vm_dir_ / VmFiles::kInitramfs; }
  std::filesystem::path workloadLog() const { return vm_dir_ / VmFiles::kWorkloadLog; }
  std::filesystem::path consoleLog() const { return vm_dir_ / VmFiles::kConsoleLog; }
  std::filesystem::path runnerLog() const { return vm_dir_ / VmFiles::kRunnerLog; }
  // A suspended VM's saved state: memory.bin (QEMU's migration stream) and
  // seal.json (core/snapshot_checks.h). `suspend` writes both into saving()
  // and renames it to saved() once whole, so saved() is never half written.
  std::filesystem::path saved() const { return vm_dir_ / VmFiles::kSaved; }
  std::filesystem::path savedMemory() const { return saved() / "memory.bin"; }
  std::filesystem::path savedRam() const { return saved() / "memory.ram"; }
  std::filesystem::path savedNetwork() const { return saved() / "network.state"; }
  std::filesystem::path savedSeal() const { return saved() / "seal.json"; }
  std::filesystem::path saving() const { return vm_dir_ / VmFiles::kSaving; }

 private:
  std::filesystem::path vm_dir_;
};

// Inside the image store (<data dir>/images, or --image-dir).
class ImagePaths {
 public:
  explicit ImagePaths(std::filesystem::path images_dir) : dir_(std::move(images_dir)) {}
  // Where the store is unless --image-dir says otherwise.
  static ImagePaths inDataDir(const std::filesystem::path& data_dir) { return ImagePaths(data_dir / "images"); }

  const std::filesystem::path& dir() const { return dir_; }
  // Shared by pulls, builds and creates; exclusive for prune.
  std::filesystem::path storeLock() const { return dir_ / "store.lock"; }
  std::filesystem::path blobsDir() const { return dir_ / "blobs" / "sha256"; }
  // `digest` is "sha256:<hex>", already validated.
  std::filesystem::path blob(const std::string& digest) const { return blobsDir() / digest.substr(7); }
  std::filesystem::path rootfsDir() const { return dir_ / "rootfs"; }

  // Inside one root disk's directory (rootfs/<key>).
  static std::filesystem::path baseDisk(const std::filesystem::path& entry) { return entry / "base.ext4"; }
  static std::filesystem::path imageRecord(const std::filesystem::path& entry) { return entry / "image.json"; }

 private:
  std::filesystem::path dir_;
};

// Snapshots: <data dir>/snapshots/<name>, made in a ".tmp-<name>-<hex>"
// sibling and renamed into place once complete.
class SnapshotPaths {
 public:
  static constexpr const char* kTempPrefix = ".tmp-";

  explicit SnapshotPaths(const std::filesystem::path& data_dir) : dir_(data_dir / "snapshots") {}

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path snapshot(const std::string& name) const { return dir_ / name; }

  // Inside one snapshot's directory.
  static std::filesystem::path memory(const std::filesystem::path& snapshot) { return snapshot / "memory.bin"; }
  // Guest RAM itself, sparse (memory.bin then holds only the device state).
  static std::filesystem::path ram(const std::filesystem::path& snapshot) { return snapshot / "memory.ram"; }
  // The network stack's own state (net/slirp_state.h); empty: none saved.
  static std::filesystem::path network(const std::filesystem::path& snapshot) { return snapshot / "network.state"; }
  static std::filesystem::path disk(const std::filesystem::path& snapshot) { return snapshot / VmFiles::kDisk; }
  // The source VM's frozen disk layers (VmSpec::disk_layers), by file name.
  static std::filesystem::path diskLayers(const std::filesystem::path& snapshot) {
    return snapshot / VmFiles::kDiskLayers;
  }
  // The source VM's spec, and what the snapshot is of (core/snapshots.cc).
  static std::filesystem::path spec(const std::filesystem::path& snapshot) { return snapshot / VmFiles::kSpec; }
  static std::filesystem::path meta(const std::filesystem::path& snapshot) { return snapshot / "snapshot.json"; }
  // What the memory file needs and its checksum (core/snapshot_checks.h).
  static std::filesystem::path seal(const std::filesystem::path& snapshot) { return snapshot / "seal.json"; }

 private:
  std::filesystem::path dir_;
};

// Boot templates: <data dir>/templates/<key>, each a guest saved where init
// waits for its spec (core/templates.h). A runner saves one into a
// ".tmp-<key>-<vm id>" sibling; the next run that wants it seals it and
// renames it into place.
class TemplatePaths {
 public:
  static constexpr const char* kTempPrefix = ".tmp-";

  // `templates_dir` holds the templates: <data dir>/templates unless
  // RuntimeOptions::template_dir says otherwise.
  explicit TemplatePaths(std::filesystem::path templates_dir) : dir_(std::move(templates_dir)) {}
  static TemplatePaths inDataDir(const std::filesystem::path& data_dir) { return TemplatePaths(data_dir / "templates"); }

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path entry(const std::string& key) const { return dir_ / key; }

  // Inside one template's directory: the files of a snapshot's memory
  // (SnapshotPaths::memory, ram, seal), what it was made from, and the
  // runner's mark that it saved both memory files whole.
  static std::filesystem::path memory(const std::filesystem::path& entry) { return entry / "memory.bin"; }
  static std::filesystem::path ram(const std::filesystem::path& entry) { return entry / "memory.ram"; }
  static std::filesystem::path seal(const std::filesystem::path& entry) { return entry / "seal.json"; }
  static std::filesystem::path meta(const std::filesystem::path& entry) { return entry / "template.json"; }
  static std::filesystem::path saved(const std::filesystem::path& entry) { return entry / "saved"; }
  // In a staging directory: the directory of the VM whose runner saves it.
  static std::filesystem::path saver(const std::filesystem::path& staging) { return staging / "saver"; }

 private:
  std::filesystem::path dir_;
};

}  // namespace microvm
