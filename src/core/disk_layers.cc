#include "core/disk_layers.h"

#include <unistd.h>

#include <cerrno>

#include "base/fs.h"
#include "base/hash.h"
#include "base/paths.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// A hard link, or a copy where the file system or its rules refuse one.
Result<void> linkOrCopy(const fs::path& from, const fs::path& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return success();
  if (errno != EXDEV && errno != EPERM && errno != EMLINK) return Error::fromErrno("link " + to.string());
  std::error_code ec;
  fs::copy_file(from, to, ec);
  if (ec) return Error(ErrorCode::kIo, "copy " + from.string() + " to " + to.string() + ": " + ec.message(), ec.value());
  return success();
}

Result<void> linkLayers(const VmSpec& source, const fs::path& from_dir, const fs::path& to_dir) {
  if (source.disk_layers.empty()) return success();
  MICROVM_TRY(makeDirs(to_dir));
  for (const auto& layer : source.disk_layers) {
    fs::path name = fs::path(layer).filename();
    MICROVM_TRY(linkOrCopy(from_dir.empty() ? fs::path(layer) : from_dir / name, to_dir / name));
  }
  return success();
}

}  // namespace

Result<void> checkDiskLayerRoom(const VmSpec& source) {
  if (source.disk_layers.size() < kMaxDiskLayers) return success();
  return Error(ErrorCode::kInvalidArgument,
               "VM " + source.name + "'s disk is already a chain of " + std::to_string(source.disk_layers.size()) +
                   " saved layers, the most a copy may have (each restore or fork adds one); "
                   "copy its files out with `microvm cp` and start afresh");
}

Result<void> keepDiskLayers(const VmSpec& source, const fs::path& saved_dir) {
  return linkLayers(source, {}, SnapshotPaths::diskLayers(saved_dir));
}

Result<std::vector<std::string>> layDiskLayers(const fs::path& saved_dir, const VmSpec& source, const fs::path& vm_dir) {
  fs::path layers_dir = VmPaths(vm_dir).diskLayers();
  MICROVM_TRY(makeDirs(layers_dir));
  MICROVM_TRY(linkLayers(source, SnapshotPaths::diskLayers(saved_dir), layers_dir));
  fs::path top = layers_dir / ("disk-" + randomHex(8) + ".qcow2");
  MICROVM_TRY(linkOrCopy(SnapshotPaths::disk(saved_dir), top));
  std::vector<std::string> layers;
  for (const auto& layer : source.disk_layers) layers.push_back((layers_dir / fs::path(layer).filename()).string());
  layers.push_back(top.string());
  return layers;
}

}  // namespace microvm
