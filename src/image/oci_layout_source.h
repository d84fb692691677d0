// OciLayoutSource: manifests and blobs from a local OCI image layout
// directory (index.json + blobs/sha256/...), as `oci:PATH[:TAG]` names it.
// Blobs are verified exactly as registry blobs are.
#pragma once

#include <filesystem>

#include "image/blob_source.h"

namespace microvm {

class OciLayoutSource : public BlobSource {
 public:
  explicit OciLayoutSource(std::filesystem::path root) : root_(std::move(root)) {}

  // A tag is looked up by the org.opencontainers.image.ref.name annotation
  // in index.json; "" picks the only manifest there is.
  Result<FetchedManifest> fetchManifest(const std::string& reference) override;
  Result<void> fetchBlob(const std::string& digest, uint64_t size, const std::filesystem::path& destination) override;

 private:
  std::filesystem::path blobPath(const std::string& digest) const;
  std::filesystem::path root_;
};

}  // namespace microvm
