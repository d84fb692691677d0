#include "image/manifest.h"

#include <gtest/gtest.h>

#include <string>

namespace microvm {
namespace {

const std::string kDigestA = "sha256:" + std::string(64, 'a');
const std::string kDigestB = "sha256:" + std::string(64, 'b');
const std::string kDigestC = "sha256:" + std::string(64, 'c');
const std::string kDigestD = "sha256:" + std::string(64, 'd');

std::string indexEntry(const std::string& digest, const std::string& platform_json,
                       const std::string& type = std::string(media_type::kOciManifest)) {
  return R"({"mediaType": ")" + type + R"(", "digest": ")" + digest + R"(", "size": 500, "platform": )" +
         platform_json + "}";
}

std::string indexJson(const std::string& entries, const std::string& type = std::string(media_type::kOciIndex)) {
  return R"({"schemaVersion": 2, "mediaType": ")" + type + R"(", "manifests": [)" + entries + "]}";
}

std::string manifestJson(const std::string& layer_type,
                         const std::string& config_type = std::string(media_type::kOciConfig)) {
  return R"({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": ")" +
         config_type + R"(", "digest": ")" + kDigestA + R"(", "size": 1234},
    "layers": [
      {"mediaType": ")" +
         layer_type + R"(", "digest": ")" + kDigestB + R"(", "size": 99},
      {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": ")" +
         kDigestC + R"(", "size": 0}
    ]})";
}

const std::string kMultiArch =
    indexJson(indexEntry(kDigestA, R"({"os": "linux", "architecture": "amd64"})") + "," +
              indexEntry(kDigestB, R"({"os": "linux", "architecture": "arm64", "variant": "v8"})") + "," +
              indexEntry(kDigestC, R"({"os": "linux", "architecture": "arm", "variant": "v7"})") + "," +
              indexEntry(kDigestD, R"({"os": "unknown", "architecture": "unknown"})"));

TEST(ManifestTest, ParsesOciIndexWithPlatforms) {
  auto index = parseImageIndex(kMultiArch);
  ASSERT_TRUE(index) << index.error().message();
  EXPECT_EQ(index->media_type, media_type::kOciIndex);
  ASSERT_EQ(index->manifests.size(), 4u);
  EXPECT_EQ(index->manifests[1].digest, kDigestB);
  EXPECT_EQ(index->manifests[1].size, 500u);
  ASSERT_TRUE(index->manifests[1].platform);
  EXPECT_EQ(index->manifests[1].platform->toString(), "linux/arm64/v8");
}

TEST(ManifestTest, SelectsPlatformsWithNormalizedNames) {
  auto index = parseImageIndex(kMultiArch);
  ASSERT_TRUE(index);
  EXPECT_EQ(selectPlatform(*index)->digest, kDigestA);  // linux/amd64 by default
  EXPECT_EQ(selectPlatform(*index, "linux/x86_64")->digest, kDigestA);
  EXPECT_EQ(selectPlatform(*index, "linux/arm64")->digest, kDigestB);
  EXPECT_EQ(selectPlatform(*index, "linux/aarch64")->digest, kDigestB);
  EXPECT_EQ(selectPlatform(*index, "linux/arm64/v8")->digest, kDigestB);
  EXPECT_EQ(selectPlatform(*index, "linux/arm")->digest, kDigestC);
  EXPECT_EQ(selectPlatform(*index, "Linux/ARM/v7")->digest, kDigestC);
}

TEST(ManifestTest, MissingPlatformListsWhatIsOffered) {
  auto index = parseImageIndex(kMultiArch);
  ASSERT_TRUE(index);
  auto chosen = selectPlatform(*index, "linux/riscv64");
  ASSERT_FALSE(chosen);
  EXPECT_EQ(chosen.error().code(), ErrorCode::kNotFound);
  const std::string& message = chosen.error().message();
  EXPECT_NE(message.find("linux/riscv64"), std::string::npos) << message;
  EXPECT_NE(message.find("linux/amd64, linux/arm64/v8, linux/arm/v7"), std::string::npos) << message;
  EXPECT_FALSE(selectPlatform(*index, "linux/arm/v6"));
}

