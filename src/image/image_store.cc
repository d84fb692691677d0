#include "image/image_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "base/clock.h"
#include "base/fs.h"
#include "base/paths.h"
#include "base/hash.h"
#include "base/scope_guard.h"
#include "base/unique_fd.h"
#include "image/docker_archive_source.h"
#include "image/layer_extractor.h"
#include "image/manifest.h"
#include "image/oci_layout_source.h"
#include "image/reference.h"
#include "image/registry_client.h"
#include "image/root_disk.h"

namespace microvm {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kParallelDownloads = 4;

// An exclusive flock on `path`, held for the object's lifetime.
Result<UniqueFd> lockFile(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  while (::flock(fd.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return Error::fromErrno("lock " + path.string());
  }
  return fd;
}

// Where an image comes from and by what name it is stored.
struct Source {
  std::unique_ptr<BlobSource> blobs;
  std::string reference;  // normalized, the key in refs.json
  std::string fetch_by;   // tag or digest for fetchManifest
};

// docker-archive:PATH[:REPO:TAG]; the archive is unpacked into `scratch`.
Result<Source> openDockerArchive(const std::string& text, const fs::path& scratch, const ImageLimits& limits) {
  std::string rest = text.substr(std::string("docker-archive:").size());
  // PATH ends at the first ':' after which a file exists no more.
  std::string path = rest;
  std::string tag;
  std::error_code ec;
  for (size_t colon = rest.find(':'); colon != std::string::npos; colon = rest.find(':', colon + 1)) {
    if (fs::is_regular_file(rest.substr(0, colon), ec)) {
      path = rest.substr(0, colon);
      tag = rest.substr(colon + 1);
      break;
    }
  }
  if (!fs::is_regular_file(path, ec)) return Error(ErrorCode::kNotFound, "docker archive " + path + ": no such file");
  MICROVM_TRY(makeDirs(scratch));
  auto source = DockerArchiveSource::open(path, tag, scratch, limits);
  if (!source) return std::move(source).error();
  std::string key = "docker-archive:" + fs::absolute(path, ec).string() + (tag.empty() ? "" : ":" + tag);
  return Source{std::move(*source), key, ""};
}

Result<Source> openSource(const std::string& text, const PullOptions& pull, const fs::path& scratch) {
  const RegistryOptions& options = pull.registry;
  if (text.rfind("docker-archive:", 0) == 0) return openDockerArchive(text, scratch, pull.limits);
  if (text.rfind("oci:", 0) == 0) {
    // oci:PATH[:TAG]; a PATH may itself contain ':' only before the last one.
    std::string rest = text.substr(4);
    size_t colon = rest.rfind(':');
    std::string path = colon == std::string::npos ? rest : rest.substr(0, colon);
    std::string tag = colon == std::string::npos ? "" : rest.substr(colon + 1);
    std::error_code ec;
    fs::path absolute = fs::absolute(path, ec);
    if (!fs::is_directory(absolute, ec)) {
      return Error(ErrorCode::kNotFound, "OCI layout " + path + ": no such directory");
    }
    return Source{std::make_unique<OciLayoutSource>(absolute),
                  "oci:" + absolute.string() + (tag.empty() ? "" : ":" + tag), tag};
  }
  auto reference = parseReference(text);
  if (!reference) return std::move(reference).error();
  return Source{std::make_unique<RegistryClient>(reference->registry, reference->repository, options),
                reference->toString(), reference->tagOrDigest()};
}

json recordToJson(const ImageRecord& record) {
  return {{"reference", record.reference},
          {"manifest_digest", record.manifest_digest},
          {"config_digest", record.config_digest},
          {"entrypoint", record.defaults.entrypoint},
          {"cmd", record.defaults.cmd},
          {"env", record.defaults.env},
          {"working_dir", record.defaults.working_dir},
          {"user", record.defaults.user},
          {"exposed_ports", record.exposed_ports},
          {"size", record.size},
          {"pulled_at", record.pulled_at}};
}

Result<ImageRecord> recordFromJson(const json& j, const fs::path& base_disk) {
  try {
    ImageRecord record;
    j.at("reference").get_to(record.reference);
    j.at("manifest_digest").get_to(record.manifest_digest);
    j.at("config_digest").get_to(record.config_digest);
    j.at("entrypoint").get_to(record.defaults.entrypoint);
    j.at("cmd").get_to(record.defaults.cmd);
    j.at("env").get_to(record.defaults.env);
    j.at("working_dir").get_to(record.defaults.working_dir);
    j.at("user").get_to(record.defaults.user);
    j.at("exposed_ports").get_to(record.exposed_ports);
    j.at("size").get_to(record.size);
    j.at("pulled_at").get_to(record.pulled_at);
    record.base_disk = base_disk;
    return record;
  } catch (const json::exception& e) {
    return Error(ErrorCode::kProtocol, std::string("malformed image record: ") + e.what());
  }
}

}  // namespace

Result<void> checkImageLimits(const ImageManifest& manifest, const ImageLimits& limits) {
  if (manifest.layers.size() > limits.max_layers) {
    return Error(ErrorCode::kProtocol, "image has " + std::to_string(manifest.layers.size()) +
                                           " layers, more than the limit of " + std::to_string(limits.max_layers));
  }
  if (manifest.config.size > limits.max_config_bytes) {
    return Error(ErrorCode::kProtocol, "image config " + manifest.config.digest.substr(0, 19) + " declares " +
                                           std::to_string(manifest.config.size) + " bytes, more than the limit of " +
                                           std::to_string(limits.max_config_bytes));
  }
  uint64_t total = 0;
  for (const auto& layer : manifest.layers) {
    // Compared one by one first, so that the sum cannot wrap around.
    if (layer.size > limits.max_download_bytes || total > limits.max_download_bytes - layer.size) {
      return Error(ErrorCode::kProtocol, "image layers declare more than the limit of " +
                                             std::to_string(limits.max_download_bytes) + " bytes in all");
    }
    total += layer.size;
  }
  return success();
}

// The parts of a pull, in order; each step is skipped when its result is
// already in the store.
class Puller {
 public:
  Puller(fs::path dir, Source source, PullOptions options)
      : dir_(std::move(dir)), source_(std::move(source)), options_(std::move(options)) {}

