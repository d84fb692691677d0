// BlobSource: where an image's manifests and blobs come from, a registry
// (RegistryClient) or a local OCI layout directory (OciLayoutSource). Every
// blob is verified against its digest and size before it is kept.
//
//   auto source = makeSource(reference, options);
//   auto manifest = (*source)->fetchManifest("latest");
//   MICROVM_TRY((*source)->fetchBlob(layer.digest, layer.size, cache_path));
#pragma once

#include <chrono>
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
  std::vector<std::string> insecure_registries;  // plain http; localhost, 127.0.0.0/8 and [::1] always are
  std::filesystem::path docker_config;           // credentials: {"auths": {"host": {"auth": base64}}}
  int max_attempts = 4;                          // for transient failures (5xx, 429, resets, stalls)
  bool progress = false;                         // per-blob progress lines on stderr
  // The whole pull's network time, counted from the client's creation:
  // every request, retry and backoff of the pull. A registry that trickles
  // bytes forever is stopped by this, not by the stall timeout.
  std::chrono::seconds pull_timeout{3600};
  // A request that receives no byte for this long is abandoned (and retried
  // like any transient failure).
  std::chrono::seconds stall_timeout{60};
};

// Caps on one image as a whole, whatever its source: a registry, an OCI
// layout or a docker archive. Each layer is also capped by ExtractLimits,
// but an image of many layers each under that cap must not get past it.
struct ImageLimits {
  uint64_t max_layers = 128;                // Docker's overlay driver stops at 125
  uint64_t max_config_bytes = 32ull << 20;  // checked against the declared size, before downloading
  uint64_t max_download_bytes = 16ull << 30;   // the layers' declared (compressed) sizes, added up
  uint64_t max_extracted_bytes = 32ull << 30;  // file content written by all layers together
  uint64_t max_entries = 2'000'000;            // tar entries of all layers together
};

// "sha256:<64 lowercase hex>" or an error naming the bad digest.
Result<void> checkDigest(const std::string& digest);

}  // namespace microvm
