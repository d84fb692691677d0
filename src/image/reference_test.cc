#include "image/reference.h"

#include <gtest/gtest.h>

#include <string>

namespace microvm {
namespace {

const std::string kDigest = "sha256:" + std::string(64, 'a');

ImageReference parsed(std::string_view text) {
  auto ref = parseReference(text);
  EXPECT_TRUE(ref) << text << ": " << ref.error().message();
  return ref ? *ref : ImageReference{};
}

std::string errorOf(std::string_view text) {
  auto ref = parseReference(text);
  EXPECT_FALSE(ref) << text << " parsed as " << (ref ? ref->toString() : "");
  if (ref) return "";
  EXPECT_EQ(ref.error().code(), ErrorCode::kInvalidArgument);
  return ref.error().message();
}

TEST(ReferenceTest, OfficialImageGetsDockerHubLibraryAndLatest) {
  ImageReference ref = parsed("busybox");
  EXPECT_EQ(ref.registry, "docker.io");
  EXPECT_EQ(ref.repository, "library/busybox");
  EXPECT_EQ(ref.tag, "latest");
  EXPECT_EQ(ref.digest, "");
  EXPECT_EQ(ref.toString(), "docker.io/library/busybox:latest");
  EXPECT_EQ(ref.registryApiHost(), "registry-1.docker.io");
  EXPECT_EQ(ref.tagOrDigest(), "latest");
}

TEST(ReferenceTest, UserRepositoryStaysOnDockerHubWithoutLibrary) {
  ImageReference ref = parsed("user/repo:1.0");
  EXPECT_EQ(ref.toString(), "docker.io/user/repo:1.0");
  EXPECT_EQ(parsed("user/team/repo").toString(), "docker.io/user/team/repo:latest");
}

TEST(ReferenceTest, DockerHubSpellingsNormalizeToOneName) {
  for (const char* text : {"busybox", "docker.io/busybox", "docker.io/library/busybox", "index.docker.io/busybox",
                           "index.docker.io/library/busybox:latest", "library/busybox"}) {
    EXPECT_EQ(parsed(text).toString(), "docker.io/library/busybox:latest") << text;
  }
}

TEST(ReferenceTest, RegistryHostsAreRecognizedByDotColonOrLocalhost) {
  ImageReference port = parsed("myhost:5000/team/app:v2");
  EXPECT_EQ(port.registry, "myhost:5000");
  EXPECT_EQ(port.repository, "team/app");
  EXPECT_EQ(port.tag, "v2");
  EXPECT_EQ(port.registryApiHost(), "myhost:5000");

  ImageReference dotted = parsed("ghcr.io/org/app");
  EXPECT_EQ(dotted.registry, "ghcr.io");
  EXPECT_EQ(dotted.repository, "org/app");  // no library/ outside docker.io
  EXPECT_EQ(dotted.tag, "latest");

  ImageReference local = parsed("localhost/app");
  EXPECT_EQ(local.registry, "localhost");
  EXPECT_EQ(local.repository, "app");

  EXPECT_EQ(parsed("127.0.0.1:5000/test/busybox").toString(), "127.0.0.1:5000/test/busybox:latest");
  EXPECT_EQ(parsed("[::1]:5000/app:1").registry, "[::1]:5000");
  // An upper-case first component can only be a host, as in Docker.
  EXPECT_EQ(parsed("Registry/app").registry, "Registry");
}

TEST(ReferenceTest, FirstComponentWithoutDotColonIsAUser) {
  ImageReference ref = parsed("localhostx/app");
  EXPECT_EQ(ref.registry, "docker.io");
  EXPECT_EQ(ref.repository, "localhostx/app");
}

TEST(ReferenceTest, HostPortWithoutPathIsARepositoryAndTag) {
  // Docker reads "localhost:5000" as the image localhost, tag 5000.
  ImageReference ref = parsed("localhost:5000");
  EXPECT_EQ(ref.toString(), "docker.io/library/localhost:5000");
}

TEST(ReferenceTest, DigestAloneHasNoTag) {
  ImageReference ref = parsed("busybox@" + kDigest);
  EXPECT_EQ(ref.tag, "");
  EXPECT_EQ(ref.digest, kDigest);
  EXPECT_EQ(ref.tagOrDigest(), kDigest);
  EXPECT_EQ(ref.toString(), "docker.io/library/busybox@" + kDigest);
}

TEST(ReferenceTest, TagAndDigestTogetherPullByDigest) {
  ImageReference ref = parsed("localhost:5000/app:1.2@" + kDigest);
  EXPECT_EQ(ref.registry, "localhost:5000");
  EXPECT_EQ(ref.tag, "1.2");
  EXPECT_EQ(ref.digest, kDigest);
  EXPECT_EQ(ref.tagOrDigest(), kDigest);
  EXPECT_EQ(ref.toString(), "localhost:5000/app:1.2@" + kDigest);
}

TEST(ReferenceTest, RepositorySeparatorsFollowDocker) {
  EXPECT_TRUE(parseReference("user/a.b_c__d---e/f-g"));
  EXPECT_NE(errorOf("a..b").find("path component"), std::string::npos);
  EXPECT_NE(errorOf("a___b").find("path component"), std::string::npos);
  EXPECT_NE(errorOf("-ab").find("path component"), std::string::npos);
  EXPECT_NE(errorOf("ab-").find("path component"), std::string::npos);
  EXPECT_NE(errorOf("a/.b").find("path component"), std::string::npos);
}

TEST(ReferenceTest, TagRules) {
  EXPECT_EQ(parsed("app:_under.score-1").tag, "_under.score-1");
  EXPECT_EQ(parsed("app:" + std::string(128, 'x')).tag.size(), 128u);
  EXPECT_NE(errorOf("app:" + std::string(129, 'x')).find("tag"), std::string::npos);
  EXPECT_NE(errorOf("app:.hidden").find("tag"), std::string::npos);
  EXPECT_NE(errorOf("app:-dash").find("tag"), std::string::npos);
  EXPECT_NE(errorOf("app:a/b").find("registry \"app:a\""), std::string::npos);  // a ":" before "/" is a port
  EXPECT_NE(errorOf("app:").find("tag \"\""), std::string::npos);
  EXPECT_NE(errorOf("app:t@g").find("digest"), std::string::npos);
}

TEST(ReferenceTest, RejectsUpperCaseRepositoryWithClearMessage) {
  std::string message = errorOf("Busybox");
  EXPECT_NE(message.find("invalid image reference \"Busybox\""), std::string::npos) << message;
  EXPECT_NE(message.find("must be lowercase"), std::string::npos) << message;
  EXPECT_NE(errorOf("ghcr.io/Org/app").find("must be lowercase"), std::string::npos);
}

TEST(ReferenceTest, RejectsBadDigests) {
  EXPECT_NE(errorOf("app@").find("digest"), std::string::npos);
  EXPECT_NE(errorOf("app@sha256:abc").find("digest"), std::string::npos);
  EXPECT_NE(errorOf("app@sha256:" + std::string(64, 'A')).find("digest"), std::string::npos);
  EXPECT_NE(errorOf("app@sha512:" + std::string(128, 'a')).find("digest"), std::string::npos);
  EXPECT_NE(errorOf("app@" + kDigest + "@" + kDigest).find("digest"), std::string::npos);
}

TEST(ReferenceTest, RejectsBadRegistriesAndEmptyParts) {
  EXPECT_NE(errorOf("").find("empty"), std::string::npos);
  EXPECT_NE(errorOf("host:port/app").find("registry \"host:port\""), std::string::npos);
  EXPECT_NE(errorOf("-host.io/app").find("registry"), std::string::npos);
  EXPECT_NE(errorOf("host..io/app").find("registry"), std::string::npos);
  EXPECT_NE(errorOf("[zz]:5000/app").find("registry"), std::string::npos);
  EXPECT_NE(errorOf("ghcr.io/").find("empty"), std::string::npos);
  EXPECT_NE(errorOf("a//b").find("empty path component"), std::string::npos);
  EXPECT_NE(errorOf("/app").find("empty path component"), std::string::npos);
  EXPECT_NE(errorOf("app with space").find("path component"), std::string::npos);
}

TEST(ReferenceTest, RejectsImageIdsAndOverlongNames) {
  EXPECT_NE(errorOf(std::string(64, 'a')).find("image ID"), std::string::npos);
  EXPECT_NE(errorOf("ghcr.io/" + std::string(250, 'a')).find("longer than 255"), std::string::npos);
  // docker.io/library/ counts towards the 255.
  EXPECT_FALSE(parseReference(std::string(240, 'a')));
  EXPECT_TRUE(parseReference(std::string(200, 'a')));
}

TEST(ReferenceTest, ErrorMessagesEscapeControlCharacters) {
  std::string message = errorOf("app\n:evil");
  EXPECT_EQ(message.find('\n'), std::string::npos);
  EXPECT_NE(message.find("\\x0a"), std::string::npos) << message;
}

TEST(ReferenceTest, ToStringRoundTrips) {
  for (const std::string& text : {std::string("busybox"), std::string("a.b:1/c/d:e"), "x@" + kDigest,
                                  "localhost/y:z@" + kDigest, std::string("[::1]/q")}) {
    ImageReference ref = parsed(text);
    EXPECT_EQ(parsed(ref.toString()), ref) << text;
  }
}

}  // namespace
}  // namespace microvm
