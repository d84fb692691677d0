// RegistryClient: the distribution v2 API over libcurl: manifests and blobs
// of one repository, anonymous or with credentials, bearer tokens from the
// WWW-Authenticate challenge, retries with backoff on transient failures.
// Everything a registry sends is hostile: a blob may not run past its
// declared size, a request that stalls is dropped, the whole pull has a
// deadline, and credentials go to a token realm only over https (plain http
// only where the user already chose it: a configured insecure registry, or a
// loopback registry whose realm is loopback too).
//
//   RegistryClient client("127.0.0.1:5000", "test/busybox", options);
//   auto manifest = client.fetchManifest("latest");
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

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
  // GET `url` into `sink` (a file), or into the body when `sink` is empty;
  // a response over `limit` bytes is cut off and refused.
  Result<Response> get(const std::string& url, const std::string& accept, const std::filesystem::path& sink,
                       uint64_t limit);
  Result<Response> getOnce(const std::string& url, const std::string& accept, const std::filesystem::path& sink,
                           uint64_t limit);
  Result<void> authenticate(const std::string& challenge);
  std::string authorization();
  Result<void> checkDeadline(const std::string& what) const;
  Error transferError(const std::string& what, int curl_code, bool stalled) const;

  std::string registry_;
  std::string repository_;
  RegistryOptions options_;
  std::string base_url_;
  bool insecure_ = false;  // plain http by the user's choice (or loopback)
  std::chrono::steady_clock::time_point deadline_;
  std::string username_;
  std::string password_;
  std::mutex auth_mutex_;  // layers are fetched in parallel
  std::string token_;      // bearer token, once obtained
  bool basic_ = false;     // the registry asked for basic auth
};

// The parts of a WWW-Authenticate header: `Bearer realm="x",service="y"`
// gives scheme "bearer" (lower case) and the parameters by name.
struct AuthChallenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};
AuthChallenge parseAuthChallenge(std::string_view header);

// The token in a token service's JSON reply ("token", else "access_token").
Result<std::string> parseTokenReply(std::string_view body);

// The host of a registry name or an http(s) URL, lower case, without port,
// user info or brackets: "127.0.0.1:5000" -> "127.0.0.1",
// "http://u@[::1]:80/x" -> "::1".
std::string hostOf(std::string_view registry_or_url);

// Whether `host` (as hostOf() gives it) is this machine by its name or its
// address: "localhost", an IPv4 literal in 127.0.0.0/8, or "::1". Names are
// not resolved, so "127.evil.com" is not loopback.
bool isLoopbackHost(std::string_view host);

// Whether credentials may go to the token realm `realm_url` of `registry`:
// always over https; over http only when `registry` is one of
// `insecure_registries`, or when the registry and the realm are both
// loopback. Anything else (another scheme, no host) never.
bool mayCarryCredentials(std::string_view realm_url, const std::string& registry,
                         const std::vector<std::string>& insecure_registries);

// `registry`'s credentials in the text of a Docker config.json; empty if it
// names none. `origin` names the file in errors.
Result<std::pair<std::string, std::string>> parseCredentials(std::string_view config_text, const std::string& registry,
                                                             const std::string& origin);

// Reads `registry`'s credentials from a Docker config.json; empty if none.
Result<std::pair<std::string, std::string>> loadCredentials(const std::filesystem::path& docker_config,
                                                            const std::string& registry);

// Adds or replaces `registry`'s credentials in a Docker config.json (0600).
Result<void> saveCredentials(const std::filesystem::path& docker_config, const std::string& registry,
                             const std::string& username, const std::string& password);

}  // namespace microvm
