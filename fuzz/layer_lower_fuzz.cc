// Fuzzes layer application over a populated lower rootfs, where whiteouts
// (".wh.NAME", ".wh..wh..opq") have something to delete and the lower layers'
// symlinks (relative ones inside, one to the directory beside the rootfs, an
// absolute one) wait to be followed. Each input is applied to a fresh copy of
// the same lower tree, in a sandbox that also holds a directory of sentinel
// files next to the rootfs; afterwards the sandbox must hold just those two,
// and the sentinels must be as they were: nothing deleted, written, renamed or
// chmod-ed outside the root.
//
// An input is a layer two ways:
//   - raw bytes, read as a tar (plain, gzip or zstd) like any layer;
//   - a script, when it starts with "#!layer\n": one entry per line,
//       f PATH CONTENT   regular file        d PATH          directory
//       s PATH TARGET    symlink             h PATH TARGET   hard link
//       w PATH           whiteout of PATH    o DIR           DIR made opaque
//     written as a pax tar, so that the fuzzer reaches whiteout logic
//     without first having to discover tar checksums.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/fs.h"
#include "base/temp_dir.h"
#include "base/unique_fd.h"
#include "image/layer_extractor.h"

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kScriptMagic = "#!layer\n";

[[noreturn]] void fail(const std::string& why) {
  (void)std::fprintf(stderr, "layer_lower_fuzz: %s\n", why.c_str());
  std::abort();
}

// Each name in the sentinel directory with its content ("" for a directory).
using Snapshot = std::map<std::string, std::pair<std::string, unsigned>>;

Snapshot snapshotOf(const fs::path& dir) {
  Snapshot out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) fail("lstat " + it->path().string());
    std::string content;
    if (S_ISREG(st.st_mode)) {
      auto text = microvm::readFile(it->path());
      if (!text) fail(text.error().message());
      content = *text;
    }
    out[it->path().lexically_relative(dir).string()] = {content, static_cast<unsigned>(st.st_mode)};
  }
  if (ec) fail("list " + dir.string() + ": " + ec.message());
  return out;
}

// Plain writes: writeFileAtomic's fsyncs would cap the fuzzer at a few
// inputs a second, and nothing here needs to survive a crash.
void writeFile(const fs::path& path, const std::string& content) {
  microvm::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid() || !microvm::writeAll(fd.get(), content)) fail("write " + path.string());
}

struct Sandbox {
  microvm::TempDir dir;
  fs::path outside;
  Snapshot outside_before;
  unsigned outside_mode = 0;
};

// One sandbox per process: sandbox/outside holds the sentinels, and each
// input gets a new sandbox/rootfs.
Sandbox& sandbox() {
  static std::optional<Sandbox> box = [] {
    auto created = microvm::TempDir::create("microvm-layer-lower-fuzz");
    if (!created) fail(created.error().message());
    Sandbox made{std::move(*created), {}, {}, 0};
    made.outside = made.dir.path() / "outside";
    fs::create_directories(made.outside / "sub");
    for (const char* name : {"secret", "passwd", "sub/keep"}) {
      writeFile(made.outside / name, std::string("sentinel ") + name + "\n");
    }
    made.outside_before = snapshotOf(made.outside);
    struct stat st {};
    if (::stat(made.outside.c_str(), &st) != 0) fail("stat outside");
    made.outside_mode = st.st_mode;
    return std::optional<Sandbox>(std::move(made));
  }();
  return *box;
}

void symlinkTo(const std::string& target, const fs::path& path) {
  if (::symlink(target.c_str(), path.c_str()) != 0) fail("symlink " + path.string());
}

