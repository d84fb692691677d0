// OciLayoutSource: manifests and blobs from a local OCI image layout
// directory (index.json + blobs/sha256/...), as `oci:PATH[:TAG]` names it.
// Blobs are verified exactly as registry blobs are.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "image/blob_source.h"

namespace microvm {

// The manifest a layout's index.json (its text) names for `reference`: the
// entry whose org.opencontainers.image.ref.name annotation is `reference`,
// or for "" the only entry there is. Gives its digest (checked) and media
// type. `origin` names the file in errors.
struct IndexEntry {
  std::string digest;
  std::string media_type;
};
Result<IndexEntry> selectOciIndexEntry(std::string_view index_json, const std::string& reference,
                                       const std::string& origin);

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