  Result<ImageRecord> run();

 private:
  fs::path blobPath(const std::string& digest) const { return ImagePaths(dir_).blob(digest); }
  Result<void> ensureBlob(const Descriptor& descriptor);
  Result<void> ensureLayers(const std::vector<Descriptor>& layers);
  Result<void> buildRootfs(const fs::path& entry, const std::vector<Descriptor>& layers, ImageRecord& record);

  fs::path dir_;
  Source source_;
  PullOptions options_;
};

Result<void> Puller::ensureBlob(const Descriptor& descriptor) {
  fs::path path = blobPath(descriptor.digest);
  if (fs::exists(path)) return success();
  // One download per blob, however many pulls want it at once.
  auto lock = lockFile(path.string() + ".lock");
  if (!lock) return std::move(lock).error();
  if (fs::exists(path)) return success();
  return source_.blobs->fetchBlob(descriptor.digest, descriptor.size, path);
}

Result<void> Puller::ensureLayers(const std::vector<Descriptor>& layers) {
  std::atomic<size_t> next{0};
  std::vector<std::optional<Error>> errors(layers.size());
  auto worker = [&] {
    for (size_t i; (i = next++) < layers.size();) {
      if (auto fetched = ensureBlob(layers[i]); !fetched) errors[i] = fetched.error();
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 0; t < std::min(kParallelDownloads, layers.size()); ++t) threads.emplace_back(worker);
  for (auto& thread : threads) thread.join();
  for (auto& error : errors) {
    if (error) return *error;
  }
  return success();
}

Result<void> Puller::buildRootfs(const fs::path& entry, const std::vector<Descriptor>& layers, ImageRecord& record) {
  fs::path base = ImagePaths::baseDisk(entry);
  if (fs::exists(base)) return success();
  auto tmp_root = dir_ / "tmp";
  MICROVM_TRY(makeDirs(tmp_root));
  auto work = tmp_root / randomHex(8);
  ScopeGuard remove_work([&] { (void)removeTree(work); });
  fs::path tree = work / "rootfs";
  MICROVM_TRY(makeDirs(tree, 0755));
  // The byte and entry caps are the whole image's: each layer gets what the
  // layers below left of them.
  ExtractLimits budget;
  budget.max_bytes = options_.limits.max_extracted_bytes;
  budget.max_entries = options_.limits.max_entries;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto applied = applyLayer(blobPath(layers[i].digest), tree, budget);
    if (!applied) {
      return std::move(applied).error().withContext("layer " + std::to_string(i + 1) + " of " +
                                                    std::to_string(layers.size()) + " (" +
                                                    layers[i].digest.substr(0, 19) + ")");
    }
    budget.bytes_used += applied->bytes;
    budget.entries_used += applied->entries;
  }
  auto digest = measureTree(tree);
  if (!digest) return std::move(digest).error();
  record.size = digest->bytes;
  MICROVM_TRY(buildExt4Image(tree, *digest, base));
  return success();
}

namespace {

// Points `key` in refs.json at `digest`, under the refs lock.
Result<void> writeRef(const fs::path& dir, const std::string& key, const std::string& digest) {
  auto refs_lock = lockFile(dir / "refs.lock");
  if (!refs_lock) return std::move(refs_lock).error();
  json refs = json::object();
  if (auto text = readFile(dir / "refs.json"); text) {
    refs = json::parse(*text, nullptr, /*allow_exceptions=*/false);
    if (!refs.is_object()) refs = json::object();
  }
  refs[key] = digest;
  return writeFileAtomic(dir / "refs.json", refs.dump(2) + "\n", 0644);
}

}  // namespace

Result<ImageRecord> Puller::run() {
  MICROVM_TRY(makeDirs(ImagePaths(dir_).blobsDir()));
  MICROVM_TRY(makeDirs(ImagePaths(dir_).rootfsDir()));
  auto fetched = source_.blobs->fetchManifest(source_.fetch_by);
  if (!fetched) return std::move(fetched).error();
  auto document = parseIndexOrManifest(fetched->body, fetched->media_type);
  if (!document) return std::move(document).error();
  if (auto* index = std::get_if<ImageIndex>(&*document)) {
    auto chosen = selectPlatform(*index, options_.platform);
    if (!chosen) return std::move(chosen).error();
    fetched = source_.blobs->fetchManifest(chosen->digest);
    if (!fetched) return std::move(fetched).error();
    document = parseIndexOrManifest(fetched->body, fetched->media_type);
    if (!document) return std::move(document).error();
    if (!std::holds_alternative<ImageManifest>(*document)) {
      return Error(ErrorCode::kProtocol, "index entry " + chosen->digest + " is not an image manifest");
    }
  }
  auto manifest = std::get<ImageManifest>(std::move(*document));
  MICROVM_TRY(checkImageLimits(manifest, options_.limits));
  // Kept with the blobs, so that prune knows which blobs the image uses.
  if (!fs::exists(blobPath(fetched->digest))) {
    MICROVM_TRY(writeFileAtomic(blobPath(fetched->digest), fetched->body, 0644));
  }

  MICROVM_TRY(ensureBlob(manifest.config));
  auto config_text = readFile(blobPath(manifest.config.digest));
  if (!config_text) return std::move(config_text).error();
  auto config = parseImageConfig(*config_text);
  if (!config) return std::move(config).error();
  MICROVM_TRY(ensureLayers(manifest.layers));

  ImageRecord record;
  record.reference = source_.reference;
  record.manifest_digest = fetched->digest;
  record.config_digest = manifest.config.digest;
  record.defaults.entrypoint = config->entrypoint;
  record.defaults.cmd = config->cmd;
  record.defaults.env = config->env;
  record.defaults.working_dir = config->working_dir;
  record.defaults.user = config->user;
  record.exposed_ports = config->exposed_ports;
  record.pulled_at = nowRfc3339();

  fs::path entry = ImagePaths(dir_).rootfsDir() / fetched->digest.substr(7);
  MICROVM_TRY(makeDirs(entry));
  {
    // One build per image, however many pulls want it at once.
    auto lock = lockFile(entry / "build.lock");
    if (!lock) return std::move(lock).error();
    if (auto existing = readFile(ImagePaths::imageRecord(entry)); existing && fs::exists(ImagePaths::baseDisk(entry))) {
      json j = json::parse(*existing, nullptr, /*allow_exceptions=*/false);
      if (j.is_object()) record.size = j.value("size", uint64_t{0});
    }
    MICROVM_TRY(buildRootfs(entry, manifest.layers, record));
    MICROVM_TRY(writeFileAtomic(ImagePaths::imageRecord(entry), recordToJson(record).dump(2) + "\n", 0644));
  }
  record.base_disk = ImagePaths::baseDisk(entry);

  MICROVM_TRY(writeRef(dir_, record.reference, record.manifest_digest));
  return record;
}

Result<UniqueFd> ImageStore::hold(const fs::path& images_dir) {
  MICROVM_TRY(makeDirs(images_dir));
  fs::path path = ImagePaths(images_dir).storeLock();
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd.valid()) return Error::fromErrno("open " + path.string());
  while (::flock(fd.get(), LOCK_SH) != 0) {
    if (errno != EINTR) return Error::fromErrno("lock " + path.string());
  }
  return fd;
}

