#include "image/registry_client.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "base/fs.h"
#include "base/hash.h"
#include "base/scope_guard.h"
#include "base/unique_fd.h"
#include "image/curl_api.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

Error curlUnavailable() {
  const std::string& why = libcurlError();
  return Error(ErrorCode::kInternal, why.empty() ? "curl_easy_init failed" : why);
}

constexpr char kManifestTypes[] =
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
constexpr size_t kMaxManifestBytes = 4 * 1024 * 1024;
constexpr size_t kMaxTokenReplyBytes = 1 << 20;
constexpr long kConnectTimeoutSeconds = 15;

std::string base64Encode(const std::string& text) {
  std::string out(4 * ((text.size() + 2) / 3) + 1, '\0');
  // SAFETY: EVP_EncodeBlock reads text.size() bytes and writes at most 4*ceil(n/3)+1 bytes (with the NUL).
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> base64Decode(const std::string& text) {
  if (text.size() % 4 != 0) return Error(ErrorCode::kInvalidArgument, "malformed base64");
  std::string out(text.size() / 4 * 3 + 1, '\0');
  // SAFETY: EVP_DecodeBlock writes 3 bytes per 4 input bytes into a buffer sized for that.
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return Error(ErrorCode::kInvalidArgument, "malformed base64");
  size_t padding = 0;
  for (size_t i = text.size(); i > 0 && text[i - 1] == '='; --i) ++padding;
  if (padding > 2 || padding > static_cast<size_t>(n)) return Error(ErrorCode::kInvalidArgument, "malformed base64");
  out.resize(static_cast<size_t>(n) - padding);
  return out;
}

// A URL as libcurl itself parses it, so that what we check is what curl
// connects to (no second parser to disagree with it).
struct CurlUrl {
  CURLU* handle = libcurl().url();
  ~CurlUrl() { libcurl().url_cleanup(handle); }
  CurlUrl() = default;
  CurlUrl(const CurlUrl&) = delete;
  CurlUrl& operator=(const CurlUrl&) = delete;

  bool set(const std::string& url) {
    return handle && libcurl().url_set(handle, CURLUPART_URL, url.c_str(), CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK;
  }
  bool appendQuery(const std::string& pair) {
    return libcurl().url_set(handle, CURLUPART_QUERY, pair.c_str(), CURLU_APPENDQUERY | CURLU_URLENCODE) == CURLUE_OK;
  }
  std::string part(CURLUPart which) const {
    char* text = nullptr;
    if (libcurl().url_get(handle, which, &text, 0) != CURLUE_OK || !text) return "";
    std::string out = text;
    libcurl().free(text);
    return out;
  }
};

std::string lowerCase(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

// libcurl's whole-request timeout: what is left of the pull's deadline.
long millisecondsUntil(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
  return std::max<long>(1, static_cast<long>(left.count()));
}

// Drops a request that receives nothing for `stall`. libcurl's own
// low-speed check averages over several seconds, so a few early bytes would
// hide a stall from it for that long.
struct StallWatch {
  std::chrono::steady_clock::duration stall;
  std::chrono::steady_clock::time_point last_change = std::chrono::steady_clock::now();
  curl_off_t last_bytes = 0;
  bool stalled = false;
};

// libcurl's progress callback: called about once a second, and on data.
int watchStall(void* user, curl_off_t /*download_total*/, curl_off_t downloaded, curl_off_t /*upload_total*/,
               curl_off_t uploaded) {
  auto* watch = static_cast<StallWatch*>(user);
  auto now = std::chrono::steady_clock::now();
  if (downloaded + uploaded != watch->last_bytes) {
    watch->last_bytes = downloaded + uploaded;
    watch->last_change = now;
    return 0;
  }
  if (now - watch->last_change < watch->stall) return 0;
  watch->stalled = true;
  return 1;  // aborts the transfer
}

// The pull's deadline (what is left of it) and the stall watch, on `curl`.
void applyTimeouts(CURL* curl, std::chrono::steady_clock::time_point deadline, StallWatch& watch) {
  libcurl().easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, kConnectTimeoutSeconds);
  libcurl().easy_setopt(curl, CURLOPT_TIMEOUT_MS, millisecondsUntil(deadline));
  libcurl().easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  libcurl().easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, watchStall);
  libcurl().easy_setopt(curl, CURLOPT_XFERINFODATA, &watch);
  libcurl().easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
}

struct CurlHandle {
  CURL* curl = libcurl().easy_init();
  curl_slist* headers = nullptr;
  ~CurlHandle() {
    libcurl().slist_free_all(headers);
    libcurl().easy_cleanup(curl);
  }
};

// Where a response body goes: a capped string or a file, hashed as it
// streams. Past `limit` bytes the transfer is aborted at once: a blob never
// runs past its declared size on our disk.
struct Sink {
  std::string* text = nullptr;
  int fd = -1;
  Sha256* hasher = nullptr;
  uint64_t bytes = 0;
  uint64_t limit = 0;
  bool failed = false;
};

size_t writeBody(char* data, size_t size, size_t count, void* user) {
  auto* sink = static_cast<Sink*>(user);
  size_t n = size * count;
  sink->bytes += n;
  if (sink->limit && sink->bytes > sink->limit) return 0;  // aborts the transfer
  if (sink->hasher) sink->hasher->update({data, n});
  if (sink->text) sink->text->append(data, n);
  if (sink->fd >= 0 && !writeAll(sink->fd, {data, n})) {
    sink->failed = true;
    return 0;
  }
  return n;
}

struct HeaderCapture {
  std::string content_type;
  std::string authenticate;
  std::string docker_digest;
};

size_t captureHeader(char* data, size_t size, size_t count, void* user) {
  auto* capture = static_cast<HeaderCapture*>(user);
  std::string line(data, size * count);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  size_t colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (name == "content-type") capture->content_type = value.substr(0, value.find(';'));
    if (name == "www-authenticate") capture->authenticate = value;
    if (name == "docker-content-digest") capture->docker_digest = value;
  }
  return size * count;
}

}  // namespace

