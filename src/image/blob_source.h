// BlobSource: where an image's manifests and blobs come from, a registry
// (RegistryClient) or a local OCI layout directory (OciLayoutSource). Every
// blob is verified against its digest and size before it is kept.
//
//   auto source = makeSource(reference, options);
//   auto manifest = (*source)->fetchManifest("latest");
//   MICROVM_TRY((*source)->fetchBlob(layer.digest, layer.size, cache_path));
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "microvm/result.h"

namespace microvm {

struct FetchedManifest {
  std::string body;
  std::string media_type;  // from the Content-Type, or the body's mediaType
  std::string digest;      // "sha256:<hex>" of the body
};

class BlobSource {
 public:
  virtual ~BlobSource() = default;
  // `reference` is a tag or a "sha256:..." digest. A digest reference is
  // verified against the body.
  virtual Result<FetchedManifest> fetchManifest(const std::string& reference) = 0;
  // Writes the blob to `destination` (atomically: temp + rename) after
  // checking its size and sha256.
  virtual Result<void> fetchBlob(const std::string& digest, uint64_t size, const std::filesystem::path& destination) = 0;
};

struct RegistryOptions {
  std::vector<std::string> insecure_registries;  // plain http; localhost/127.0.0.1/[::1] always are
  std::filesystem::path docker_config;           // credentials: {"auths": {"host": {"auth": base64}}}
  int max_attempts = 4;                          // for transient failures (5xx, 429, resets)
  bool progress = false;                         // per-blob progress lines on stderr
};

// "sha256:<64 lowercase hex>" or an error naming the bad digest.
Result<void> checkDigest(const std::string& digest);

}  // namespace microvm