Result<ImageRecord> ImageStore::pull(const std::string& reference, const PullOptions& options) {
  // Until its ref is written, nothing tells prune that the blobs, the
  // build in tmp/ and the rootfs entry are this pull's.
  auto held = hold(dir_);
  if (!held) return std::move(held).error();
  fs::path scratch = dir_ / "tmp" / ("source-" + randomHex(6));
  ScopeGuard remove_scratch([&] { (void)removeTree(scratch); });
  auto source = openSource(reference, options, scratch);
  if (!source) return std::move(source).error();
  auto pulled = Puller(dir_, std::move(*source), options).run();
  if (!pulled) return std::move(pulled).error().withContext("pull " + reference);
  return pulled;
}

namespace {

Result<json> loadRefs(const fs::path& dir) {
  auto text = readFile(dir / "refs.json");
  if (!text) return json::object();
  json refs = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!refs.is_object()) return Error(ErrorCode::kProtocol, "malformed " + (dir / "refs.json").string());
  return refs;
}

Result<ImageRecord> loadRecord(const fs::path& dir, const std::string& reference, const std::string& digest) {
  fs::path entry = ImagePaths(dir).rootfsDir() / digest.substr(7);
  auto text = readFile(ImagePaths::imageRecord(entry));
  if (!text) return std::move(text).error();
  json j = json::parse(*text, nullptr, /*allow_exceptions=*/false);
  auto record = recordFromJson(j, ImagePaths::baseDisk(entry));
  if (record) record->reference = reference;
  return record;
}

