// Image references ("busybox", "ghcr.io/org/app:1.2", "repo@sha256:...")
// parsed and normalized exactly as Docker does, so that a name means the same
// image here as it does to `docker pull`:
//   - a first component is a registry host if it contains '.' or ':', is
//     "localhost", or has an upper-case letter; otherwise the registry is
//     docker.io ("index.docker.io" is the same registry);
//   - on docker.io a single-component repository gets "library/";
//   - with neither tag nor digest the tag is "latest";
//   - repository components are lower-case: [a-z0-9]+ joined by '.', '_',
//     '__' or runs of '-', components separated by '/';
//   - a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127};
//   - a digest is "sha256:" + 64 lower-case hex digits. With both a tag and a
//     digest the digest decides what is pulled; the tag is kept for display.
//
//   auto ref = parseReference("busybox");
//   if (!ref) return ref.error();
//   ref->toString();         // "docker.io/library/busybox:latest"
//   ref->registryApiHost();  // "registry-1.docker.io"
//   ref->tagOrDigest();      // "latest", what the manifest is fetched by
#pragma once

#include <string>
#include <string_view>

#include "microvm/result.h"

namespace microvm {

struct ImageReference {
  std::string registry;    // "docker.io", "ghcr.io", "localhost:5000"
  std::string repository;  // "library/busybox"
  std::string tag;         // "latest"; empty only when a digest was given alone
  std::string digest;      // "sha256:<hex>" or empty

  // The full normalized form: registry/repository[:tag][@digest].
  std::string toString() const;
  // The host the distribution API is served on: docker.io's lives on
  // registry-1.docker.io; every other registry serves its own name.
  std::string registryApiHost() const;
  // What the manifest is fetched by: the digest if there is one, else the tag.
  const std::string& tagOrDigest() const { return digest.empty() ? tag : digest; }

  bool operator==(const ImageReference&) const = default;
};

// Parses and normalizes `text`; the error names what is wrong with it.
Result<ImageReference> parseReference(std::string_view text);

}  // namespace microvm
