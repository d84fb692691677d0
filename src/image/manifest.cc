#include "image/manifest.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "image/quote_untrusted.h"

namespace microvm {

namespace {

using json = nlohmann::json;

// containerd's limit for manifests and indexes; real ones are a few KiB.
constexpr size_t kMaxManifestBytes = 4u << 20;
// Configs carry the build history, which can be long, but not this long.
constexpr size_t kMaxConfigBytes = 32u << 20;

bool isLowerHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

std::string lowerCase(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

bool isIndexType(std::string_view type) {
  return type == media_type::kOciIndex || type == media_type::kDockerManifestList;
}
bool isManifestType(std::string_view type) {
  return type == media_type::kOciManifest || type == media_type::kDockerManifest;
}
bool isSchema1Type(std::string_view type) {
  return type == "application/vnd.docker.distribution.manifest.v1+json" ||
         type == "application/vnd.docker.distribution.manifest.v1+prettyjws";
}

// Reads typed fields of one document and keeps the first problem, so that a
// parser can read a row of fields and check once. Messages name the document
// and the JSON path: `image manifest: layers[1].size: must not be negative`.
class FieldReader {
 public:
  explicit FieldReader(std::string document) : document_(std::move(document)) {}

  bool ok() const { return !error_; }
  Error error() const { return *error_; }

  void fail(const std::string& path, const std::string& why, ErrorCode code = ErrorCode::kProtocol) {
    if (!error_) error_.emplace(code, document_ + ": " + (path.empty() ? "" : path + ": ") + why);
  }

  // A string field; missing or null reads as "" unless `required`.
  std::string text(const json& object, const char* key, const std::string& path, bool required = false) {
    const json* value = find(object, key);
    if (!value || value->is_null()) {
      if (required) fail(join(path, key), "missing");
      return {};
    }
    if (!value->is_string()) {
      fail(join(path, key), "must be a string");
      return {};
    }
    return value->get<std::string>();
  }

  // An array of strings; missing or null reads as empty.
  std::vector<std::string> texts(const json& object, const char* key, const std::string& path) {
    std::vector<std::string> out;
    const json* value = find(object, key);
    if (!value || value->is_null()) return out;
    if (!value->is_array()) {
      fail(join(path, key), "must be an array of strings");
      return out;
    }
    for (size_t i = 0; i < value->size(); ++i) {
      const json& item = (*value)[i];
      if (!item.is_string()) {
        fail(join(path, key) + "[" + std::to_string(i) + "]", "must be a string");
        return {};
      }
      out.push_back(item.get<std::string>());
    }
    return out;
  }

  // A required non-negative integer.
  uint64_t size(const json& object, const char* key, const std::string& path) {
    const json* value = find(object, key);
    if (!value || value->is_null()) {
      fail(join(path, key), "missing");
    } else if (value->is_number_unsigned()) {
      return value->get<uint64_t>();
    } else if (value->is_number_integer()) {
      fail(join(path, key), "must not be negative");
    } else {
      fail(join(path, key), "must be a non-negative integer");
    }
    return 0;
  }

  // A member that must be an object (or, unless required, missing or null:
  // then nullptr).
  const json* object(const json& parent, const char* key, const std::string& path, bool required = false) {
    const json* value = find(parent, key);
    if (!value || value->is_null()) {
      if (required) fail(join(path, key), "missing");
      return nullptr;
    }
    if (!value->is_object()) {
      fail(join(path, key), "must be an object");
      return nullptr;
    }
    return value;
  }

  // A member that must be an array (required).
  const json* array(const json& parent, const char* key, const std::string& path) {
    const json* value = find(parent, key);
    if (!value || !value->is_array()) {
      fail(join(path, key), value ? "must be an array" : "missing");
      return nullptr;
    }
    return value;
  }

  static std::string join(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }

 private:
  static const json* find(const json& object, const char* key) {
    if (!object.is_object()) return nullptr;
    auto it = object.find(key);
    return it == object.end() ? nullptr : &*it;
  }

  std::string document_;
  std::optional<Error> error_;
};

// Parses without exceptions; the caller's FieldReader is not needed yet.
Result<json> parseObject(std::string_view text, const std::string& document, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Error(ErrorCode::kProtocol, document + ": larger than " + std::to_string(max_bytes) + " bytes");
  }
  json doc = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return Error(ErrorCode::kProtocol, document + ": not valid JSON");
  if (!doc.is_object()) return Error(ErrorCode::kProtocol, document + ": not a JSON object");
  return doc;
}

// Checks schemaVersion when present: 2 is the only version we read.
void checkSchemaVersion(FieldReader& reader, const json& doc) {
  auto it = doc.find("schemaVersion");
  if (it == doc.end() || it->is_null()) return;
  if (it->is_number_integer() && it->get<int64_t>() == 1) {
    reader.fail("schemaVersion", "Docker schema 1 manifests are not supported", ErrorCode::kUnsupported);
  } else if (!it->is_number_integer() || it->get<int64_t>() != 2) {
    reader.fail("schemaVersion", "must be 2");
  }
}

std::optional<Platform> readPlatform(FieldReader& reader, const json& node, const std::string& path) {
  const json* platform = reader.object(node, "platform", path);
  if (!platform) return std::nullopt;
  std::string where = FieldReader::join(path, "platform");
  Platform out;
  out.os = reader.text(*platform, "os", where, /*required=*/true);
  out.architecture = reader.text(*platform, "architecture", where, /*required=*/true);
  out.variant = reader.text(*platform, "variant", where);
  return out;
}

Descriptor readDescriptor(FieldReader& reader, const json& node, const std::string& path) {
  Descriptor out;
  if (!node.is_object()) {
    reader.fail(path, "must be an object");
    return out;
  }
  out.media_type = reader.text(node, "mediaType", path, /*required=*/true);
  out.digest = reader.text(node, "digest", path, /*required=*/true);
  if (reader.ok() && !isSha256Digest(out.digest)) {
    reader.fail(FieldReader::join(path, "digest"),
                quoteUntrusted(out.digest) + " is not sha256:<64 lowercase hex digits>");
  }
  out.size = reader.size(node, "size", path);
  out.platform = readPlatform(reader, node, path);
  return out;
}

std::vector<Descriptor> readDescriptors(FieldReader& reader, const json& doc, const char* key) {
  std::vector<Descriptor> out;
  const json* items = reader.array(doc, key, "");
  if (!items) return out;
  for (size_t i = 0; i < items->size() && reader.ok(); ++i) {
    out.push_back(readDescriptor(reader, (*items)[i], std::string(key) + "[" + std::to_string(i) + "]"));
  }
  return out;
}

Result<ImageIndex> indexFromJson(const json& doc) {
  FieldReader reader("image index");
  checkSchemaVersion(reader, doc);
  ImageIndex index;
  index.media_type = reader.text(doc, "mediaType", "");
  if (reader.ok() && !index.media_type.empty() && !isIndexType(index.media_type)) {
    reader.fail("mediaType", quoteUntrusted(index.media_type) + " is not an image index type",
                isManifestType(index.media_type) ? ErrorCode::kProtocol : ErrorCode::kUnsupported);
  }
  if (reader.ok()) index.manifests = readDescriptors(reader, doc, "manifests");
  if (!reader.ok()) return reader.error();
  return index;
}

void checkLayerTypes(FieldReader& reader, const std::vector<Descriptor>& layers) {
  for (size_t i = 0; i < layers.size() && reader.ok(); ++i) {
    auto compression = layerCompression(layers[i].media_type);
    if (!compression) {
      reader.fail("layers[" + std::to_string(i) + "]", compression.error().message(), compression.error().code());
    }
  }
}

Result<ImageManifest> manifestFromJson(const json& doc) {
  FieldReader reader("image manifest");
  checkSchemaVersion(reader, doc);
  ImageManifest manifest;
  manifest.media_type = reader.text(doc, "mediaType", "");
  if (reader.ok() && !manifest.media_type.empty() && !isManifestType(manifest.media_type)) {
    reader.fail("mediaType", quoteUntrusted(manifest.media_type) + " is not an image manifest type",
                isIndexType(manifest.media_type) ? ErrorCode::kProtocol : ErrorCode::kUnsupported);
  }
  const json* config = reader.ok() ? reader.object(doc, "config", "", /*required=*/true) : nullptr;
  if (config) manifest.config = readDescriptor(reader, *config, "config");
  const std::string& config_type = manifest.config.media_type;
  if (reader.ok() && config_type != media_type::kOciConfig && config_type != media_type::kDockerConfig) {
    reader.fail("config.mediaType",
                quoteUntrusted(config_type) + " is not a container image config (is this an OCI artifact?)",
                ErrorCode::kUnsupported);
  }
  if (reader.ok()) manifest.layers = readDescriptors(reader, doc, "layers");
  checkLayerTypes(reader, manifest.layers);
  if (!reader.ok()) return reader.error();
  return manifest;
}

enum class DocumentKind { kIndex, kManifest, kUnknown };

// What a media type (from the document or the Content-Type) says the
// document is; an error for types we know we cannot use.
Result<DocumentKind> kindOfMediaType(std::string_view type) {
  if (isIndexType(type)) return DocumentKind::kIndex;
  if (isManifestType(type)) return DocumentKind::kManifest;
  if (isSchema1Type(type)) {
    return Error(ErrorCode::kUnsupported,
                 "manifest: Docker schema 1 manifests are not supported; push the image again "
                 "with a current client");
  }
  return DocumentKind::kUnknown;
}

// "application/json; charset=utf-8" -> "application/json".
std::string_view bareContentType(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && content_type.back() == ' ') content_type.remove_suffix(1);
  while (!content_type.empty() && content_type.front() == ' ') content_type.remove_prefix(1);
  return content_type;
}

Result<DocumentKind> detectKind(const json& doc, std::string_view content_type) {
  auto type = doc.find("mediaType");
  if (type != doc.end() && type->is_string()) {
    std::string declared = type->get<std::string>();
    auto kind = kindOfMediaType(declared);
    if (!kind || *kind != DocumentKind::kUnknown) return kind;
    return Error(ErrorCode::kUnsupported, "manifest: unsupported media type " + quoteUntrusted(declared));
  }
  auto from_header = kindOfMediaType(bareContentType(content_type));
  if (!from_header || *from_header != DocumentKind::kUnknown) return from_header;
  // Neither says: OCI allows mediaType to be left out, so go by shape.
  if (doc.contains("manifests")) return DocumentKind::kIndex;
  if (doc.contains("config") || doc.contains("layers")) return DocumentKind::kManifest;
  auto version = doc.find("schemaVersion");
  if (version != doc.end() && version->is_number_integer() && version->get<int64_t>() == 1) {
    return kindOfMediaType("application/vnd.docker.distribution.manifest.v1+json");
  }
  return Error(ErrorCode::kProtocol, "manifest: neither an image index nor an image manifest");
}

// Platforms in containerd's normal form, so that "aarch64" finds "arm64/v8".
Platform normalize(Platform platform) {
  platform.os = lowerCase(platform.os);
  platform.architecture = lowerCase(platform.architecture);
  platform.variant = lowerCase(platform.variant);
  std::string& arch = platform.architecture;
  std::string& variant = platform.variant;
  if (platform.os == "macos") platform.os = "darwin";
  if (arch == "x86_64" || arch == "x86-64" || arch == "amd64") {
    arch = "amd64";
    if (variant == "v1") variant.clear();
  } else if (arch == "aarch64" || arch == "arm64") {
    arch = "arm64";
    if (variant == "8" || variant == "v8" || variant == "v8.0") variant.clear();
  } else if (arch == "armhf") {
    arch = "arm";
    variant = "v7";
  } else if (arch == "armel") {
    arch = "arm";
    variant = "v6";
  } else if (arch == "arm") {
    if (variant.empty() || variant == "7") variant = "v7";
    if (variant == "5" || variant == "6" || variant == "8") variant = "v" + variant;
  } else if (arch == "i386") {
    arch = "386";
  }
  return platform;
}

std::string offeredPlatforms(const ImageIndex& index) {
  std::string list;
  for (const auto& entry : index.manifests) {
    if (!entry.platform) continue;
    list += (list.empty() ? "" : ", ") + entry.platform->toString();
  }
  return list.empty() ? "none" : list;
}

}  // namespace