TEST(ManifestTest, VariantlessRequestTakesAnyVariantButExactWins) {
  auto index =
      parseImageIndex(indexJson(indexEntry(kDigestA, R"({"os": "linux", "architecture": "amd64", "variant": "v3"})") +
                                "," + indexEntry(kDigestB, R"({"os": "linux", "architecture": "amd64"})")));
  ASSERT_TRUE(index);
  EXPECT_EQ(selectPlatform(*index, "linux/amd64")->digest, kDigestB);
  EXPECT_EQ(selectPlatform(*index, "linux/amd64/v3")->digest, kDigestA);

  auto only_v3 =
      parseImageIndex(indexJson(indexEntry(kDigestA, R"({"os": "linux", "architecture": "amd64", "variant": "v3"})")));
  ASSERT_TRUE(only_v3);
  EXPECT_EQ(selectPlatform(*only_v3, "linux/amd64")->digest, kDigestA);
}

TEST(ManifestTest, SelectionSkipsNestedIndexesAndEntriesWithoutPlatform) {
  auto index = parseImageIndex(indexJson(
      indexEntry(kDigestA, R"({"os": "linux", "architecture": "amd64"})", std::string(media_type::kOciIndex)) + "," +
      indexEntry(kDigestB, "null") + "," + indexEntry(kDigestC, R"({"os": "linux", "architecture": "amd64"})")));
  ASSERT_TRUE(index) << index.error().message();
  EXPECT_FALSE(index->manifests[1].platform);
  EXPECT_EQ(selectPlatform(*index)->digest, kDigestC);
}

TEST(ManifestTest, RejectsMalformedPlatformStrings) {
  for (const char* text : {"", "linux", "linux/", "/amd64", "linux/amd64/v1/x", "linux//v7"}) {
    auto platform = parsePlatform(text);
    EXPECT_FALSE(platform) << text;
    if (!platform) {
      EXPECT_EQ(platform.error().code(), ErrorCode::kInvalidArgument);
    }
  }
  EXPECT_EQ(parsePlatform("linux/armhf")->toString(), "linux/arm/v7");
  EXPECT_EQ(parsePlatform("linux/i386")->toString(), "linux/386");
}

TEST(ManifestTest, ParsesDockerManifestList) {
  std::string list = indexJson(
      indexEntry(kDigestA, R"({"os": "linux", "architecture": "amd64"})", std::string(media_type::kDockerManifest)),
      std::string(media_type::kDockerManifestList));
  auto index = parseImageIndex(list);
  ASSERT_TRUE(index) << index.error().message();
  EXPECT_EQ(selectPlatform(*index)->media_type, media_type::kDockerManifest);
}

TEST(ManifestTest, ParsesManifestAndLayerCompressions) {
  auto manifest = parseImageManifest(manifestJson("application/vnd.oci.image.layer.v1.tar+gzip"));
  ASSERT_TRUE(manifest) << manifest.error().message();
  EXPECT_EQ(manifest->config.digest, kDigestA);
  EXPECT_EQ(manifest->config.size, 1234u);
  ASSERT_EQ(manifest->layers.size(), 2u);
  EXPECT_EQ(manifest->layers[0].digest, kDigestB);
  EXPECT_EQ(manifest->layers[1].size, 0u);

  EXPECT_EQ(*layerCompression("application/vnd.oci.image.layer.v1.tar"), LayerCompression::kNone);
  EXPECT_EQ(*layerCompression("application/vnd.oci.image.layer.v1.tar+gzip"), LayerCompression::kGzip);
  EXPECT_EQ(*layerCompression("application/vnd.oci.image.layer.v1.tar+zstd"), LayerCompression::kZstd);
  EXPECT_EQ(*layerCompression("application/vnd.docker.image.rootfs.diff.tar.gzip"), LayerCompression::kGzip);
  EXPECT_EQ(*layerCompression("application/vnd.docker.image.rootfs.diff.tar"), LayerCompression::kNone);
}

