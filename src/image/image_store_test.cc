#include "image/image_store.h"

#include <archive.h>
#include <archive_entry.h>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/fs.h"
#include "base/hash.h"
#include "base/temp_dir.h"
#include "image/docker_archive_source.h"
#include "image/oci_layout_source.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

// What a pull, a build or a create holds keeps prune waiting; once the hold
// goes, prune removes what no tag names, but not what is in use.
TEST(ImageStorePrune, WaitsForEveryHoldAndKeepsWhatIsInUse) {
  auto temp = TempDir::create("image-store-test");
  ASSERT_TRUE(temp);
  fs::path images = temp->path() / "images";
  for (const char* dir : {"rootfs/untagged", "rootfs/dir-used", "tmp/build-in-progress", "blobs/sha256"}) {
    ASSERT_TRUE(makeDirs(images / dir));
  }
  ASSERT_TRUE(writeFileAtomic(images / "blobs" / "sha256" / std::string(64, 'a'), "layer"));

  auto hold = ImageStore::hold(images);
  ASSERT_TRUE(hold) << hold.error().message();
  std::atomic<bool> done{false};
  Result<uint64_t> pruned = uint64_t{0};
  std::thread prune([&] {
    pruned = ImageStore(images).prune([] { return std::set<std::string>{"dir-used"}; });
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  EXPECT_FALSE(done) << "prune did not wait for the hold";
  EXPECT_TRUE(fs::exists(images / "rootfs" / "untagged"));
  EXPECT_TRUE(fs::exists(images / "tmp" / "build-in-progress"));
  EXPECT_TRUE(fs::exists(images / "blobs" / "sha256" / std::string(64, 'a')));

  hold->reset();  // the pull is over
  prune.join();
  ASSERT_TRUE(pruned) << pruned.error().message();
  EXPECT_FALSE(fs::exists(images / "rootfs" / "untagged"));
  EXPECT_FALSE(fs::exists(images / "tmp"));
  EXPECT_FALSE(fs::exists(images / "blobs" / "sha256" / std::string(64, 'a')));
  EXPECT_TRUE(fs::exists(images / "rootfs" / "dir-used"));  // a VM's base
}

using nlohmann::json;

struct TarFile {
  std::string name;
  std::string content;
};

la_ssize_t appendToString(archive*, void* out, const void* data, size_t size) {
  // SAFETY: libarchive hands back the std::string given to archive_write_open.
  static_cast<std::string*>(out)->append(static_cast<const char*>(data), size);
  return static_cast<la_ssize_t>(size);
}

// A plain tar of regular files, as a layer or a docker archive.
std::string tarOf(const std::vector<TarFile>& files) {
  std::string out;
  archive* writer = archive_write_new();
  archive_write_set_format_pax_restricted(writer);
  archive_write_open(writer, &out, nullptr, appendToString, nullptr);
  for (const auto& file : files) {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, file.name.c_str());
    archive_entry_set_filetype(entry, AE_IFREG);
    archive_entry_set_perm(entry, 0644);
    archive_entry_set_size(entry, static_cast<la_int64_t>(file.content.size()));
    archive_write_header(writer, entry);
    archive_write_data(writer, file.content.data(), file.content.size());
    archive_entry_free(entry);
  }
  archive_write_close(writer);
  archive_write_free(writer);
  return out;
}

json descriptor(const char* media_type, const std::string& content) {
  return {{"mediaType", media_type}, {"digest", "sha256:" + sha256Hex(content)}, {"size", content.size()}};
}

constexpr char kConfig[] = R"({"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/app"]}})";
constexpr char kLayerType[] = "application/vnd.oci.image.layer.v1.tar";
constexpr char kConfigType[] = "application/vnd.oci.image.config.v1+json";

class ImageLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto temp = TempDir::create("microvm-image-limits");
    ASSERT_TRUE(temp);
    temp_.emplace(std::move(*temp));
    layout_ = temp_->path() / "layout";
    store_ = temp_->path() / "store";
    ASSERT_TRUE(makeDirs(layout_ / "blobs" / "sha256"));
    ASSERT_TRUE(writeFileAtomic(layout_ / "oci-layout", R"({"imageLayoutVersion":"1.0.0"})", 0644));
  }

  void addBlob(const std::string& content) {
    ASSERT_TRUE(writeFileAtomic(layout_ / "blobs" / "sha256" / sha256Hex(content), content, 0644));
  }

  // Three layers of one 1000-byte file each, unless the test says otherwise.
  std::vector<std::string> layers(size_t count = 3, size_t bytes = 1000) {
    std::vector<std::string> out;
    for (size_t i = 0; i < count; ++i) {
      out.push_back(tarOf({{"file" + std::to_string(i), std::string(bytes, static_cast<char>('a' + i % 26))}}));
    }
    return out;
  }

  // An OCI layout tagged "latest" with this config and these layers.
  void writeLayout(const json& config, const std::vector<json>& layer_descriptors) {
    json manifest = {{"schemaVersion", 2},
                     {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"config", config},
                     {"layers", layer_descriptors}};
    std::string body = manifest.dump();
    addBlob(body);
    json index = {{"schemaVersion", 2},
                  {"manifests",
                   {{{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"digest", "sha256:" + sha256Hex(body)},
                     {"size", body.size()},
                     {"annotations", {{"org.opencontainers.image.ref.name", "latest"}}}}}}};
    ASSERT_TRUE(writeFileAtomic(layout_ / "index.json", index.dump(), 0644));
  }

  void writeLayout(const std::vector<std::string>& layer_tars) {
    addBlob(kConfig);
    std::vector<json> descriptors;
    for (const auto& tar : layer_tars) {
      addBlob(tar);
      descriptors.push_back(descriptor(kLayerType, tar));
    }
    writeLayout(descriptor(kConfigType, kConfig), descriptors);
  }

  Result<ImageRecord> pull(const ImageLimits& limits) {
    PullOptions options;
    options.limits = limits;
    return ImageStore(store_).pull("oci:" + layout_.string() + ":latest", options);
  }

  // The blobs the store kept: a refused image keeps none, not even its
  // manifest, and fetched none of its layers.
  size_t storedBlobs() const {
    size_t count = 0;
    std::error_code ec;
    for (fs::directory_iterator it(store_ / "blobs" / "sha256", ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() != ".lock") ++count;
    }
    return count;
  }

  std::optional<TempDir> temp_;
  fs::path layout_;
  fs::path store_;
};