bool isSha256Digest(std::string_view digest) {
  constexpr std::string_view kPrefix = "sha256:";
  if (!digest.starts_with(kPrefix)) return false;
  std::string_view hex = digest.substr(kPrefix.size());
  return hex.size() == 64 && std::all_of(hex.begin(), hex.end(), isLowerHex);
}

std::string Platform::toString() const {
  return os + "/" + architecture + (variant.empty() ? "" : "/" + variant);
}

Result<LayerCompression> layerCompression(std::string_view type) {
  if (type == "application/vnd.oci.image.layer.v1.tar" || type == "application/vnd.docker.image.rootfs.diff.tar") {
    return LayerCompression::kNone;
  }
  if (type == "application/vnd.oci.image.layer.v1.tar+gzip" ||
      type == "application/vnd.docker.image.rootfs.diff.tar.gzip") {
    return LayerCompression::kGzip;
  }
  if (type == "application/vnd.oci.image.layer.v1.tar+zstd") return LayerCompression::kZstd;
  if (type.find("nondistributable") != std::string_view::npos || type.find("foreign") != std::string_view::npos) {
    return Error(ErrorCode::kUnsupported,
                 "foreign layer " + quoteUntrusted(type) + " is not supported: its content lives outside the registry");
  }
  return Error(ErrorCode::kUnsupported, "unsupported layer media type " + quoteUntrusted(type));
}