AuthChallenge parseAuthChallenge(std::string_view header) {
  AuthChallenge challenge;
  size_t space = header.find(' ');
  challenge.scheme = lowerCase(std::string(header.substr(0, space)));
  size_t pos = space == std::string_view::npos ? header.size() : space + 1;
  while (pos < header.size()) {
    size_t equals = header.find('=', pos);
    if (equals == std::string_view::npos) break;
    std::string key(header.substr(pos, equals - pos));
    while (!key.empty() && (key.front() == ' ' || key.front() == ',')) key.erase(0, 1);
    std::string value;
    size_t next = equals + 1;
    if (next < header.size() && header[next] == '"') {
      size_t close = header.find('"', next + 1);
      if (close == std::string_view::npos) break;
      value = header.substr(next + 1, close - next - 1);
      pos = close + 1;
    } else {
      size_t comma = header.find(',', next);
      value = header.substr(next, comma == std::string_view::npos ? std::string_view::npos : comma - next);
      pos = comma == std::string_view::npos ? header.size() : comma;
    }
    challenge.params[lowerCase(key)] = value;
    while (pos < header.size() && (header[pos] == ',' || header[pos] == ' ')) ++pos;
  }
  return challenge;
}

Result<std::string> parseTokenReply(std::string_view body) {
  if (body.size() > kMaxTokenReplyBytes) return Error(ErrorCode::kProtocol, "token reply is too large");
  json reply = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (!reply.is_object()) return Error(ErrorCode::kProtocol, "token reply is not a JSON object");
  for (const char* key : {"token", "access_token"}) {
    auto it = reply.find(key);
    if (it != reply.end() && it->is_string() && !it->get_ref<const std::string&>().empty()) {
      return it->get<std::string>();
    }
  }
  return Error(ErrorCode::kProtocol, "token reply has no token");
}

std::string hostOf(std::string_view registry_or_url) {
  std::string text(registry_or_url);
  // A registry name has no scheme; give it one so that curl parses it as a URL.
  if (text.find("://") == std::string::npos) text = "https://" + text;
  CurlUrl url;
  if (!url.set(text)) return "";
  std::string host = lowerCase(url.part(CURLUPART_HOST));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return host;
}