TEST_F(ImageLimitsTest, TooManyLayersAreRefusedBeforeAnyDownload) {
  writeLayout(layers(3));
  ImageLimits limits;
  limits.max_layers = 2;
  auto pulled = pull(limits);
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message().find("3 layers, more than the limit of 2"), std::string::npos)
      << pulled.error().message();
  EXPECT_EQ(storedBlobs(), 0u);
  limits.max_layers = 3;
  EXPECT_TRUE(pull(limits)) << "three layers are within a limit of three";
}

TEST_F(ImageLimitsTest, OversizedConfigIsRefusedBeforeItIsDownloaded) {
  // The config is declared at 64 MiB and is not even in the layout: a
  // pull that tried to fetch it would fail on the missing file instead.
  std::string huge(64u << 20, '{');
  auto tars = layers(1);
  addBlob(tars[0]);
  writeLayout(descriptor(kConfigType, huge), {descriptor(kLayerType, tars[0])});
  auto pulled = pull({});
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message().find("declares 67108864 bytes, more than the limit of 33554432"),
            std::string::npos)
      << pulled.error().message();
}

TEST_F(ImageLimitsTest, DeclaredLayerSizesAreCappedInAll) {
  auto tars = layers(3);
  writeLayout(tars);
  ImageLimits limits;
  limits.max_download_bytes = tars[0].size() * 2 + tars[1].size() / 2;  // each fits, the three do not
  auto pulled = pull(limits);
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message().find("layers declare more than the limit"), std::string::npos)
      << pulled.error().message();
  EXPECT_EQ(storedBlobs(), 0u);
}

TEST_F(ImageLimitsTest, ExtractedBytesAreCappedForTheWholeImage) {
  // Three layers of 1000 bytes each: every layer is far under the cap, the
  // image is not.
  writeLayout(layers(3, 1000));
  ImageLimits limits;
  limits.max_extracted_bytes = 2500;
  auto pulled = pull(limits);
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message().find("layer 3 of 3"), std::string::npos) << pulled.error().message();
  EXPECT_NE(pulled.error().message().find("image content (all layers) exceeds the limit of 2500 bytes"),
            std::string::npos)
      << pulled.error().message();
  EXPECT_TRUE(fs::is_empty(store_ / "tmp"));  // the half-built tree is gone
  limits.max_extracted_bytes = 3000;
  EXPECT_TRUE(pull(limits));
}

TEST_F(ImageLimitsTest, TarEntriesAreCappedForTheWholeImage) {
  writeLayout(layers(3, 10));
  ImageLimits limits;
  limits.max_entries = 2;
  auto pulled = pull(limits);
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message().find("more than 2 entries in all layers"), std::string::npos)
      << pulled.error().message();
}

// The same image as a `docker save` archive.
class DockerArchiveLimitsTest : public ImageLimitsTest {
 protected:
  fs::path writeArchive(const std::vector<std::string>& layer_tars, const std::string& extra_member = "") {
    std::vector<TarFile> members;
    json layer_names = json::array();
    for (size_t i = 0; i < layer_tars.size(); ++i) {
      std::string name = "layer" + std::to_string(i) + "/layer.tar";
      members.push_back({name, layer_tars[i]});
      layer_names.push_back(name);
    }
    members.push_back({"config.json", kConfig});
    if (!extra_member.empty()) members.push_back({"junk", extra_member});
    json manifest = json::array({{{"Config", "config.json"}, {"RepoTags", {"test/app:latest"}}, {"Layers", layer_names}}});
    members.push_back({"manifest.json", manifest.dump()});
    fs::path archive = temp_->path() / "image.tar";
    EXPECT_TRUE(writeFileAtomic(archive, tarOf(members), 0644));
    return archive;
  }

