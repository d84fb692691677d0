// ImageStore: pulled images, content-addressed under <data dir>/images/:
//   blobs/sha256/<hex>                 manifests, configs and layers, verified
//   rootfs/<manifest hex>/base.ext4    the root disk built from the layers
//   rootfs/<manifest hex>/image.json   reference, digests, config, size
//   refs.json                          reference -> manifest digest
// Every write is temp + rename; per-blob and per-image locks make two
// concurrent pulls of one image download and build it once. store.lock keeps
// prune from what is being made: pulls, root-disk builds and creates hold it
// shared (hold()), prune exclusive, so prune waits for them and they for it.
//
//   ImageStore store(layout.dataDir() / "images");
//   auto image = store.pull("127.0.0.1:5000/test/busybox", {});
//   use(image->base_disk, image->defaults);
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/unique_fd.h"

#include "image/blob_source.h"
#include "image/manifest.h"
#include "image/workload_config.h"

namespace microvm {

struct ImageRecord {
  std::string reference;        // normalized: docker.io/library/busybox:latest
  std::string manifest_digest;  // sha256:...
  std::string config_digest;
  ImageDefaults defaults;  // Entrypoint, Cmd, Env, WorkingDir, User
  std::vector<std::string> exposed_ports;
  std::filesystem::path base_disk;
  uint64_t size = 0;  // bytes of file content in the image
  std::string pulled_at;
};

struct PullOptions {
  std::string platform = "linux/amd64";
  RegistryOptions registry;  // its pull_timeout bounds the pull's network time
  ImageLimits limits;        // checked before anything is downloaded, and while layers are applied
};

// Refuses a manifest whose image is over `limits`: too many layers, a config
// or layers declared larger than allowed. Nothing has been downloaded yet.
Result<void> checkImageLimits(const ImageManifest& manifest, const ImageLimits& limits);

class ImageStore {
 public:
  explicit ImageStore(std::filesystem::path images_dir) : dir_(std::move(images_dir)) {}

  // Fetches (what is missing of) the image and builds its root disk.
  // References: registry images (busybox, host:port/repo:tag, repo@sha256:..)
  // and local OCI layouts (oci:PATH[:TAG]).
  Result<ImageRecord> pull(const std::string& reference, const PullOptions& options);
  // The local image for `reference`, without any network; nullopt if absent.
  Result<std::optional<ImageRecord>> find(const std::string& reference) const;
  // Gives a stored image another reference (an image fetcher's result under
  // the name it was asked for); returns the record under that name.
  Result<ImageRecord> tag(const std::string& reference, const ImageRecord& image);
  Result<std::vector<ImageRecord>> list() const;
  // Drops the tag; the image's files go when no tag is left.
  Result<void> remove(const std::string& reference);
  // Removes blobs and root disks no tag refers to, nor `in_use` (names of
  // rootfs/ entries; called once prune holds the store, so that what it
  // names is current); returns the bytes freed. Waits for every hold.
  Result<uint64_t> prune(const std::function<std::set<std::string>()>& in_use = {});

  // A shared hold on the store at `images_dir` for as long as the fd is
  // open: prune waits until it is closed. Blocks while a prune runs.
  static Result<UniqueFd> hold(const std::filesystem::path& images_dir);

 private:
  std::filesystem::path dir_;
};

}  // namespace microvm
