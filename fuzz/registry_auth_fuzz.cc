// Fuzzes what a registry (or a credentials file) hands the registry client
// before any image data: the WWW-Authenticate challenge, the token service's
// JSON reply, the token realm URL that decides where credentials may go, and
// a Docker config.json. Besides crashes it checks the credentials rule: a
// realm that may carry them is https, or plain http to loopback from a
// loopback registry (or to anywhere from a registry the user made insecure).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "image/registry_client.h"

namespace {

void check(bool condition, const char* why, std::string_view input) {
  if (condition) return;
  (void)std::fprintf(stderr, "registry_auth_fuzz: %s for %.200s\n", why, std::string(input).c_str());
  std::abort();
}

void fuzzRealm(std::string_view url) {
  static const std::vector<std::string> kNoneInsecure;
  static const std::vector<std::string> kInsecure = {"registry.example.com"};
  bool from_remote = microvm::mayCarryCredentials(url, "registry.example.com", kNoneInsecure);
  bool from_loopback = microvm::mayCarryCredentials(url, "127.0.0.1:5000", kNoneInsecure);
  bool from_insecure = microvm::mayCarryCredentials(url, "registry.example.com", kInsecure);
  std::string host = microvm::hostOf(url);
  bool loopback = microvm::isLoopbackHost(host);
  // Whatever the registry, an allowed realm has a host; the insecure
  // registry allows at least what the others do.
  check(!from_remote || !host.empty(), "a realm without a host may carry credentials", url);
  check(!from_remote || from_insecure, "an insecure registry allows less than a secure one", url);
  check(!from_loopback || from_remote || loopback, "a loopback registry sends credentials off loopback", url);
  // 127.evil.com-style names are never loopback: only literals and localhost.
  if (loopback) {
    check(host == "localhost" || host.find_first_not_of("0123456789abcdef.:") == std::string::npos,
          "a name that is not an address was taken for loopback", url);
  }
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto challenge = microvm::parseAuthChallenge(text);
  for (char c : challenge.scheme) check(!(c >= 'A' && c <= 'Z'), "the scheme is not lower case", text);
  if (auto realm = challenge.params.find("realm"); realm != challenge.params.end()) fuzzRealm(realm->second);
  fuzzRealm(text);
  (void)microvm::parseTokenReply(text);
  for (const char* registry : {"127.0.0.1:5000", "docker.io", ""}) (void)microvm::parseCredentials(text, registry, "config.json");
  (void)microvm::isLoopbackHost(text);
  return 0;
}
