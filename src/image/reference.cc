#include "image/reference.h"

#include <algorithm>
#include <optional>

#include "image/manifest.h"
#include "image/quote_untrusted.h"

namespace microvm {

namespace {

constexpr std::string_view kDefaultRegistry = "docker.io";
constexpr std::string_view kLegacyDefaultRegistry = "index.docker.io";
constexpr std::string_view kDockerHubApiHost = "registry-1.docker.io";
constexpr std::string_view kOfficialRepositoryPrefix = "library/";
constexpr std::string_view kDefaultTag = "latest";
// Docker's NameTotalLengthMax: registry + '/' + repository.
constexpr size_t kMaxNameLength = 255;
constexpr size_t kMaxTagLength = 128;

bool isLowerAlnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}
bool isAlnum(char c) {
  return isLowerAlnum(c) || (c >= 'A' && c <= 'Z');
}
bool isWordChar(char c) {
  return isAlnum(c) || c == '_';
}
bool isDigit(char c) {
  return c >= '0' && c <= '9';
}
bool isHexDigit(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
bool isLowerHex(char c) {
  return isDigit(c) || (c >= 'a' && c <= 'f');
}

bool allOf(std::string_view text, bool (*predicate)(char)) {
  return std::all_of(text.begin(), text.end(), predicate);
}

// One repository path component: [a-z0-9]+ runs joined by Docker's
// separators, which are one '.', one or two '_', or any run of '-'.
bool isPathComponent(std::string_view component) {
  if (component.empty() || !isLowerAlnum(component.front())) return false;
  size_t i = 0;
  while (i < component.size()) {
    if (isLowerAlnum(component[i])) {
      ++i;
      continue;
    }
    if (component[i] == '.') {
      ++i;
    } else if (component[i] == '_') {
      i += component.substr(i, 2) == "__" ? 2 : 1;
    } else if (component[i] == '-') {
      while (i < component.size() && component[i] == '-') ++i;
    } else {
      return false;
    }
    if (i == component.size() || !isLowerAlnum(component[i])) return false;
  }
  return true;
}

// A DNS label: alphanumerics with inner '-'.
bool isDomainComponent(std::string_view label) {
  if (label.empty() || !isAlnum(label.front()) || !isAlnum(label.back())) return false;
  return std::all_of(label.begin(), label.end(), [](char c) { return isAlnum(c) || c == '-'; });
}

bool isHostName(std::string_view host) {
  for (;;) {
    size_t dot = host.find('.');
    if (!isDomainComponent(host.substr(0, dot))) return false;
    if (dot == std::string_view::npos) return true;
    host.remove_prefix(dot + 1);
  }
}

// host[:port], where host is a DNS name or an IPv6 address in brackets.
bool isRegistry(std::string_view registry) {
  std::string_view host = registry;
  std::optional<std::string_view> port;
  if (registry.starts_with('[')) {
    size_t close = registry.find(']');
    if (close == std::string_view::npos) return false;
    host = registry.substr(1, close - 1);
    std::string_view rest = registry.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
    if (host.empty() || !allOf(host, [](char c) { return isHexDigit(c) || c == ':'; })) return false;
  } else {
    size_t colon = registry.find(':');
    if (colon != std::string_view::npos) {
      host = registry.substr(0, colon);
      port = registry.substr(colon + 1);
    }
    if (!isHostName(host)) return false;
  }
  return !port || (!port->empty() && allOf(*port, isDigit));
}

bool isTag(std::string_view tag) {
  if (tag.empty() || tag.size() > kMaxTagLength || !isWordChar(tag.front())) return false;
  return allOf(tag, [](char c) { return isWordChar(c) || c == '.' || c == '-'; });
}

// Docker's rule for telling "host/repo" from "user/repo".
bool looksLikeRegistry(std::string_view first_component) {
  return first_component.find_first_of(".:") != std::string_view::npos || first_component == "localhost" ||
         std::any_of(first_component.begin(), first_component.end(), [](char c) { return c >= 'A' && c <= 'Z'; });
}

// What is wrong with a repository path, or nullopt if nothing is.
std::optional<std::string> repositoryProblem(std::string_view repository) {
  if (repository.empty()) return "repository name is empty";
  if (std::any_of(repository.begin(), repository.end(), [](char c) { return c >= 'A' && c <= 'Z'; })) {
    return "repository name " + quoteUntrusted(repository) + " must be lowercase";
  }
  std::string_view rest = repository;
  for (;;) {
    size_t slash = rest.find('/');
    std::string_view component = rest.substr(0, slash);
    if (component.empty()) return "repository name " + quoteUntrusted(repository) + " has an empty path component";
    if (!isPathComponent(component)) {
      return "repository path component " + quoteUntrusted(component) +
             " must be lowercase letters and digits separated by '.', '_', '__' or '-'";
    }
    if (slash == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(slash + 1);
  }
}

}  // namespace

std::string ImageReference::toString() const {
  std::string text = registry + "/" + repository;
  if (!tag.empty()) text += ":" + tag;
  if (!digest.empty()) text += "@" + digest;
  return text;
}

std::string ImageReference::registryApiHost() const {
  return registry == kDefaultRegistry ? std::string(kDockerHubApiHost) : registry;
}

Result<ImageReference> parseReference(std::string_view text) {
  auto invalid = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "invalid image reference " + quoteUntrusted(text) + ": " + why);
  };
  if (text.empty()) return invalid("it is empty");
  // Docker refuses these: a bare 64-hex string is an image ID.
  if (text.size() == 64 && allOf(text, isLowerHex)) {
    return invalid("a 64-character hex string is an image ID, not a repository name");
  }