TEST(ManifestTest, ParsesDockerSchema2Manifest) {
  std::string text = R"({"schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 7, "digest": ")" +
                     kDigestA + R"("},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 8, "digest": ")" +
                     kDigestB + R"("}]})";
  auto manifest = parseImageManifest(text);
  ASSERT_TRUE(manifest) << manifest.error().message();
  EXPECT_EQ(manifest->media_type, media_type::kDockerManifest);
  EXPECT_EQ(manifest->layers[0].size, 8u);
}

TEST(ManifestTest, RejectsForeignAndUnknownLayers) {
  auto foreign = parseImageManifest(manifestJson("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"));
  ASSERT_FALSE(foreign);
  EXPECT_EQ(foreign.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(foreign.error().message().find("layers[0]: foreign layer"), std::string::npos) << foreign.error().message();

  auto nondistributable =
      parseImageManifest(manifestJson("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"));
  ASSERT_FALSE(nondistributable);
  EXPECT_NE(nondistributable.error().message().find("foreign layer"), std::string::npos);

  auto unknown = parseImageManifest(manifestJson("application/x-squashfs"));
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(unknown.error().message().find("unsupported layer media type \"application/x-squashfs\""),
            std::string::npos)
      << unknown.error().message();
}

TEST(ManifestTest, RejectsArtifactsThatAreNotImages) {
  auto helm = parseImageManifest(
      manifestJson("application/vnd.oci.image.layer.v1.tar", "application/vnd.cncf.helm.config.v1+json"));
  ASSERT_FALSE(helm);
  EXPECT_EQ(helm.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(helm.error().message().find("config.mediaType"), std::string::npos) << helm.error().message();
}

void expectMalformed(const std::string& text, const std::string& fragment) {
  auto manifest = parseImageManifest(text);
  ASSERT_FALSE(manifest) << text;
  EXPECT_EQ(manifest.error().code(), ErrorCode::kProtocol) << manifest.error().message();
  EXPECT_NE(manifest.error().message().find(fragment), std::string::npos) << manifest.error().message();
}

TEST(ManifestTest, RejectsMalformedManifests) {
  const std::string layer = R"("mediaType": "application/vnd.oci.image.layer.v1.tar")";
  const std::string config =
      R"("config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1, "digest": ")" + kDigestA +
      R"("})";
  expectMalformed("", "not valid JSON");
  expectMalformed("{\"config\": ", "not valid JSON");
  expectMalformed("[1, 2]", "not a JSON object");
  expectMalformed("{\"schemaVersion\": 3}", "schemaVersion: must be 2");
  expectMalformed("{\"layers\": []}", "config: missing");
  expectMalformed("{" + config + "}", "layers: missing");
  expectMalformed("{" + config + ", \"layers\": {}}", "layers: must be an array");
  expectMalformed("{" + config + ", \"layers\": [7]}", "layers[0]: must be an object");
  expectMalformed("{" + config + ", \"layers\": [{" + layer + ", \"size\": 1}]}", "layers[0].digest: missing");
  expectMalformed("{" + config + ", \"layers\": [{" + layer + ", \"size\": 1, \"digest\": \"sha256:abc\"}]}",
                  "layers[0].digest: \"sha256:abc\" is not sha256:");
  expectMalformed("{" + config + ", \"layers\": [{" + layer +
                      ", \"size\": 1, \"digest\": \"sha256:" + std::string(64, 'A') + "\"}]}",
                  "is not sha256:");
  expectMalformed("{" + config + ", \"layers\": [{" + layer + ", \"size\": -1, \"digest\": \"" + kDigestB + "\"}]}",
                  "layers[0].size: must not be negative");
  expectMalformed("{" + config + ", \"layers\": [{" + layer + ", \"size\": 1.5, \"digest\": \"" + kDigestB + "\"}]}",
                  "layers[0].size: must be a non-negative integer");
  expectMalformed("{" + config + ", \"layers\": [{" + layer + ", \"size\": \"1\", \"digest\": \"" + kDigestB + "\"}]}",
                  "must be a non-negative integer");
  expectMalformed("{" + config + ", \"layers\": [{\"mediaType\": 5, \"size\": 1, \"digest\": \"" + kDigestB + "\"}]}",
                  "layers[0].mediaType: must be a string");
  expectMalformed(R"({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []})",
                  "is not an image manifest type");
}

