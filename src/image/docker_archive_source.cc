#include "image/docker_archive_source.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "base/hash.h"
#include "base/unique_fd.h"
#include "image/quote_untrusted.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxManifestBytes = 1 << 20;

struct ArchiveReader {
  archive* handle = archive_read_new();
  ~ArchiveReader() { archive_read_free(handle); }
};

// One pass over the archive: manifest.json into memory, every other regular
// file into `scratch` under its index, hashed on the way.
struct Extracted {
  std::string manifest;
  std::map<std::string, std::string> symlinks;  // member name -> target member name
  struct File {
    fs::path path;
    std::string digest;
    uint64_t size = 0;
  };
  std::map<std::string, File> files;  // member name -> extracted copy
};

// What an archive may hold: an image's config and layers within `limits`,
// plus docker save's small files (VERSION, json, repositories) for each layer.
struct ArchiveBudget {
  uint64_t bytes;
  uint64_t members;
};

ArchiveBudget budgetFor(const ImageLimits& limits) {
  return {limits.max_download_bytes + limits.max_config_bytes + (1u << 20), 8 * limits.max_layers + 64};
}

Result<Extracted> extractArchive(const fs::path& path, const fs::path& scratch, const ArchiveBudget& budget) {
  ArchiveReader reader;
  archive_read_support_format_tar(reader.handle);
  archive_read_support_filter_all(reader.handle);
  if (archive_read_open_filename(reader.handle, path.c_str(), 1 << 16) != ARCHIVE_OK) {
    return Error(ErrorCode::kInvalidArgument, "docker archive " + path.string() + ": " +
                                                  archive_error_string(reader.handle));
  }
  Extracted extracted;
  archive_entry* entry = nullptr;
  size_t index = 0;
  uint64_t members = 0;
  uint64_t bytes = 0;
  auto tooLarge = [&] {
    return Error(ErrorCode::kProtocol, "docker archive " + path.string() + " holds more than " +
                                           std::to_string(budget.bytes) + " bytes: larger than an image may be");
  };
  int status;
  while ((status = archive_read_next_header(reader.handle, &entry)) == ARCHIVE_OK) {
    if (++members > budget.members) {
      return Error(ErrorCode::kProtocol, "docker archive " + path.string() + " has more than " +
                                             std::to_string(budget.members) + " members: more than an image may have");
    }
    std::string name = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
    if (name.rfind("./", 0) == 0) name = name.substr(2);
    if (archive_entry_filetype(entry) == AE_IFLNK && archive_entry_symlink(entry)) {
      // docker save links <id>/layer.tar -> ../<digest>.tar; keep it relative to the archive root.
      fs::path target = (fs::path(name).parent_path() / archive_entry_symlink(entry)).lexically_normal();
      extracted.symlinks[name] = target.string();
      continue;
    }
    if (archive_entry_filetype(entry) != AE_IFREG) continue;
    if (name == "manifest.json") {
      std::string text;
      char buffer[65536];
      la_ssize_t n;
      while ((n = archive_read_data(reader.handle, buffer, sizeof buffer)) > 0) {
        text.append(buffer, static_cast<size_t>(n));
        if (text.size() > kMaxManifestBytes) {
          return Error(ErrorCode::kProtocol, "docker archive: manifest.json is larger than " +
                                                 std::to_string(kMaxManifestBytes) + " bytes");
        }
      }
      if (n < 0) return Error(ErrorCode::kInvalidArgument, "docker archive: " + std::string(archive_error_string(reader.handle)));
      extracted.manifest = std::move(text);
      continue;
    }
    Extracted::File file{scratch / std::to_string(index++), "", 0};
    UniqueFd out(::open(file.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out.valid()) return Error::fromErrno("create " + file.path.string());
    Sha256 hasher;
    char buffer[1 << 16];
    la_ssize_t n;
    while ((n = archive_read_data(reader.handle, buffer, sizeof buffer)) > 0) {
      bytes += static_cast<uint64_t>(n);
      if (bytes > budget.bytes) return tooLarge();
      hasher.update({buffer, static_cast<size_t>(n)});
      MICROVM_TRY(writeAll(out.get(), {buffer, static_cast<size_t>(n)}));
      file.size += static_cast<uint64_t>(n);
    }
    if (n < 0) return Error(ErrorCode::kInvalidArgument, "docker archive: " + std::string(archive_error_string(reader.handle)));
    file.digest = "sha256:" + hasher.finishHex();
    extracted.files[name] = std::move(file);
  }
  if (status != ARCHIVE_EOF) {
    return Error(ErrorCode::kInvalidArgument, "docker archive " + path.string() + ": " +
                                                  archive_error_string(reader.handle));
  }
  if (extracted.manifest.empty()) {
    return Error(ErrorCode::kInvalidArgument, "docker archive " + path.string() + " has no manifest.json");
  }
  return extracted;
}

// A member by name, following the archive's own symlinks (a bounded number).
const Extracted::File* member(const Extracted& extracted, std::string name) {
  for (int hops = 0; hops < 8; ++hops) {
    if (auto file = extracted.files.find(name); file != extracted.files.end()) return &file->second;
    auto link = extracted.symlinks.find(name);
    if (link == extracted.symlinks.end()) return nullptr;
    name = link->second;
  }
  return nullptr;
}

}  // namespace

