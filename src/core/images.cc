// Runtime's image commands: pull, images, rmi, image prune, login.
#include "core/images.h"

#include "image/registry_client.h"
#include "core/runtime_impl.h"
#include "state/vm_store.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

PullOptions pullOptions(const RuntimeOptions& settings, const std::string& platform) {
  PullOptions options;
  options.platform = platform;
  options.registry.insecure_registries = settings.insecure_registries;
  options.registry.docker_config = settings.docker_config;
  options.registry.progress = settings.progress;
  options.registry.pull_timeout = settings.pull_timeout;
  options.registry.stall_timeout = settings.pull_stall_timeout;
  return options;
}

ImageInfo toInfo(const ImageRecord& record) {
  ImageInfo info;
  info.reference = record.reference;
  info.digest = record.manifest_digest;
  info.size = record.size;
  info.pulled_at = record.pulled_at;
  info.entrypoint = record.defaults.entrypoint;
  info.cmd = record.defaults.cmd;
  info.env = record.defaults.env;
  info.working_dir = record.defaults.working_dir;
  info.user = record.defaults.user;
  info.exposed_ports = record.exposed_ports;
  return info;
}

}  // namespace

Result<ImageRecord> findOrPullImage(const fs::path& images_dir, const RuntimeOptions& settings,
                                    const std::string& reference, const std::string& platform) {
  ImageStore store(images_dir);
  auto local = store.find(reference);
  if (!local) return std::move(local).error();
  if (*local) return std::move(**local);
  return store.pull(reference, pullOptions(settings, platform));
}

Result<ImageInfo> Runtime::pull(const std::string& reference, const std::string& platform) {
  auto record = ImageStore(impl_->images_dir_).pull(reference, pullOptions(impl_->options_, platform));
  if (!record) return std::move(record).error();
  return toInfo(*record);
}

Result<std::vector<ImageInfo>> Runtime::images() {
  auto records = ImageStore(impl_->images_dir_).list();
  if (!records) return std::move(records).error();
  std::vector<ImageInfo> infos;
  for (const auto& record : *records) infos.push_back(toInfo(record));
  return infos;
}

Result<void> Runtime::removeImage(const std::string& reference, bool force) {
  ImageStore store(impl_->images_dir_);
  auto image = store.find(reference);
  if (!image) return std::move(image).error();
  if (!*image) return Error(ErrorCode::kNotFound, "no such image: " + reference);
  if (!force) {
    // A VM's disk overlays the image's base: removing it would break the VM.
    auto vm_store = impl_->store();
    if (!vm_store) return std::move(vm_store).error();
    auto vms = vm_store->list();
    if (!vms) return std::move(vms).error();
    for (const auto& vm : *vms) {
      if (vm.spec.base_disk == (*image)->base_disk.string()) {
        return Error(ErrorCode::kInvalidArgument, "image " + (*image)->reference + " is used by VM " + vm.spec.name +
                                                      " (remove the VM first, or use -f)");
      }
    }
  }
  return store.remove(reference);
}

Result<uint64_t> Runtime::pruneImages() {
  auto vms = impl_->store();
  if (!vms) return std::move(vms).error();
  // Root disks that this data dir's VMs are made from stay, tagged or not
  // (a --rootfs VM's, an image's removed with rmi -f).
  return ImageStore(impl_->images_dir_).prune([&] {
    std::set<std::string> used;
    if (auto records = vms->list(); records) {
      for (const auto& record : *records) {
        fs::path base = fs::path(record.spec.base_disk).lexically_normal();
        if (base.parent_path().parent_path() == (impl_->images_dir_ / "rootfs").lexically_normal()) {
          used.insert(base.parent_path().filename());
        }
      }
    }
    return used;
  });
}

Result<void> Runtime::login(const std::string& registry, const std::string& username, const std::string& password) {
  if (registry.empty() || username.empty()) {
    return Error(ErrorCode::kInvalidArgument, "login needs a registry and a username");
  }
  return saveCredentials(impl_->options_.docker_config, registry, username, password);
}

}  // namespace microvm