TEST(ManifestTest, RejectsMalformedIndexes) {
  auto bad_platform = parseImageIndex(indexJson(indexEntry(kDigestA, R"({"os": "linux"})")));
  ASSERT_FALSE(bad_platform);
  EXPECT_NE(bad_platform.error().message().find("manifests[0].platform.architecture: missing"), std::string::npos)
      << bad_platform.error().message();
  EXPECT_FALSE(parseImageIndex(indexJson(indexEntry(kDigestA, "[]"))));
  EXPECT_FALSE(parseImageIndex(R"({"manifests": null})"));
  EXPECT_FALSE(parseImageIndex(manifestJson("application/vnd.oci.image.layer.v1.tar")));
  EXPECT_EQ(parseImageIndex(std::string(5u << 20, ' ')).error().code(), ErrorCode::kProtocol);
}

TEST(ManifestTest, SchemaOneIsUnsupported) {
  auto schema1 = parseIndexOrManifest(R"({"schemaVersion": 1, "name": "x", "fsLayers": []})");
  ASSERT_FALSE(schema1);
  EXPECT_EQ(schema1.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(schema1.error().message().find("schema 1"), std::string::npos);
  auto by_header = parseIndexOrManifest("{}", "application/vnd.docker.distribution.manifest.v1+prettyjws");
  ASSERT_FALSE(by_header);
  EXPECT_EQ(by_header.error().code(), ErrorCode::kUnsupported);
}

TEST(ManifestTest, IndexOrManifestGoesByMediaTypeThenHeaderThenShape) {
  auto index = parseIndexOrManifest(kMultiArch);
  ASSERT_TRUE(index) << index.error().message();
  EXPECT_TRUE(std::holds_alternative<ImageIndex>(*index));

  auto manifest = parseIndexOrManifest(manifestJson("application/vnd.oci.image.layer.v1.tar"));
  ASSERT_TRUE(manifest) << manifest.error().message();
  EXPECT_TRUE(std::holds_alternative<ImageManifest>(*manifest));

  // No mediaType in the body: the Content-Type decides, parameters ignored.
  std::string bare_index = R"({"schemaVersion": 2, "manifests": []})";
  auto by_header = parseIndexOrManifest(bare_index, "application/vnd.oci.image.index.v1+json; charset=utf-8");
  ASSERT_TRUE(by_header) << by_header.error().message();
  EXPECT_TRUE(std::holds_alternative<ImageIndex>(*by_header));
  // Neither says: the shape does.
  auto by_shape = parseIndexOrManifest(bare_index, "application/json");
  ASSERT_TRUE(by_shape);
  EXPECT_TRUE(std::holds_alternative<ImageIndex>(*by_shape));

  auto unknown = parseIndexOrManifest(R"({"mediaType": "application/vnd.example+json"})");
  ASSERT_FALSE(unknown);
  EXPECT_EQ(unknown.error().code(), ErrorCode::kUnsupported);
  EXPECT_FALSE(parseIndexOrManifest(R"({"schemaVersion": 2})"));
}

TEST(ManifestTest, ParsesImageConfig) {
  auto config = parseImageConfig(R"({
    "architecture": "arm64", "os": "linux", "variant": "v8",
    "config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "Env": ["PATH=/bin", "A=b=c"],
               "WorkingDir": "/work", "User": "1000:1000",
               "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}, "Labels": {"x": "y"}},
    "rootfs": {"type": "layers", "diff_ids": [")" +
                                 kDigestA + R"("]},
    "history": [{"created_by": "x"}]})");
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->os, "linux");
  EXPECT_EQ(config->architecture, "arm64");
  EXPECT_EQ(config->variant, "v8");
  EXPECT_EQ(config->entrypoint, (std::vector<std::string>{"/bin/sh", "-c"}));
  EXPECT_EQ(config->cmd, (std::vector<std::string>{"echo hi"}));
  EXPECT_EQ(config->env, (std::vector<std::string>{"PATH=/bin", "A=b=c"}));
  EXPECT_EQ(config->working_dir, "/work");
  EXPECT_EQ(config->user, "1000:1000");
  EXPECT_EQ(config->exposed_ports, (std::vector<std::string>{"53/udp", "8080/tcp"}));
  EXPECT_EQ(config->diff_ids, (std::vector<std::string>{kDigestA}));
}