Result<ImageIndex> parseImageIndex(std::string_view text) {
  auto doc = parseObject(text, "image index", kMaxManifestBytes);
  if (!doc) return doc.error();
  return indexFromJson(*doc);
}

Result<ImageManifest> parseImageManifest(std::string_view text) {
  auto doc = parseObject(text, "image manifest", kMaxManifestBytes);
  if (!doc) return doc.error();
  return manifestFromJson(*doc);
}

Result<IndexOrManifest> parseIndexOrManifest(std::string_view text, std::string_view content_type) {
  auto doc = parseObject(text, "manifest", kMaxManifestBytes);
  if (!doc) return doc.error();
  auto kind = detectKind(*doc, content_type);
  if (!kind) return kind.error();
  if (*kind == DocumentKind::kIndex) {
    auto index = indexFromJson(*doc);
    if (!index) return index.error();
    return IndexOrManifest(std::move(*index));
  }
  auto manifest = manifestFromJson(*doc);
  if (!manifest) return manifest.error();
  return IndexOrManifest(std::move(*manifest));
}

Result<ImageConfig> parseImageConfig(std::string_view text) {
  auto doc = parseObject(text, "image config", kMaxConfigBytes);
  if (!doc) return doc.error();
  FieldReader reader("image config");
  ImageConfig config;
  config.os = reader.text(*doc, "os", "");
  config.architecture = reader.text(*doc, "architecture", "");
  config.variant = reader.text(*doc, "variant", "");
  if (const json* run = reader.object(*doc, "config", "")) {
    config.entrypoint = reader.texts(*run, "Entrypoint", "config");
    config.cmd = reader.texts(*run, "Cmd", "config");
    config.env = reader.texts(*run, "Env", "config");
    config.working_dir = reader.text(*run, "WorkingDir", "config");
    config.user = reader.text(*run, "User", "config");
    // ExposedPorts is {"80/tcp": {}}; the keys are what matters.
    if (const json* ports = reader.object(*run, "ExposedPorts", "config")) {
      for (const auto& item : ports->items()) config.exposed_ports.push_back(item.key());
    }
  }
  if (const json* rootfs = reader.object(*doc, "rootfs", "")) {
    config.diff_ids = reader.texts(*rootfs, "diff_ids", "rootfs");
  }
  for (size_t i = 0; i < config.diff_ids.size() && reader.ok(); ++i) {
    if (!isSha256Digest(config.diff_ids[i])) {
      reader.fail("rootfs.diff_ids[" + std::to_string(i) + "]",
                  quoteUntrusted(config.diff_ids[i]) + " is not sha256:<64 lowercase hex digits>");
    }
  }
  if (!reader.ok()) return reader.error();
  return config;
}