  Result<ImageRecord> pullArchive(const fs::path& archive, const ImageLimits& limits) {
    PullOptions options;
    options.limits = limits;
    return ImageStore(store_).pull("docker-archive:" + archive.string(), options);
  }
};

TEST_F(DockerArchiveLimitsTest, ImageLimitsHoldForDockerArchives) {
  fs::path archive = writeArchive(layers(3, 1000));
  ImageLimits limits;
  limits.max_layers = 2;
  auto too_many = pullArchive(archive, limits);
  ASSERT_FALSE(too_many);
  EXPECT_NE(too_many.error().message().find("3 layers, more than the limit of 2"), std::string::npos)
      << too_many.error().message();
  limits = {};
  limits.max_extracted_bytes = 2500;
  auto too_big = pullArchive(archive, limits);
  ASSERT_FALSE(too_big);
  EXPECT_NE(too_big.error().message().find("exceeds the limit of 2500 bytes"), std::string::npos)
      << too_big.error().message();
  EXPECT_TRUE(pullArchive(archive, {}));
}

TEST_F(DockerArchiveLimitsTest, ArchiveContentIsCappedWhileItIsUnpacked) {
  // 2 MiB of a member no manifest names: docker save never writes one, and
  // the archive is unpacked before manifest.json (its last member) is read.
  fs::path archive = writeArchive(layers(1), std::string(2u << 20, 'z'));
  ImageLimits limits;
  limits.max_download_bytes = 1;
  limits.max_config_bytes = 1;
  auto pulled = pullArchive(archive, limits);
  ASSERT_FALSE(pulled);
  EXPECT_NE(pulled.error().message().find("larger than an image may be"), std::string::npos)
      << pulled.error().message();
  EXPECT_TRUE(fs::is_empty(store_ / "tmp"));  // the unpacked members are gone
}

TEST(DockerArchiveManifest, ParsesAndRefusesWrongShapes) {
  auto image = parseDockerArchiveManifest(
      R"([{"Config":"c.json","RepoTags":["docker.io/library/busybox:latest"],"Layers":["a/layer.tar","b.tar"]}])",
      "busybox:latest");
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_EQ(image->config, "c.json");
  EXPECT_EQ(image->layers, (std::vector<std::string>{"a/layer.tar", "b.tar"}));
  EXPECT_TRUE(parseDockerArchiveManifest(R"([{"Config":"c.json"}])", ""));
  // Each of these threw (or read a missing key of a const object) before.
  EXPECT_FALSE(parseDockerArchiveManifest(R"([{"Config":"c.json","RepoTags":"busybox:latest"}])", "busybox:latest"));
  for (const char* bad : {R"([{"RepoTags":["x"]}])",
                          R"([{"Config":1}])", R"([{"Config":"c","Layers":{"a":1}}])", R"([{"Config":"c","Layers":[1]}])",
                          R"({})", R"([])", "[1,2]", "nonsense"}) {
    EXPECT_FALSE(parseDockerArchiveManifest(bad, "")) << bad;
    EXPECT_FALSE(parseDockerArchiveManifest(bad, "busybox:latest")) << bad;
  }
  EXPECT_FALSE(parseDockerArchiveManifest("[" + std::string(2u << 20, ' ') + "]", ""));
}

TEST(OciIndex, SelectsByRefNameAndRefusesWrongShapes) {
  std::string digest = "sha256:" + std::string(64, 'a');
  std::string index = R"({"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":")" + digest +
                      R"(","annotations":{"org.opencontainers.image.ref.name":"latest"}},{"digest":"sha256:x"}]})";
  auto entry = selectOciIndexEntry(index, "latest", "index.json");
  ASSERT_TRUE(entry) << entry.error().message();
  EXPECT_EQ(entry->digest, digest);
  EXPECT_EQ(entry->media_type, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_FALSE(selectOciIndexEntry(index, "", "index.json"));  // two entries, no tag
  for (const char* bad : {R"({"manifests":[{"digest":5}]})", R"({"manifests":[{"annotations":"latest"}]})",
                          R"({"manifests":[{"annotations":{"org.opencontainers.image.ref.name":7}}]})",
                          R"({"manifests":{}})", "[]", "nonsense"}) {
    EXPECT_FALSE(selectOciIndexEntry(bad, "latest", "index.json")) << bad;
    EXPECT_FALSE(selectOciIndexEntry(bad, "", "index.json")) << bad;
  }
}

}  // namespace
}  // namespace microvm
