// RegistryClient: the distribution v2 API over libcurl: manifests and blobs
// of one repository, anonymous or with credentials, bearer tokens from the
// WWW-Authenticate challenge, retries with backoff on transient failures.
//
//   RegistryClient client("127.0.0.1:5000", "test/busybox", options);
//   auto manifest = client.fetchManifest("latest");
#pragma once

#include <mutex>
#include <string>

#include "image/blob_source.h"

namespace microvm {

class RegistryClient : public BlobSource {
 public:
  RegistryClient(std::string registry, std::string repository, RegistryOptions options);

  Result<FetchedManifest> fetchManifest(const std::string& reference) override;
  Result<void> fetchBlob(const std::string& digest, uint64_t size, const std::filesystem::path& destination) override;

  // The base URL: http:// for loopback and insecure registries, else https://.
  const std::string& baseUrl() const { return base_url_; }

 private:
  struct Response;
  Result<Response> get(const std::string& url, const std::string& accept, const std::filesystem::path& sink);
  Result<Response> getOnce(const std::string& url, const std::string& accept, const std::filesystem::path& sink);
  Result<void> authenticate(const std::string& challenge);
  std::string authorization();

  std::string registry_;
  std::string repository_;
  RegistryOptions options_;
  std::string base_url_;
  std::string username_;
  std::string password_;
  std::mutex auth_mutex_;  // layers are fetched in parallel
  std::string token_;      // bearer token, once obtained
  bool basic_ = false;     // the registry asked for basic auth
};

// Reads `registry`'s credentials from a Docker config.json; empty if none.
Result<std::pair<std::string, std::string>> loadCredentials(const std::filesystem::path& docker_config,
                                                            const std::string& registry);

// Adds or replaces `registry`'s credentials in a Docker config.json (0600).
Result<void> saveCredentials(const std::filesystem::path& docker_config, const std::string& registry,
                             const std::string& username, const std::string& password);

}  // namespace microvm
