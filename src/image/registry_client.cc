#include "image/registry_client.h"

#include <curl/curl.h>
#include <fcntl.h>
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

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr char kManifestTypes[] =
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
constexpr size_t kMaxManifestBytes = 4 * 1024 * 1024;

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
  out.resize(static_cast<size_t>(n) - padding);
  return out;
}

bool isLoopback(const std::string& registry) {
  std::string host = registry.front() == '[' ? registry.substr(0, registry.find(']') + 1)
                                             : registry.substr(0, registry.find(':'));
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

// Parses `Bearer realm="x",service="y",scope="z"` into its parameters.
std::map<std::string, std::string> parseChallenge(const std::string& header, std::string& scheme) {
  std::map<std::string, std::string> params;
  size_t space = header.find(' ');
  scheme = header.substr(0, space);
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t pos = space == std::string::npos ? header.size() : space + 1;
  while (pos < header.size()) {
    size_t equals = header.find('=', pos);
    if (equals == std::string::npos) break;
    std::string key = header.substr(pos, equals - pos);
    while (!key.empty() && (key.front() == ' ' || key.front() == ',')) key.erase(0, 1);
    std::string value;
    size_t next = equals + 1;
    if (next < header.size() && header[next] == '"') {
      size_t close = header.find('"', next + 1);
      if (close == std::string::npos) break;
      value = header.substr(next + 1, close - next - 1);
      pos = close + 1;
    } else {
      size_t comma = header.find(',', next);
      value = header.substr(next, comma == std::string::npos ? std::string::npos : comma - next);
      pos = comma == std::string::npos ? header.size() : comma;
    }
    params[key] = value;
    while (pos < header.size() && (header[pos] == ',' || header[pos] == ' ')) ++pos;
  }
  return params;
}

std::string urlEncode(CURL* curl, const std::string& text) {
  char* encoded = curl_easy_escape(curl, text.c_str(), static_cast<int>(text.size()));
  std::string out = encoded ? encoded : "";
  curl_free(encoded);
  return out;
}

struct CurlHandle {
  CURL* curl = curl_easy_init();
  curl_slist* headers = nullptr;
  ~CurlHandle() {
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
  }
};

// Where a response body goes: a capped string or a file, hashed as it streams.
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
  static const bool initialized = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
  (void)initialized;
  bool insecure = isLoopback(registry_);
  for (const auto& name : options_.insecure_registries) insecure = insecure || name == registry_;
  std::string host = registry_ == "docker.io" ? "registry-1.docker.io" : registry_;
  base_url_ = (insecure ? "http://" : "https://") + host + "/v2/" + repository_;
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

Result<void> RegistryClient::authenticate(const std::string& challenge) {
  std::string scheme;
  auto params = parseChallenge(challenge, scheme);
  if (scheme == "basic") {
    if (username_.empty()) {
      return Error(ErrorCode::kUnavailable,
                   registry_ + " requires authentication: run `microvm login " + registry_ + "`");
    }
    std::lock_guard lock(auth_mutex_);
    basic_ = true;
    return success();
  }
  if (scheme != "bearer" || params["realm"].empty()) {
    return Error(ErrorCode::kProtocol, registry_ + " sent an unusable authentication challenge: " + challenge);
  }
  CurlHandle handle;
  std::string url = params["realm"] + "?service=" + urlEncode(handle.curl, params["service"]);
  std::string scope = params.count("scope") ? params["scope"] : "repository:" + repository_ + ":pull";
  url += "&scope=" + urlEncode(handle.curl, scope);
  std::string body;
  Sink sink{&body, -1, nullptr, 0, 1 << 20, false};
  curl_easy_setopt(handle.curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(handle.curl, CURLOPT_WRITEFUNCTION, writeBody);
  curl_easy_setopt(handle.curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(handle.curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(handle.curl, CURLOPT_CONNECTTIMEOUT, 15L);
  curl_easy_setopt(handle.curl, CURLOPT_TIMEOUT, 60L);
  if (!username_.empty()) {
    curl_easy_setopt(handle.curl, CURLOPT_USERNAME, username_.c_str());
    curl_easy_setopt(handle.curl, CURLOPT_PASSWORD, password_.c_str());
  }
  CURLcode code = curl_easy_perform(handle.curl);
  long status = 0;
  curl_easy_getinfo(handle.curl, CURLINFO_RESPONSE_CODE, &status);
  if (code != CURLE_OK) return Error(ErrorCode::kIo, "get token from " + params["realm"] + ": " + curl_easy_strerror(code));
  if (status == 401 || status == 403) {
    return Error(ErrorCode::kUnavailable, "authentication to " + registry_ + " failed (HTTP " + std::to_string(status) +
                                              "): check the credentials from `microvm login " + registry_ + "`");
  }
  if (status != 200) return Error(ErrorCode::kIo, "get token from " + params["realm"] + ": HTTP " + std::to_string(status));
  json reply = json::parse(body, nullptr, /*allow_exceptions=*/false);
  std::string token = reply.is_object() ? reply.value("token", reply.value("access_token", "")) : "";
  if (token.empty()) return Error(ErrorCode::kProtocol, "the token service of " + registry_ + " returned no token");
  std::lock_guard lock(auth_mutex_);
  token_ = token;
  return success();
}

Result<RegistryClient::Response> RegistryClient::getOnce(const std::string& url, const std::string& accept,
                                                         const fs::path& sink_path) {
  CurlHandle handle;
  if (!handle.curl) return Error(ErrorCode::kInternal, "curl_easy_init failed");
  Response response;
  Sha256 hasher;
  UniqueFd file;
  if (!sink_path.empty()) {
    file.reset(::open(sink_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!file.valid()) return Error::fromErrno("create " + sink_path.string());
  }
  Sink sink{sink_path.empty() ? &response.body : nullptr, file.get(), &hasher, 0,
            sink_path.empty() ? kMaxManifestBytes : 0, false};
  if (!accept.empty()) handle.headers = curl_slist_append(handle.headers, ("Accept: " + accept).c_str());
  std::string auth = authorization();
  if (!auth.empty()) handle.headers = curl_slist_append(handle.headers, auth.c_str());
  curl_easy_setopt(handle.curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(handle.curl, CURLOPT_HTTPHEADER, handle.headers);
  curl_easy_setopt(handle.curl, CURLOPT_WRITEFUNCTION, writeBody);
  curl_easy_setopt(handle.curl, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(handle.curl, CURLOPT_HEADERFUNCTION, captureHeader);
  curl_easy_setopt(handle.curl, CURLOPT_HEADERDATA, &response.headers);
  // Blob downloads redirect to storage; curl does not carry our
  // Authorization header to another host.
  curl_easy_setopt(handle.curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(handle.curl, CURLOPT_CONNECTTIMEOUT, 15L);
  curl_easy_setopt(handle.curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(handle.curl, CURLOPT_LOW_SPEED_TIME, 60L);
  curl_easy_setopt(handle.curl, CURLOPT_NOSIGNAL, 1L);
  CURLcode code = curl_easy_perform(handle.curl);
  if (sink.failed) return Error::fromErrno("write " + sink_path.string());
  if (code != CURLE_OK && !(code == CURLE_WRITE_ERROR && sink.limit && sink.bytes > sink.limit)) {
    return Error(ErrorCode::kIo, "GET " + url + ": " + curl_easy_strerror(code));
  }
  if (sink.limit && sink.bytes > sink.limit) return Error(ErrorCode::kProtocol, "GET " + url + ": response too large");
  curl_easy_getinfo(handle.curl, CURLINFO_RESPONSE_CODE, &response.status);
  response.digest = "sha256:" + hasher.finishHex();
  response.bytes = sink.bytes;
  return response;
}

Result<RegistryClient::Response> RegistryClient::get(const std::string& url, const std::string& accept,
                                                     const fs::path& sink) {
  bool authenticated = false;
  for (int attempt = 1;; ++attempt) {
    auto response = getOnce(url, accept, sink);
    bool transient = !response || response->status == 429 || response->status >= 500;
    if (response && response->status == 401 && !authenticated) {
      MICROVM_TRY(authenticate(response->headers.authenticate));
      authenticated = true;
      --attempt;  // the challenge round does not count as a failure
      continue;
    }
    if (!transient || attempt >= options_.max_attempts) {
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
    std::this_thread::sleep_for(std::chrono::milliseconds(200 << (attempt - 1)));
  }
}

Result<FetchedManifest> RegistryClient::fetchManifest(const std::string& reference) {
  auto response = get(base_url_ + "/manifests/" + reference, kManifestTypes, {});
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
  auto response = get(base_url_ + "/blobs/" + digest, "", temp);
  if (!response) return std::move(response).error();
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
  json config = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config["auths"].is_object()) return std::pair<std::string, std::string>();
  for (const auto& key : {registry, "https://" + registry, "http://" + registry,
                          registry == "docker.io" ? std::string("https://index.docker.io/v1/") : registry}) {
    const json& entry = config["auths"][key];
    if (!entry.is_object() || !entry["auth"].is_string()) continue;
    auto decoded = base64Decode(entry["auth"].get<std::string>());
    if (!decoded) return Error(ErrorCode::kInvalidArgument, docker_config.string() + ": malformed auth for " + key);
    size_t colon = decoded->find(':');
    if (colon == std::string::npos) continue;
    return std::pair(decoded->substr(0, colon), decoded->substr(colon + 1));
  }
  return std::pair<std::string, std::string>();
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