Result<ArchiveImage> parseDockerArchiveManifest(std::string_view manifest_json, const std::string& tag) {
  if (manifest_json.size() > kMaxManifestBytes) {
    return Error(ErrorCode::kProtocol, "docker archive: manifest.json is larger than " +
                                           std::to_string(kMaxManifestBytes) + " bytes");
  }
  const json images = json::parse(manifest_json.begin(), manifest_json.end(), nullptr, /*allow_exceptions=*/false);
  if (!images.is_array() || images.empty()) {
    return Error(ErrorCode::kProtocol, "docker archive: manifest.json is not a list of images");
  }
  const json* chosen = nullptr;
  for (const auto& image : images) {
    if (!image.is_object()) continue;
    bool tagged = false;
    auto repo_tags = image.find("RepoTags");
    if (!tag.empty() && repo_tags != image.end() && repo_tags->is_array()) {
      for (const auto& repo_tag : *repo_tags) {
        if (repo_tag.is_string() &&
            (repo_tag == tag || repo_tag == "docker.io/" + tag || repo_tag == "docker.io/library/" + tag)) {
          tagged = true;
        }
      }
    }
    if (tagged || (tag.empty() && images.size() == 1)) chosen = &image;
  }
  if (!chosen) {
    return Error(ErrorCode::kNotFound, tag.empty() ? "docker archive holds several images: name one with :REPO:TAG"
                                                   : "docker archive has no image tagged " + quoteUntrusted(tag));
  }
  ArchiveImage image;
  auto config = chosen->find("Config");
  if (config == chosen->end() || !config->is_string()) {
    return Error(ErrorCode::kProtocol, "docker archive: manifest.json: Config must be a string");
  }
  image.config = config->get<std::string>();
  auto layers = chosen->find("Layers");
  if (layers != chosen->end() && !layers->is_null()) {
    if (!layers->is_array()) return Error(ErrorCode::kProtocol, "docker archive: manifest.json: Layers must be an array");
    for (const auto& layer : *layers) {
      if (!layer.is_string()) {
        return Error(ErrorCode::kProtocol, "docker archive: manifest.json: Layers must hold strings");
      }
      image.layers.push_back(layer.get<std::string>());
    }
  }
  return image;
}

Result<std::unique_ptr<DockerArchiveSource>> DockerArchiveSource::open(const fs::path& archive_path,
                                                                     const std::string& tag, const fs::path& scratch,
                                                                     const ImageLimits& limits) {
  auto extracted = extractArchive(archive_path, scratch, budgetFor(limits));
  if (!extracted) return std::move(extracted).error();
  auto chosen = parseDockerArchiveManifest(extracted->manifest, tag);
  if (!chosen) return std::move(chosen).error();
  auto source = std::unique_ptr<DockerArchiveSource>(new DockerArchiveSource());
  auto describe = [&](const std::string& name, const char* media_type) -> Result<json> {
    const Extracted::File* file = member(*extracted, name);
    if (!file) return Error(ErrorCode::kProtocol, "docker archive: manifest.json names a missing member " + quoteUntrusted(name));
    source->blobs_[file->digest] = file->path;
    return json{{"mediaType", media_type}, {"digest", file->digest}, {"size", file->size}};
  };
  auto config = describe(chosen->config, "application/vnd.docker.container.image.v1+json");
  if (!config) return std::move(config).error();
  json layers = json::array();
  for (const auto& layer_name : chosen->layers) {
    auto layer = describe(layer_name, "application/vnd.docker.image.rootfs.diff.tar");
    if (!layer) return std::move(layer).error();
    layers.push_back(*layer);
  }
  json manifest = {{"schemaVersion", 2},
                   {"mediaType", "application/vnd.docker.distribution.manifest.v2+json"},
                   {"config", *config},
                   {"layers", layers}};
  source->manifest_.body = manifest.dump();
  source->manifest_.media_type = "application/vnd.docker.distribution.manifest.v2+json";
  source->manifest_.digest = "sha256:" + sha256Hex(source->manifest_.body);
  return source;
}

Result<FetchedManifest> DockerArchiveSource::fetchManifest(const std::string& /*reference*/) { return manifest_; }

Result<void> DockerArchiveSource::fetchBlob(const std::string& digest, uint64_t size, const fs::path& destination) {
  auto blob = blobs_.find(digest);
  if (blob == blobs_.end()) return Error(ErrorCode::kNotFound, "docker archive has no blob " + digest);
  std::error_code ec;
  if (fs::file_size(blob->second, ec) != size) return Error(ErrorCode::kProtocol, "blob " + digest + ": size mismatch");
  // The digest was computed from these very bytes as they were extracted.
  if (::link(blob->second.c_str(), destination.c_str()) != 0) {
    fs::copy_file(blob->second, destination, fs::copy_options::overwrite_existing, ec);
    if (ec) return Error(ErrorCode::kIo, "copy blob " + digest + ": " + ec.message(), ec.value());
  }
  return success();
}

}  // namespace microvm