TEST(ManifestTest, ConfigToleratesNullsAndMissingFields) {
  auto nulls = parseImageConfig(R"({"os": null, "config": {"Entrypoint": null, "Cmd": null, "Env": null,
      "WorkingDir": null, "User": null, "ExposedPorts": null}, "rootfs": null})");
  ASSERT_TRUE(nulls) << nulls.error().message();
  EXPECT_TRUE(nulls->entrypoint.empty());
  EXPECT_TRUE(nulls->exposed_ports.empty());
  EXPECT_EQ(nulls->working_dir, "");

  auto empty = parseImageConfig("{}");
  ASSERT_TRUE(empty);
  EXPECT_TRUE(empty->cmd.empty());
  EXPECT_TRUE(parseImageConfig(R"({"config": null})"));
}

TEST(ManifestTest, ConfigRejectsWrongTypes) {
  auto string_cmd = parseImageConfig(R"({"config": {"Cmd": "echo hi"}})");
  ASSERT_FALSE(string_cmd);
  EXPECT_NE(string_cmd.error().message().find("image config: config.Cmd: must be an array of strings"),
            std::string::npos)
      << string_cmd.error().message();
  auto number_env = parseImageConfig(R"({"config": {"Env": ["A=1", 2]}})");
  ASSERT_FALSE(number_env);
  EXPECT_NE(number_env.error().message().find("config.Env[1]: must be a string"), std::string::npos);
  EXPECT_FALSE(parseImageConfig(R"({"config": []})"));
  EXPECT_FALSE(parseImageConfig(R"({"config": {"WorkingDir": 1}})"));
  EXPECT_FALSE(parseImageConfig(R"({"config": {"ExposedPorts": ["80/tcp"]}})"));
  EXPECT_FALSE(parseImageConfig(R"({"rootfs": {"diff_ids": ["md5:x"]}})"));
  EXPECT_FALSE(parseImageConfig("not json"));
}

TEST(ManifestTest, DeepNestingAndHugeNumbersDoNotCrash) {
  std::string deep(100000, '[');
  EXPECT_FALSE(parseImageManifest(deep));
  deep += std::string(100000, ']');
  EXPECT_FALSE(parseImageManifest(deep));
  std::string nested = "{\"config\": " + std::string(50000, '[') + std::string(50000, ']') + "}";
  EXPECT_FALSE(parseImageConfig(nested));
  expectMalformed(R"({"config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1e400, "digest": ")" +
                      kDigestA + R"("}, "layers": []})",
                  "not valid JSON");
  auto big = parseImageManifest(R"({"config": {"mediaType": "application/vnd.oci.image.config.v1+json",
      "size": 18446744073709551615, "digest": ")" +
                                kDigestA + R"("}, "layers": []})");
  ASSERT_TRUE(big) << big.error().message();
  EXPECT_EQ(big->config.size, UINT64_MAX);
}

TEST(ManifestTest, DigestValidation) {
  EXPECT_TRUE(isSha256Digest(kDigestA));
  EXPECT_FALSE(isSha256Digest("sha256:" + std::string(63, 'a')));
  EXPECT_FALSE(isSha256Digest("sha256:" + std::string(65, 'a')));
  EXPECT_FALSE(isSha256Digest("sha256:" + std::string(63, 'a') + "g"));
  EXPECT_FALSE(isSha256Digest("SHA256:" + std::string(64, 'a')));
  EXPECT_FALSE(isSha256Digest(std::string(64, 'a')));
}

}  // namespace
}  // namespace microvm