bool isLoopbackHost(std::string_view host) {
  if (host == "localhost") return true;
  std::string text(host);
  in_addr v4{};
  if (::inet_pton(AF_INET, text.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (::inet_pton(AF_INET6, text.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;
}

bool mayCarryCredentials(std::string_view realm_url, const std::string& registry,
                         const std::vector<std::string>& insecure_registries) {
  CurlUrl url;
  if (!url.set(std::string(realm_url))) return false;
  std::string scheme = lowerCase(url.part(CURLUPART_SCHEME));
  if (url.part(CURLUPART_HOST).empty()) return false;
  if (scheme == "https") return true;
  if (scheme != "http") return false;
  for (const auto& name : insecure_registries) {
    if (name == registry) return true;
  }
  return isLoopbackHost(hostOf(registry)) && isLoopbackHost(hostOf(realm_url));
}

Result<std::pair<std::string, std::string>> parseCredentials(std::string_view config_text, const std::string& registry,
                                                             const std::string& origin) {
  const json config = json::parse(config_text.begin(), config_text.end(), nullptr, /*allow_exceptions=*/false);
  auto auths = config.is_object() ? config.find("auths") : config.end();
  if (!config.is_object() || auths == config.end() || !auths->is_object()) return std::pair<std::string, std::string>();
  for (const auto& key : {registry, "https://" + registry, "http://" + registry,
                          registry == "docker.io" ? std::string("https://index.docker.io/v1/") : registry}) {
    auto entry = auths->find(key);
    if (entry == auths->end() || !entry->is_object()) continue;
    auto auth = entry->find("auth");
    if (auth == entry->end() || !auth->is_string()) continue;
    auto decoded = base64Decode(auth->get<std::string>());
    if (!decoded) return Error(ErrorCode::kInvalidArgument, origin + ": malformed auth for " + key);
    size_t colon = decoded->find(':');
    if (colon == std::string::npos) continue;
    return std::pair(decoded->substr(0, colon), decoded->substr(colon + 1));
  }
  return std::pair<std::string, std::string>();
}

Result<void> checkDigest(const std::string& digest) {
  bool valid = digest.size() == 71 && digest.rfind("sha256:", 0) == 0 &&
               digest.find_first_not_of("0123456789abcdef", 7) == std::string::npos;
  if (!valid) return Error(ErrorCode::kProtocol, "invalid digest \"" + digest.substr(0, 80) + "\"");
  return success();
}

struct RegistryClient::Response {
  long status = 0;
  HeaderCapture headers;
  std::string body;
  std::string digest;  // sha256 of what was received
  uint64_t bytes = 0;
};

RegistryClient::RegistryClient(std::string registry, std::string repository, RegistryOptions options)
    : registry_(std::move(registry)), repository_(std::move(repository)), options_(std::move(options)) {
  static const bool initialized = libcurl().global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  (void)initialized;
  deadline_ = std::chrono::steady_clock::now() + options_.pull_timeout;
  insecure_ = isLoopbackHost(hostOf(registry_));
  for (const auto& name : options_.insecure_registries) insecure_ = insecure_ || name == registry_;
  std::string host = registry_ == "docker.io" ? "registry-1.docker.io" : registry_;
  base_url_ = (insecure_ ? "http://" : "https://") + host + "/v2/" + repository_;
  if (!options_.docker_config.empty()) {
    auto credentials = loadCredentials(options_.docker_config, registry_);
    if (credentials) std::tie(username_, password_) = *credentials;
  }
}

std::string RegistryClient::authorization() {
  std::lock_guard lock(auth_mutex_);
  if (!token_.empty()) return "Authorization: Bearer " + token_;
  if (basic_ && !username_.empty()) return "Authorization: Basic " + base64Encode(username_ + ":" + password_);
  return "";
}

Result<void> RegistryClient::checkDeadline(const std::string& what) const {
  if (std::chrono::steady_clock::now() < deadline_) return success();
  return Error(ErrorCode::kTimeout, what + ": the pull from " + registry_ + " took longer than its limit of " +
                                        std::to_string(options_.pull_timeout.count()) + " s");
}

Error RegistryClient::transferError(const std::string& what, int code, bool stalled) const {
  if (stalled) {
    return Error(ErrorCode::kIo, what + ": stalled, no data for " + std::to_string(options_.stall_timeout.count()) + " s");
  }
  if (code == CURLE_OPERATION_TIMEDOUT) {
    // curl's whole-request timeout is the deadline, rounded to milliseconds.
    if (std::chrono::steady_clock::now() + std::chrono::milliseconds(50) >= deadline_) {
      return Error(ErrorCode::kTimeout, what + ": the pull from " + registry_ + " took longer than its limit of " +
                                            std::to_string(options_.pull_timeout.count()) + " s");
    }
  }
  return Error(ErrorCode::kIo, what + ": " + libcurl().easy_strerror(static_cast<CURLcode>(code)));
}

Result<void> RegistryClient::authenticate(const std::string& header) {
  AuthChallenge challenge = parseAuthChallenge(header);
  auto& params = challenge.params;
  if (challenge.scheme == "basic") {
    if (username_.empty()) {
      return Error(ErrorCode::kUnavailable,
                   registry_ + " requires authentication: run `microvm login " + registry_ + "`");
    }
    std::lock_guard lock(auth_mutex_);
    basic_ = true;
    return success();
  }
  if (challenge.scheme != "bearer" || params["realm"].empty()) {
    return Error(ErrorCode::kProtocol, registry_ + " sent an unusable authentication challenge: " + header.substr(0, 200));
  }
  CurlUrl token_url;
  std::string scope = params.count("scope") ? params["scope"] : "repository:" + repository_ + ":pull";
  if (!token_url.set(params["realm"]) || !token_url.appendQuery("service=" + params["service"]) ||
      !token_url.appendQuery("scope=" + scope)) {
    return Error(ErrorCode::kProtocol, registry_ + " sent an unusable token realm: " + params["realm"].substr(0, 200));
  }
  std::string url = token_url.part(CURLUPART_URL);
  bool with_credentials = !username_.empty();
  // The realm is the registry's to choose, and a hostile or spoofed one
  // would name a plain-http host to read the password off the wire.
  if (with_credentials && !mayCarryCredentials(url, registry_, options_.insecure_registries)) {
    return Error(ErrorCode::kProtocol, registry_ + " asks for its credentials at " + params["realm"].substr(0, 200) +
                                           ": refusing to send them without https (only a registry given with "
                                           "--insecure-registry, or a loopback registry to a loopback realm, may)");
  }
  CurlHandle handle;
  if (!handle.curl) return curlUnavailable();
  std::string body;
  Sink sink{&body, -1, nullptr, 0, kMaxTokenReplyBytes, false};
  libcurl().easy_setopt(handle.curl, CURLOPT_URL, url.c_str());
  libcurl().easy_setopt(handle.curl, CURLOPT_WRITEFUNCTION, writeBody);
  libcurl().easy_setopt(handle.curl, CURLOPT_WRITEDATA, &sink);
  // Credentials never follow a redirect off https: the checked URL is the
  // only one that sees them.
  libcurl().easy_setopt(handle.curl, CURLOPT_PROTOCOLS_STR, "http,https");
  libcurl().easy_setopt(handle.curl, CURLOPT_FOLLOWLOCATION, with_credentials ? 0L : 1L);
  libcurl().easy_setopt(handle.curl, CURLOPT_REDIR_PROTOCOLS_STR, "https");
  StallWatch watch{options_.stall_timeout};
  applyTimeouts(handle.curl, deadline_, watch);
  if (with_credentials) {
    libcurl().easy_setopt(handle.curl, CURLOPT_USERNAME, username_.c_str());
    libcurl().easy_setopt(handle.curl, CURLOPT_PASSWORD, password_.c_str());
  }
  MICROVM_TRY(checkDeadline("get token from " + params["realm"]));
  CURLcode code = libcurl().easy_perform(handle.curl);
  long status = 0;
  libcurl().easy_getinfo(handle.curl, CURLINFO_RESPONSE_CODE, &status);
  if (code == CURLE_WRITE_ERROR && sink.bytes > sink.limit) {
    return Error(ErrorCode::kProtocol, "get token from " + params["realm"] + ": reply larger than " +
                                           std::to_string(kMaxTokenReplyBytes) + " bytes");
  }
  if (code != CURLE_OK) return transferError("get token from " + params["realm"], code, watch.stalled);
  if (status == 401 || status == 403) {
    return Error(ErrorCode::kUnavailable, "authentication to " + registry_ + " failed (HTTP " + std::to_string(status) +
                                              "): check the credentials from `microvm login " + registry_ + "`");
  }
  if (status != 200) return Error(ErrorCode::kIo, "get token from " + params["realm"] + ": HTTP " + std::to_string(status));
  auto token = parseTokenReply(body);
  if (!token) return token.error().withContext("the token service of " + registry_);
  std::lock_guard lock(auth_mutex_);
  token_ = *token;
  return success();
}

Result<RegistryClient::Response> RegistryClient::getOnce(const std::string& url, const std::string& accept,
                                                         const fs::path& sink_path, uint64_t limit) {
  MICROVM_TRY(checkDeadline("GET " + url));
  CurlHandle handle;
  if (!handle.curl) return curlUnavailable();
  Response response;
  Sha256 hasher;
  UniqueFd file;
  if (!sink_path.empty()) {
    file.reset(::open(sink_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!file.valid()) return Error::fromErrno("create " + sink_path.string());
  }
  Sink sink{sink_path.empty() ? &response.body : nullptr, file.get(), &hasher, 0, limit, false};
  if (!accept.empty()) handle.headers = libcurl().slist_append(handle.headers, ("Accept: " + accept).c_str());
  std::string auth = authorization();
  if (!auth.empty()) handle.headers = libcurl().slist_append(handle.headers, auth.c_str());
  libcurl().easy_setopt(handle.curl, CURLOPT_URL, url.c_str());
  libcurl().easy_setopt(handle.curl, CURLOPT_HTTPHEADER, handle.headers);
  libcurl().easy_setopt(handle.curl, CURLOPT_WRITEFUNCTION, writeBody);
  libcurl().easy_setopt(handle.curl, CURLOPT_WRITEDATA, &sink);
  libcurl().easy_setopt(handle.curl, CURLOPT_HEADERFUNCTION, captureHeader);
  libcurl().easy_setopt(handle.curl, CURLOPT_HEADERDATA, &response.headers);
  // Blob downloads redirect to storage; curl does not carry our
  // Authorization header to another host.
  libcurl().easy_setopt(handle.curl, CURLOPT_FOLLOWLOCATION, 1L);
  libcurl().easy_setopt(handle.curl, CURLOPT_PROTOCOLS_STR, "http,https");
  libcurl().easy_setopt(handle.curl, CURLOPT_REDIR_PROTOCOLS_STR, insecure_ ? "http,https" : "https");
  StallWatch watch{options_.stall_timeout};
  applyTimeouts(handle.curl, deadline_, watch);
  CURLcode code = libcurl().easy_perform(handle.curl);
  if (sink.failed) return Error::fromErrno("write " + sink_path.string());
  libcurl().easy_getinfo(handle.curl, CURLINFO_RESPONSE_CODE, &response.status);
  // The body was cut off the moment it ran past the limit. An error page
  // cut short still has its status (and a 401 its challenge), for get().
  bool over_limit = sink.limit && sink.bytes > sink.limit;
  if (over_limit && response.status == 200) {
    return Error(ErrorCode::kProtocol, "GET " + url + ": response larger than " + std::to_string(sink.limit) +
                                           " bytes" + (sink_path.empty() ? "" : ", the size the manifest declares"));
  }
  if (code != CURLE_OK && !over_limit) return transferError("GET " + url, code, watch.stalled);
  response.digest = "sha256:" + hasher.finishHex();
  response.bytes = sink.bytes;
  return response;
}

Result<RegistryClient::Response> RegistryClient::get(const std::string& url, const std::string& accept,
                                                     const fs::path& sink, uint64_t limit) {
  bool authenticated = false;
  for (int attempt = 1;; ++attempt) {
    auto response = getOnce(url, accept, sink, limit);
    // Only network faults and server trouble are worth another try; a
    // response over its size or a pull past its deadline would fail again.
    bool transient = response ? response->status == 429 || response->status >= 500
                              : response.error().code() == ErrorCode::kIo;
    if (response && response->status == 401 && !authenticated) {
      MICROVM_TRY(authenticate(response->headers.authenticate));
      authenticated = true;
      --attempt;  // the challenge round does not count as a failure
      continue;
    }
    auto backoff = std::chrono::milliseconds(200 << (attempt - 1));
    bool no_time_left = std::chrono::steady_clock::now() + backoff >= deadline_;
    if (!transient || attempt >= options_.max_attempts || no_time_left) {
      if (!response) return response;
      if (response->status == 401 || response->status == 403) {
        return Error(ErrorCode::kUnavailable, "GET " + url + ": access denied (HTTP " +
                                                  std::to_string(response->status) + "); check `microvm login " +
                                                  registry_ + "`");
      }
      if (response->status == 404) return Error(ErrorCode::kNotFound, "GET " + url + ": not found");
      if (response->status != 200) {
        return Error(ErrorCode::kIo, "GET " + url + ": HTTP " + std::to_string(response->status));
      }
      return response;
    }
    std::this_thread::sleep_for(backoff);
  }
}

Result<FetchedManifest> RegistryClient::fetchManifest(const std::string& reference) {
  auto response = get(base_url_ + "/manifests/" + reference, kManifestTypes, {}, kMaxManifestBytes);
  if (!response) return std::move(response).error();
  if (reference.rfind("sha256:", 0) == 0 && response->digest != reference) {
    return Error(ErrorCode::kProtocol, "manifest " + reference + " from " + registry_ + " has digest " + response->digest);
  }
  FetchedManifest manifest{std::move(response->body), response->headers.content_type, response->digest};
  if (manifest.media_type.empty() || manifest.media_type == "application/json") {
    json body = json::parse(manifest.body, nullptr, /*allow_exceptions=*/false);
    if (body.is_object()) manifest.media_type = body.value("mediaType", "");
  }
  return manifest;
}

Result<void> RegistryClient::fetchBlob(const std::string& digest, uint64_t size, const fs::path& destination) {
  MICROVM_TRY(checkDigest(digest));
  fs::path temp = destination.string() + ".part." + randomHex(4);
  ScopeGuard remove_temp([&] { ::unlink(temp.c_str()); });
  if (options_.progress) std::fprintf(stderr, "%s: downloading (%.1f MB)\n", digest.substr(7, 12).c_str(), size / 1e6);
  // Never more than the declared size (a limit of 0 would mean none: a
  // zero-byte blob gets 1, and the size check below refuses that byte).
  auto response = get(base_url_ + "/blobs/" + digest, "", temp, size == 0 ? 1 : size);
  if (!response) return std::move(response).error().withContext("blob " + digest);
  if (response->bytes != size) {
    return Error(ErrorCode::kProtocol, "blob " + digest + ": expected " + std::to_string(size) + " bytes, got " +
                                           std::to_string(response->bytes));
  }
  if (response->digest != digest) {
    return Error(ErrorCode::kProtocol, "blob " + digest + ": content has digest " + response->digest);
  }
  if (::rename(temp.c_str(), destination.c_str()) != 0) return Error::fromErrno("rename to " + destination.string());
  remove_temp.dismiss();
  if (options_.progress) std::fprintf(stderr, "%s: done\n", digest.substr(7, 12).c_str());
  return success();
}

Result<std::pair<std::string, std::string>> loadCredentials(const fs::path& docker_config, const std::string& registry) {
  auto text = readFile(docker_config);
  if (!text) return std::pair<std::string, std::string>();
  return parseCredentials(*text, registry, docker_config.string());
}

Result<void> saveCredentials(const fs::path& docker_config, const std::string& registry, const std::string& username,
                             const std::string& password) {
  json config = json::object();
  if (auto text = readFile(docker_config); text) {
    config = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!config.is_object()) return Error(ErrorCode::kInvalidArgument, docker_config.string() + " is not a JSON object");
  }
  config["auths"][registry] = {{"auth", base64Encode(username + ":" + password)}};
  MICROVM_TRY(makeDirs(docker_config.parent_path()));
  return writeFileAtomic(docker_config, config.dump(2) + "\n", 0600);
}

}  // namespace microvm
