#include "image/oci_layout_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/hash.h"
#include "base/scope_guard.h"
#include "base/unique_fd.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path OciLayoutSource::blobPath(const std::string& digest) const {
  return root_ / "blobs" / "sha256" / digest.substr(7);
}

namespace {

// index.json is the user's own file, but it may come from anywhere (an
// unpacked download): as capped as a registry's manifest.
constexpr size_t kMaxIndexBytes = 4 << 20;

}  // namespace

Result<IndexEntry> selectOciIndexEntry(std::string_view index_json, const std::string& reference,
                                       const std::string& origin) {
  if (index_json.size() > kMaxIndexBytes) {
    return Error(ErrorCode::kProtocol, origin + ": larger than " + std::to_string(kMaxIndexBytes) + " bytes");
  }
  const json index = json::parse(index_json.begin(), index_json.end(), nullptr, /*allow_exceptions=*/false);
  auto manifests = index.is_object() ? index.find("manifests") : index.end();
  if (!index.is_object() || manifests == index.end() || !manifests->is_array()) {
    return Error(ErrorCode::kProtocol, origin + ": not an OCI index");
  }
  const json* found = nullptr;
  size_t candidates = 0;
  for (const auto& entry : *manifests) {
    if (!entry.is_object()) continue;
    ++candidates;
    std::string name;
    auto annotations = entry.find("annotations");
    if (annotations != entry.end() && annotations->is_object()) {
      auto ref_name = annotations->find("org.opencontainers.image.ref.name");
      if (ref_name != annotations->end() && ref_name->is_string()) name = ref_name->get<std::string>();
    }
    if ((reference.empty() && manifests->size() == 1) || (!reference.empty() && name == reference)) found = &entry;
  }
  if (!found) {
    return Error(ErrorCode::kNotFound, origin + " has no image tagged \"" + reference + "\" (" +
                                           std::to_string(candidates) + " manifests)");
  }
  IndexEntry chosen;
  auto digest = found->find("digest");
  if (digest != found->end() && digest->is_string()) chosen.digest = digest->get<std::string>();
  auto media_type = found->find("mediaType");
  if (media_type != found->end() && media_type->is_string()) chosen.media_type = media_type->get<std::string>();
  MICROVM_TRY(checkDigest(chosen.digest));
  return chosen;
}

Result<FetchedManifest> OciLayoutSource::fetchManifest(const std::string& reference) {
  std::string digest = reference;
  std::string media_type;
  if (reference.rfind("sha256:", 0) != 0) {
    auto text = readFile(root_ / "index.json");
    if (!text) return std::move(text).error().withContext("OCI layout " + root_.string());
    auto entry = selectOciIndexEntry(*text, reference, "OCI layout " + root_.string() + " (index.json)");
    if (!entry) return std::move(entry).error();
    digest = entry->digest;
    media_type = entry->media_type;
  }
  MICROVM_TRY(checkDigest(digest));
  auto body = readFile(blobPath(digest));
  if (!body) return std::move(body).error();
  if ("sha256:" + sha256Hex(*body) != digest) {
    return Error(ErrorCode::kProtocol, "manifest " + digest + " in " + root_.string() + " does not match its digest");
  }
  if (media_type.empty()) {
    json parsed = json::parse(*body, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_object()) media_type = parsed.value("mediaType", "");
  }
  return FetchedManifest{std::move(*body), media_type, digest};
}

Result<void> OciLayoutSource::fetchBlob(const std::string& digest, uint64_t size, const fs::path& destination) {
  MICROVM_TRY(checkDigest(digest));
  fs::path source = blobPath(digest);
  UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.valid()) return Error::fromErrno("open " + source.string());
  fs::path temp = destination.string() + ".part." + randomHex(4);
  ScopeGuard remove_temp([&] { ::unlink(temp.c_str()); });
  UniqueFd out(::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!out.valid()) return Error::fromErrno("create " + temp.string());
  Sha256 hasher;
  uint64_t copied = 0;
  std::vector<char> buffer(1 << 20);
  for (;;) {
    ssize_t n = ::read(in.get(), buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Error::fromErrno("read " + source.string());
    if (n == 0) break;
    copied += static_cast<uint64_t>(n);
    if (copied > size) break;  // never copies more than the manifest declares
    hasher.update({buffer.data(), static_cast<size_t>(n)});
    MICROVM_TRY(writeAll(out.get(), {buffer.data(), static_cast<size_t>(n)}));
  }
  if (copied != size) {
    return Error(ErrorCode::kProtocol, "blob " + digest + ": expected " + std::to_string(size) + " bytes, found " +
                                           (copied > size ? "more" : std::to_string(copied)));
  }
  if ("sha256:" + hasher.finishHex() != digest) {
    return Error(ErrorCode::kProtocol, "blob " + digest + " in " + root_.string() + " does not match its digest");
  }
  if (::rename(temp.c_str(), destination.c_str()) != 0) return Error::fromErrno("rename to " + destination.string());
  remove_temp.dismiss();
  return success();
}

}  // namespace microvm
