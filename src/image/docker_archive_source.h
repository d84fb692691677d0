// DockerArchiveSource: an image from a `docker save` tarball, as
// `docker-archive:PATH[:REPO:TAG]` names it. The archive is read once: its
// config and layers are copied out while being hashed, and a manifest that
// names them by digest is synthesized, so the rest of the pull treats it like
// any other source (and verifies every blob the same way).
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "image/blob_source.h"

namespace microvm {

class DockerArchiveSource : public BlobSource {
 public:
  // `scratch` is an empty directory for the extracted blobs; the caller
  // removes it. `tag` picks an image by its RepoTags entry; "" takes the
  // archive's only image.
  static Result<std::unique_ptr<DockerArchiveSource>> open(const std::filesystem::path& archive,
                                                          const std::string& tag, const std::filesystem::path& scratch);

  Result<FetchedManifest> fetchManifest(const std::string& reference) override;
  Result<void> fetchBlob(const std::string& digest, uint64_t size, const std::filesystem::path& destination) override;

 private:
  DockerArchiveSource() = default;
  FetchedManifest manifest_;
  std::map<std::string, std::filesystem::path> blobs_;  // digest -> extracted file
};

}  // namespace microvm