  ImageReference ref;
  std::string_view name = text;
  if (size_t at = text.find('@'); at != std::string_view::npos) {
    std::string_view digest = text.substr(at + 1);
    if (!isSha256Digest(digest)) {
      return invalid("digest " + quoteUntrusted(digest) + " is not sha256:<64 lowercase hex digits>");
    }
    ref.digest = std::string(digest);
    name = text.substr(0, at);
  }
  // A tag is a ':' after the last '/': "host:5000/repo" has no tag.
  size_t colon = name.rfind(':');
  size_t slash = name.rfind('/');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    std::string_view tag = name.substr(colon + 1);
    if (!isTag(tag)) {
      return invalid("tag " + quoteUntrusted(tag) +
                     " must be 1 to 128 of [A-Za-z0-9_.-] and not start with '.' or '-'");
    }
    ref.tag = std::string(tag);
    name = name.substr(0, colon);
  }

  std::string_view repository = name;
  slash = name.find('/');
  if (slash != std::string_view::npos && looksLikeRegistry(name.substr(0, slash))) {
    std::string_view registry = name.substr(0, slash);
    if (!isRegistry(registry)) return invalid("registry " + quoteUntrusted(registry) + " is not a valid host[:port]");
    ref.registry = std::string(registry);
    repository = name.substr(slash + 1);
  } else {
    ref.registry = std::string(kDefaultRegistry);
  }
  if (auto problem = repositoryProblem(repository)) return invalid(*problem);

  if (ref.registry == kLegacyDefaultRegistry) ref.registry = std::string(kDefaultRegistry);
  ref.repository = std::string(repository);
  if (ref.registry == kDefaultRegistry && ref.repository.find('/') == std::string::npos) {
    ref.repository = std::string(kOfficialRepositoryPrefix) + ref.repository;
  }
  if (ref.registry.size() + 1 + ref.repository.size() > kMaxNameLength) {
    return invalid("name is longer than " + std::to_string(kMaxNameLength) + " characters");
  }
  if (ref.tag.empty() && ref.digest.empty()) ref.tag = std::string(kDefaultTag);
  return ref;
}

}  // namespace microvm
