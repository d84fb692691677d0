// DockerArchiveSource: an image from a `docker save` tarball, as
// `docker-archive:PATH[:REPO:TAG]` names it. The archive is read once: its
// config and layers are copied out while being hashed, and a manifest that
// names them by digest is synthesized, so the rest of the pull treats it like
// any other source (and verifies every blob the same way).
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "image/blob_source.h"

namespace microvm {

// The image a docker-archive manifest.json (its text) names for `tag`: the
// entry with that RepoTags entry (also as docker.io/[library/]TAG), or for ""
// the only entry there is. Gives the archive members of its config and its
// layers, in order, as written (not yet resolved).
struct ArchiveImage {
  std::string config;
  std::vector<std::string> layers;
};
Result<ArchiveImage> parseDockerArchiveManifest(std::string_view manifest_json, const std::string& tag);

class DockerArchiveSource : public BlobSource {
 public:
  // `scratch` is an empty directory for the extracted blobs; the caller
  // removes it. `tag` picks an image by its RepoTags entry; "" takes the
  // archive's only image. `limits` caps what is copied out of the archive
  // (its members and their bytes), before the pull checks the image itself.
  static Result<std::unique_ptr<DockerArchiveSource>> open(const std::filesystem::path& archive,
                                                          const std::string& tag, const std::filesystem::path& scratch,
                                                          const ImageLimits& limits = {});

  Result<FetchedManifest> fetchManifest(const std::string& reference) override;
  Result<void> fetchBlob(const std::string& digest, uint64_t size, const std::filesystem::path& destination) override;

 private:
  DockerArchiveSource() = default;
  FetchedManifest manifest_;
  std::map<std::string, std::filesystem::path> blobs_;  // digest -> extracted file
};

}  // namespace microvm