// The refs.json key for `text`, without touching the network.
std::string storeKey(const std::string& text) {
  if (text.rfind("docker-archive:", 0) == 0) {
    std::string rest = text.substr(15);
    std::error_code ec;
    for (size_t colon = rest.find(':'); colon != std::string::npos; colon = rest.find(':', colon + 1)) {
      if (fs::is_regular_file(rest.substr(0, colon), ec)) {
        return "docker-archive:" + fs::absolute(rest.substr(0, colon), ec).string() + rest.substr(colon);
      }
    }
    return "docker-archive:" + fs::absolute(rest, ec).string();
  }
  if (text.rfind("oci:", 0) == 0) {
    std::string rest = text.substr(4);
    size_t colon = rest.rfind(':');
    std::error_code ec;
    std::string path = fs::absolute(colon == std::string::npos ? rest : rest.substr(0, colon), ec).string();
    return "oci:" + path + (colon == std::string::npos ? "" : rest.substr(colon));
  }
  auto reference = parseReference(text);
  return reference ? reference->toString() : text;
}

}  // namespace

Result<std::optional<ImageRecord>> ImageStore::find(const std::string& reference) const {
  auto refs = loadRefs(dir_);
  if (!refs) return std::move(refs).error();
  std::string key = storeKey(reference);
  if (!refs->contains(key) || !(*refs)[key].is_string()) return std::optional<ImageRecord>();
  auto record = loadRecord(dir_, key, (*refs)[key].get<std::string>());
  if (!record || !fs::exists(record->base_disk)) return std::optional<ImageRecord>();  // half there: pull again
  return std::optional<ImageRecord>(std::move(*record));
}

