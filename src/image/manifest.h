// OCI / Docker image metadata, parsed from registry JSON: image indexes
// (manifest lists), image manifests and image configs. Everything here comes
// from the network, so nothing is trusted: every field is type-checked,
// digests and sizes are validated, nothing throws, and a bad document gives an
// Error (kProtocol for malformed JSON, kUnsupported for media types we do not
// run) that says which field is wrong.
//
// Accepted documents:
//   index     application/vnd.oci.image.index.v1+json
//             application/vnd.docker.distribution.manifest.list.v2+json
//   manifest  application/vnd.oci.image.manifest.v1+json
//             application/vnd.docker.distribution.manifest.v2+json
//   layers    OCI/Docker tar, tar+gzip, tar+zstd; foreign (non-distributable)
//             layers are refused, since they would be fetched from elsewhere.
//
//   auto document = parseIndexOrManifest(fetched.body, fetched.media_type);
//   if (!document) return document.error();
//   if (auto* index = std::get_if<ImageIndex>(&*document)) {
//     auto chosen = selectPlatform(*index, "linux/arm64");   // a Descriptor
//     ... fetch chosen->digest, parse it with parseImageManifest() ...
//   }
//   auto config = parseImageConfig(config_blob);   // Entrypoint, Cmd, Env, ...
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "microvm/result.h"

namespace microvm {

namespace media_type {
inline constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr std::string_view kDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr std::string_view kOciManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr std::string_view kDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr std::string_view kOciConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr std::string_view kDockerConfig = "application/vnd.docker.container.image.v1+json";
// The Accept header value that asks a registry for any of the above.
inline constexpr std::string_view kAcceptManifests =
    "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
}  // namespace media_type

struct Platform {
  std::string os;            // "linux"
  std::string architecture;  // "amd64", "arm64", ...
  std::string variant;       // "v8", "v7", or empty

  // "os/architecture[/variant]".
  std::string toString() const;
  bool operator==(const Platform&) const = default;
};

// A pointer to a blob: what it is, its sha256 digest and its size.
struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<64 lowercase hex>"
  uint64_t size = 0;
  std::optional<Platform> platform;  // set on entries of an image index
};

struct ImageIndex {
  std::string media_type;
  std::vector<Descriptor> manifests;
};

enum class LayerCompression { kNone, kGzip, kZstd };

struct ImageManifest {
  std::string media_type;
  Descriptor config;
  std::vector<Descriptor> layers;  // base layer first; media types are checked
};

// The parts of an image config that decide how the image runs. Missing and
// null fields are empty.
struct ImageConfig {
  std::string os;
  std::string architecture;
  std::string variant;
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::vector<std::string> env;  // "KEY=VALUE"
  std::string working_dir;
  std::string user;
  std::vector<std::string> exposed_ports;  // "80/tcp", sorted
  std::vector<std::string> diff_ids;       // sha256 of each uncompressed layer
};

using IndexOrManifest = std::variant<ImageIndex, ImageManifest>;

Result<ImageIndex> parseImageIndex(std::string_view json);
Result<ImageManifest> parseImageManifest(std::string_view json);
Result<ImageConfig> parseImageConfig(std::string_view json);

// Parses what a manifest request returned, which may be either kind. The
// document's own mediaType decides; `content_type` (the response header) is
// used when the document has none, and the shape of the JSON when neither
// says. Docker schema 1 manifests are refused as unsupported.
Result<IndexOrManifest> parseIndexOrManifest(std::string_view json, std::string_view content_type = {});

// The entry of `index` that runs on `platform` ("os/arch[/variant]", e.g.
// "linux/amd64" or "linux/arm/v7"). Architectures are normalized the way
// containerd does (x86_64 = amd64, aarch64 = arm64, arm64/v8 = arm64, arm =
// arm/v7). A platform without a variant accepts any variant when no entry
// matches exactly. kNotFound lists the platforms the index offers.
Result<Descriptor> selectPlatform(const ImageIndex& index, std::string_view platform = "linux/amd64");

// Parses "os/arch[/variant]" and normalizes it as selectPlatform() does.
Result<Platform> parsePlatform(std::string_view platform);

// How a layer of this media type is compressed; kUnsupported for foreign
// (non-distributable) and unknown layer types.
Result<LayerCompression> layerCompression(std::string_view media_type);

// True for "sha256:" + 64 lowercase hex digits.
bool isSha256Digest(std::string_view digest);

}  // namespace microvm