Result<Platform> parsePlatform(std::string_view text) {
  Platform platform;
  std::vector<std::string> parts;
  size_t start = 0;
  for (;;) {
    size_t slash = text.find('/', start);
    parts.emplace_back(text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  bool empty_part = std::any_of(parts.begin(), parts.end(), [](const std::string& part) { return part.empty(); });
  if (parts.size() < 2 || parts.size() > 3 || empty_part) {
    return Error(ErrorCode::kInvalidArgument,
                 "invalid platform " + quoteUntrusted(text) + ": expected os/architecture[/variant]");
  }
  platform.os = parts[0];
  platform.architecture = parts[1];
  if (parts.size() == 3) platform.variant = parts[2];
  return normalize(platform);
}

Result<Descriptor> selectPlatform(const ImageIndex& index, std::string_view platform_text) {
  auto wanted = parsePlatform(platform_text);
  if (!wanted) return wanted.error();
  const Descriptor* any_variant = nullptr;
  for (const auto& entry : index.manifests) {
    // Attestations and nested indexes are not runnable images.
    if (!entry.platform || !isManifestType(entry.media_type)) continue;
    Platform offered = normalize(*entry.platform);
    if (offered.os != wanted->os || offered.architecture != wanted->architecture) continue;
    if (offered.variant == wanted->variant) return entry;
    if (wanted->variant.empty() && !any_variant) any_variant = &entry;
  }
  if (any_variant) return *any_variant;
  return Error(ErrorCode::kNotFound, "no image for platform " + wanted->toString() +
                                         " in the image index; it offers: " + offeredPlatforms(index));
}

}  // namespace microvm