// What a small distribution's lower layers leave: files, nested directories,
// a relative symlink inside the root, symlinks out of it (one relative to the
// sentinel directory, one absolute), a hard link, and an opaque candidate.
void populateLower(const fs::path& root) {
  for (const char* dir : {"etc", "bin", "usr/lib", "var/lib/app/data", "opt/app/config", "home/user"}) {
    fs::create_directories(root / dir);
  }
  writeFile(root / "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
  writeFile(root / "etc/hosts", "127.0.0.1 localhost\n");
  writeFile(root / "bin/sh", "#!shell\n");
  writeFile(root / "usr/lib/libc.so", "libc\n");
  writeFile(root / "var/lib/app/data/db", "rows\n");
  writeFile(root / "opt/app/config/app.conf", "key=value\n");
  writeFile(root / "home/user/.profile", "PS1=$\n");
  symlinkTo("usr/lib", root / "lib");
  symlinkTo("../outside", root / "escape");
  symlinkTo("/", root / "host");
  symlinkTo("../../../outside/sub", root / "opt/app/up");
  if (::link((root / "etc/passwd").c_str(), (root / "etc/passwd-").c_str()) != 0) fail("link");
}

struct ArchiveWriterDeleter {
  void operator()(archive* writer) const { archive_write_free(writer); }
};

la_ssize_t appendToString(archive*, void* out, const void* data, size_t size) {
  // SAFETY: libarchive hands back the std::string given to archive_write_open.
  static_cast<std::string*>(out)->append(static_cast<const char*>(data), size);
  return static_cast<la_ssize_t>(size);
}

// "a/b" -> "a/.wh.b"; "b" -> ".wh.b".
std::string whiteoutName(std::string_view path, std::string_view marker_or_prefix, bool opaque) {
  std::string base(path);
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (opaque) return base.empty() ? std::string(marker_or_prefix) : base + "/" + std::string(marker_or_prefix);
  size_t slash = base.rfind('/');
  if (slash == std::string::npos) return std::string(marker_or_prefix) + base;
  return base.substr(0, slash + 1) + std::string(marker_or_prefix) + base.substr(slash + 1);
}

// The script form of an input as a pax tar; malformed lines are skipped.
std::string scriptToTar(std::string_view script) {
  std::string tar;
  std::unique_ptr<archive, ArchiveWriterDeleter> writer(archive_write_new());
  archive_write_set_format_pax(writer.get());
  archive_write_open(writer.get(), &tar, nullptr, appendToString, nullptr);
  size_t lines = 0;
  while (!script.empty() && lines++ < 256) {
    size_t end = script.find('\n');
    std::string_view line = script.substr(0, end);
    script = end == std::string_view::npos ? std::string_view() : script.substr(end + 1);
    if (line.size() < 3 || line[1] != ' ') continue;
    char kind = line[0];
    std::string_view rest = line.substr(2);
    size_t space = rest.find(' ');
    std::string path(rest.substr(0, space));
    std::string argument(space == std::string_view::npos ? std::string_view() : rest.substr(space + 1));
    if (path.empty()) continue;
    std::unique_ptr<archive_entry, void (*)(archive_entry*)> entry(archive_entry_new(), archive_entry_free);
    archive_entry_set_mtime(entry.get(), 1'600'000'000, 0);
    std::string content;
    switch (kind) {
      case 'f':
        content = argument;
        archive_entry_set_filetype(entry.get(), AE_IFREG);
        archive_entry_set_perm(entry.get(), 0644);
        break;
      case 'd':
        archive_entry_set_filetype(entry.get(), AE_IFDIR);
        archive_entry_set_perm(entry.get(), 0755);
        break;
      case 's':
        archive_entry_set_filetype(entry.get(), AE_IFLNK);
        archive_entry_set_perm(entry.get(), 0777);
        archive_entry_set_symlink(entry.get(), argument.c_str());
        break;
      case 'h':
        archive_entry_set_filetype(entry.get(), AE_IFREG);
        archive_entry_set_perm(entry.get(), 0644);
        archive_entry_set_hardlink(entry.get(), argument.c_str());
        break;
      case 'w':
        path = whiteoutName(path, ".wh.", false);
        archive_entry_set_filetype(entry.get(), AE_IFREG);
        archive_entry_set_perm(entry.get(), 0644);
        break;
      case 'o':
        path = whiteoutName(path, ".wh..wh..opq", true);
        archive_entry_set_filetype(entry.get(), AE_IFREG);
        archive_entry_set_perm(entry.get(), 0644);
        break;
      default: continue;
    }
    archive_entry_set_pathname(entry.get(), path.c_str());
    archive_entry_set_size(entry.get(), static_cast<la_int64_t>(content.size()));
    if (archive_write_header(writer.get(), entry.get()) != ARCHIVE_OK) continue;
    if (!content.empty()) archive_write_data(writer.get(), content.data(), content.size());
  }
  archive_write_close(writer.get());
  return tar;
}

// The sandbox must hold exactly the rootfs and the untouched sentinels.
void checkNothingEscaped(Sandbox& box, const fs::path& rootfs) {
  std::error_code ec;
  for (fs::directory_iterator it(box.dir.path(), ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path() != rootfs && it->path() != box.outside) fail("layer wrote beside the rootfs: " + it->path().string());
  }
  struct stat st {};
  if (::lstat(box.outside.c_str(), &st) != 0 || st.st_mode != box.outside_mode) {
    fail("the sentinel directory beside the rootfs was removed or changed");
  }
  if (snapshotOf(box.outside) != box.outside_before) fail("a sentinel file beside the rootfs changed");
}

}  // namespace

// libFuzzer calls the target by this name.
// NOLINTNEXTLINE(readability-identifier-naming)
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Sandbox& box = sandbox();
  fs::path rootfs = box.dir.path() / "rootfs";
  if (::mkdir(rootfs.c_str(), 0755) != 0) fail("mkdir rootfs");
  populateLower(rootfs);
  // SAFETY: viewing bytes as chars; char may alias any object.
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string layer = input.starts_with(kScriptMagic) ? scriptToTar(input.substr(kScriptMagic.size()))
                                                      : std::string(input);
  microvm::ExtractLimits limits{.max_bytes = 16u << 20, .max_entries = 4096, .max_path_length = 4096};
  auto stats = microvm::applyLayerFromMemory(layer, rootfs, limits);
  (void)stats;  // errors are expected; only crashes and escapes are bugs
  checkNothingEscaped(box, rootfs);
  if (!microvm::removeTree(rootfs)) fail("remove rootfs");
  return 0;
}