Result<ImageRecord> ImageStore::tag(const std::string& reference, const ImageRecord& image) {
  std::string key = storeKey(reference);
  MICROVM_TRY(writeRef(dir_, key, image.manifest_digest));
  ImageRecord tagged = image;
  tagged.reference = key;
  return tagged;
}

Result<std::vector<ImageRecord>> ImageStore::list() const {
  auto refs = loadRefs(dir_);
  if (!refs) return std::move(refs).error();
  std::vector<ImageRecord> records;
  for (const auto& [reference, digest] : refs->items()) {
    if (!digest.is_string()) continue;
    if (auto record = loadRecord(dir_, reference, digest.get<std::string>()); record) records.push_back(*record);
  }
  return records;
}

Result<void> ImageStore::remove(const std::string& reference) {
  auto refs_lock = lockFile(dir_ / "refs.lock");
  if (!refs_lock) return std::move(refs_lock).error();
  auto refs = loadRefs(dir_);
  if (!refs) return std::move(refs).error();
  std::string key = storeKey(reference);
  if (!refs->contains(key)) return Error(ErrorCode::kNotFound, "no such image: " + reference);
  std::string digest = (*refs)[key];
  refs->erase(key);
  MICROVM_TRY(writeFileAtomic(dir_ / "refs.json", refs->dump(2) + "\n", 0644));
  for (const auto& [other, other_digest] : refs->items()) {
    if (other_digest == digest) return success();  // another tag still uses it
  }
  return removeTree(ImagePaths(dir_).rootfsDir() / digest.substr(7));
}

Result<uint64_t> ImageStore::prune(const std::function<std::set<std::string>()>& in_use) {
  // Exclusive: no pull, build or create is under way while prune decides.
  MICROVM_TRY(makeDirs(dir_));
  auto store_lock = lockFile(ImagePaths(dir_).storeLock());
  if (!store_lock) return std::move(store_lock).error();
  auto refs_lock = lockFile(dir_ / "refs.lock");
  if (!refs_lock) return std::move(refs_lock).error();
  auto refs = loadRefs(dir_);
  if (!refs) return std::move(refs).error();
  std::set<std::string> keep_rootfs;
  for (const auto& [reference, digest] : refs->items()) {
    if (digest.is_string()) keep_rootfs.insert(digest.get<std::string>().substr(7));
  }
  std::set<std::string> used = in_use ? in_use() : std::set<std::string>();
  uint64_t freed = 0;
  std::error_code ec;
  auto sizeOf = [&](const fs::path& path) {
    uint64_t total = 0;
    for (fs::recursive_directory_iterator it(path, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->is_regular_file(ec)) total += it->file_size(ec);
    }
    if (fs::is_regular_file(path, ec)) total += fs::file_size(path, ec);
    return total;
  };
  for (fs::directory_iterator it(ImagePaths(dir_).rootfsDir(), ec), end; !ec && it != end; it.increment(ec)) {
    if (keep_rootfs.count(it->path().filename()) || used.count(it->path().filename())) continue;
    freed += sizeOf(it->path());
    MICROVM_TRY(removeTree(it->path()));
  }
  // Blobs are kept only while a kept image's manifest, config or layers
  // name them; the simplest safe rule: drop every blob when nothing is kept,
  // else keep the blobs the kept images were built from.
  std::set<std::string> keep_blobs;
  for (const auto& hex : keep_rootfs) {
    keep_blobs.insert(hex);
    auto manifest_text = readFile(ImagePaths(dir_).blobsDir() / hex);
    if (!manifest_text) continue;
    auto manifest = parseImageManifest(*manifest_text);
    if (!manifest) continue;
    keep_blobs.insert(manifest->config.digest.substr(7));
    for (const auto& layer : manifest->layers) keep_blobs.insert(layer.digest.substr(7));
  }
  for (fs::directory_iterator it(ImagePaths(dir_).blobsDir(), ec), end; !ec && it != end; it.increment(ec)) {
    std::string name = it->path().filename();
    if (keep_blobs.count(name.substr(0, 64))) continue;
    freed += sizeOf(it->path());
    ::unlink(it->path().c_str());
  }
  (void)removeTree(dir_ / "tmp");
  return freed;
}

}  // namespace microvm
