#include "image/layer_extractor.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <optional>
#include <set>
#include <string>

#include "base/fs.h"
#include "base/temp_dir.h"
#include "base/unique_fd.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

enum class Compression { kNone, kGzip, kZstd };

// GoogleTest finds this name to print test parameters.
void PrintTo(Compression compression, std::ostream* out) {  // NOLINT(readability-identifier-naming)
  *out << (compression == Compression::kGzip ? "gzip" : compression == Compression::kZstd ? "zstd" : "plain");
}

// Metadata of one tar entry.
struct EntryMeta {
  mode_t mode = 0644;
  int64_t uid = 0;
  int64_t gid = 0;
  time_t mtime = 1'600'000'000;
  std::vector<std::pair<std::string, std::string>> xattrs;
};

EntryMeta withMode(mode_t mode) {
  EntryMeta meta;
  meta.mode = mode;
  return meta;
}

// Builds tar layers in memory with libarchive's writer, the way image
// builders do: pax format, optionally gzip- or zstd-compressed.
class TarBuilder {
 public:
  explicit TarBuilder(Compression compression = Compression::kNone) : writer_(archive_write_new()) {
    archive_write_set_format_pax(writer_);
    if (compression == Compression::kGzip) archive_write_add_filter_gzip(writer_);
    if (compression == Compression::kZstd) archive_write_add_filter_zstd(writer_);
    // No padding after the compressed stream: zstd readers take it for
    // another frame, and real layers have none.
    archive_write_set_bytes_in_last_block(writer_, 1);
    archive_write_open(writer_, &out_, nullptr, &TarBuilder::append, nullptr);
  }
  ~TarBuilder() { archive_write_free(writer_); }
  TarBuilder(const TarBuilder&) = delete;
  TarBuilder& operator=(const TarBuilder&) = delete;

  TarBuilder& file(const std::string& path, const std::string& content, const EntryMeta& meta = EntryMeta()) {
    return add(
        path, AE_IFREG, meta, [&](archive_entry* entry) { archive_entry_set_size(entry, content.size()); }, content);
  }
  TarBuilder& dir(const std::string& path, mode_t mode = 0755) {
    return add(path, AE_IFDIR, withMode(mode), [](archive_entry*) {});
  }
  TarBuilder& symlink(const std::string& path, const std::string& target) {
    return add(path, AE_IFLNK, withMode(0777),
               [&](archive_entry* entry) { archive_entry_set_symlink(entry, target.c_str()); });
  }
  TarBuilder& hardlink(const std::string& path, const std::string& target) {
    return add(path, AE_IFREG, EntryMeta(),
               [&](archive_entry* entry) { archive_entry_set_hardlink(entry, target.c_str()); });
  }
  TarBuilder& fifo(const std::string& path) {
    return add(path, AE_IFIFO, withMode(0620), [](archive_entry*) {});
  }
  TarBuilder& charDevice(const std::string& path, unsigned major_number, unsigned minor_number) {
    return add(path, AE_IFCHR, withMode(0666),
               [&](archive_entry* entry) { archive_entry_set_rdev(entry, makedev(major_number, minor_number)); });
  }
  TarBuilder& whiteout(const std::string& path) { return file(path, ""); }

  std::string build() {
    archive_write_close(writer_);
    return out_;
  }

 private:
  template <typename Setup>
  TarBuilder& add(const std::string& path, mode_t type, const EntryMeta& meta, Setup setup,
                  const std::string& data = "") {
    archive_entry* entry = archive_entry_new();
    archive_entry_set_pathname(entry, path.c_str());
    archive_entry_set_filetype(entry, type);
    archive_entry_set_perm(entry, meta.mode);
    archive_entry_set_uid(entry, meta.uid);
    archive_entry_set_gid(entry, meta.gid);
    archive_entry_set_mtime(entry, meta.mtime, 0);
    for (const auto& [name, value] : meta.xattrs) {
      archive_entry_xattr_add_entry(entry, name.c_str(), value.data(), value.size());
    }
    setup(entry);
    EXPECT_GE(archive_write_header(writer_, entry), ARCHIVE_WARN) << archive_error_string(writer_);
    if (!data.empty()) archive_write_data(writer_, data.data(), data.size());
    archive_entry_free(entry);
    return *this;
  }

  static la_ssize_t append(archive*, void* client, const void* buffer, size_t length) {
    static_cast<std::string*>(client)->append(static_cast<const char*>(buffer), length);
    return static_cast<la_ssize_t>(length);
  }

  archive* writer_;
  std::string out_;
};

ExtractLimits maxBytes(uint64_t bytes) {
  ExtractLimits limits;
  limits.max_bytes = bytes;
  return limits;
}
ExtractLimits maxEntries(uint64_t entries) {
  ExtractLimits limits;
  limits.max_entries = entries;
  return limits;
}
ExtractLimits maxPathLength(uint64_t length) {
  ExtractLimits limits;
  limits.max_path_length = length;
  return limits;
}

class LayerExtractorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto temp = TempDir::create("microvm-layer-test");
    ASSERT_TRUE(temp);
    sandbox_.emplace(std::move(*temp));
    root_ = sandbox_->path() / "rootfs";
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
  }

  Result<ExtractStats> apply(const std::string& layer, const ExtractLimits& limits = {}) {
    return applyLayerFromMemory(layer, root_, limits);
  }

  // The sandbox holds the rootfs and whatever the test put there itself:
  // anything else was written by the extractor outside the root.
  void expectNothingOutside(const std::set<std::string>& expected = {}) {
    std::set<std::string> found;
    for (const auto& item : fs::directory_iterator(sandbox_->path())) found.insert(item.path().filename());
    std::set<std::string> allowed = expected;
    allowed.insert("rootfs");
    EXPECT_EQ(found, allowed);
  }

  void expectError(const Result<ExtractStats>& result, const std::string& fragment) {
    ASSERT_FALSE(result) << "layer applied, expected: " << fragment;
    EXPECT_NE(result.error().message().find(fragment), std::string::npos) << result.error().message();
  }

  struct stat lstatOf(const fs::path& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
    return st;
  }

  bool exists(const fs::path& relative) {
    struct stat st {};
    return ::lstat((root_ / relative).c_str(), &st) == 0;
  }

  std::string contents(const fs::path& relative) {
    auto text = readFile(root_ / relative);
    EXPECT_TRUE(text) << text.error().message();
    return text ? *text : "";
  }

  std::optional<TempDir> sandbox_;
  fs::path root_;
};

class LayerFormatsTest : public LayerExtractorTest, public ::testing::WithParamInterface<Compression> {};

TEST_P(LayerFormatsTest, ExtractsFilesDirectoriesLinksAndMetadata) {
  EntryMeta tool_meta = withMode(04755);
  tool_meta.uid = 1234;
  tool_meta.gid = 5678;
  tool_meta.mtime = 1'000'000'000;
  EntryMeta xattr_meta;
  xattr_meta.xattrs = {{"user.origin", "layer"}, {"system.posix_acl_access", "junk"}};
  TarBuilder tar(GetParam());
  tar.dir("bin", 0750)
      .file("bin/tool", "#!/bin/sh\necho hi\n", tool_meta)
      .file("etc/config", "secret", withMode(0600))  // parent not in the tar
      .symlink("bin/sh", "tool")
      .hardlink("bin/tool2", "bin/tool")
      .fifo("run/pipe")
      .file("data/empty", "", withMode(0444))
      .file("data/xattr", "x", xattr_meta);
  std::string layer = tar.build();
  // The bytes really are what the test claims; libarchive must detect them.
  const char* magic = GetParam() == Compression::kGzip   ? "\x1f\x8b"
                      : GetParam() == Compression::kZstd ? "\x28\xb5\x2f\xfd"
                                                         : "bin/";
  EXPECT_EQ(layer.rfind(magic, 0), 0u);
  auto stats = apply(layer);
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(stats->entries, 8u);
  EXPECT_EQ(stats->bytes, 18u + 6u + 1u);
  EXPECT_EQ(stats->whiteouts, 0u);

  EXPECT_EQ(contents("bin/tool"), "#!/bin/sh\necho hi\n");
  struct stat tool = lstatOf(root_ / "bin/tool");
  EXPECT_EQ(tool.st_mode & 07777, 04755u);  // set-uid survives the chown
  EXPECT_EQ(tool.st_mtime, 1'000'000'000);
  if (::geteuid() == 0) {
    EXPECT_EQ(tool.st_uid, 1234u);
    EXPECT_EQ(tool.st_gid, 5678u);
  }
  EXPECT_EQ(lstatOf(root_ / "bin").st_mode & 07777, 0750u);
  EXPECT_EQ(lstatOf(root_ / "etc").st_mode & 07777, 0755u);  // made implicitly
  EXPECT_EQ(lstatOf(root_ / "etc/config").st_mode & 07777, 0600u);
  EXPECT_EQ(contents("etc/config"), "secret");
  EXPECT_EQ(fs::read_symlink(root_ / "bin/sh"), "tool");
  struct stat tool2 = lstatOf(root_ / "bin/tool2");
  EXPECT_EQ(tool2.st_ino, tool.st_ino);
  EXPECT_EQ(tool2.st_nlink, 2u);
  EXPECT_TRUE(S_ISFIFO(lstatOf(root_ / "run/pipe").st_mode));
  EXPECT_EQ(lstatOf(root_ / "run/pipe").st_mode & 07777, 0620u);
  EXPECT_EQ(lstatOf(root_ / "data/empty").st_size, 0);

  char value[16] = {};
  ssize_t got = ::getxattr((root_ / "data/xattr").c_str(), "user.origin", value, sizeof value);
  if (got >= 0 || errno != ENOTSUP) {
    EXPECT_EQ(std::string(value, got > 0 ? got : 0), "layer");
  }
  EXPECT_LT(::getxattr((root_ / "data/xattr").c_str(), "system.posix_acl_access", value, sizeof value), 0);
  expectNothingOutside();
}

INSTANTIATE_TEST_SUITE_P(Compressions, LayerFormatsTest,
                         ::testing::Values(Compression::kNone, Compression::kGzip, Compression::kZstd),
                         [](const auto& param_info) {
                           switch (param_info.param) {
                             case Compression::kGzip: return "gzip";
                             case Compression::kZstd: return "zstd";
                             default: return "plain";
                           }
                         });

TEST_F(LayerExtractorTest, ReadsLayerFilesAndFds) {
  auto store = TempDir::create("microvm-layer-blob");
  ASSERT_TRUE(store);
  fs::path blob = store->path() / "layer.tar.gz";
  ASSERT_TRUE(writeFileAtomic(blob, TarBuilder(Compression::kGzip).file("a", "from file").build()));
  auto from_file = applyLayer(blob, root_);
  ASSERT_TRUE(from_file) << from_file.error().message();
  EXPECT_EQ(contents("a"), "from file");

  ASSERT_TRUE(writeFileAtomic(blob, TarBuilder(Compression::kZstd).file("b", "from fd").build()));
  UniqueFd fd(::open(blob.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  auto from_fd = applyLayerFromFd(fd.get(), root_);
  ASSERT_TRUE(from_fd) << from_fd.error().message();
  EXPECT_EQ(contents("b"), "from fd");

  auto missing = applyLayer(store->path() / "missing", root_);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  auto no_rootfs = applyLayerFromMemory(TarBuilder().file("a", "").build(), sandbox_->path() / "absent");
  ASSERT_FALSE(no_rootfs);
  EXPECT_NE(no_rootfs.error().message().find("open rootfs"), std::string::npos);
}

TEST_F(LayerExtractorTest, EmptyLayersApplyNothing) {
  for (const std::string& layer : {std::string(), std::string(1024, '\0'), TarBuilder(Compression::kGzip).build()}) {
    auto stats = apply(layer);
    ASSERT_TRUE(stats) << stats.error().message();
    EXPECT_EQ(stats->entries, 0u);
  }
}

TEST_F(LayerExtractorTest, LaterEntriesReplaceEarlierOnes) {
  ASSERT_TRUE(apply(TarBuilder()
                        .dir("x")
                        .file("x/child", "1")
                        .file("f", "file")
                        .symlink("l", "f")
                        .dir("d", 0700)
                        .file("d/keep", "kept")
                        .build()));
  auto second = apply(TarBuilder()
                          .file("x", "now a file")  // a directory replaced by a file
                          .dir("f")                 // a file replaced by a directory
                          .file("l", "no longer a link")
                          .dir("d", 0711)  // a directory over a directory keeps its children
                          .build());
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_EQ(contents("x"), "now a file");
  EXPECT_TRUE(S_ISDIR(lstatOf(root_ / "f").st_mode));
  EXPECT_TRUE(S_ISREG(lstatOf(root_ / "l").st_mode));
  EXPECT_EQ(contents("d/keep"), "kept");
  EXPECT_EQ(lstatOf(root_ / "d").st_mode & 07777, 0711u);
}

TEST_F(LayerExtractorTest, WhiteoutsDeleteLowerFilesAndOpaqueDirectoriesAreRepopulated) {
  auto lower = apply(TarBuilder()
                         .dir("etc")
                         .file("etc/keep", "k")
                         .file("etc/gone", "g")
                         .dir("tree")
                         .file("tree/deep/file", "d")
                         .dir("opaque")
                         .file("opaque/old", "o")
                         .file("opaque/sub/older", "o")
                         .file("opaque/replaced", "lower")
                         .build());
  ASSERT_TRUE(lower) << lower.error().message();

  auto upper = apply(TarBuilder()
                         .whiteout("etc/.wh.gone")
                         .whiteout(".wh.tree")
                         .whiteout("etc/.wh.never-existed")
                         .whiteout("missing-dir/.wh.x")
                         .dir("opaque")
                         .file("opaque/early", "this layer, before the marker")
                         .whiteout("opaque/.wh..wh..opq")
                         .file("opaque/new", "n")
                         .file("opaque/replaced", "upper")
                         .file("fresh", "this layer")
                         .whiteout(".wh.fresh")  // same layer: does not hide "fresh"
                         .whiteout("opaque/.wh..wh.plnk")
                         .build());
  ASSERT_TRUE(upper) << upper.error().message();
  EXPECT_EQ(upper->whiteouts, 6u);
  EXPECT_EQ(upper->skipped, 1u);

  EXPECT_TRUE(exists("etc/keep"));
  EXPECT_FALSE(exists("etc/gone"));
  EXPECT_FALSE(exists("tree"));
  EXPECT_FALSE(exists("missing-dir"));
  EXPECT_FALSE(exists("opaque/old"));
  EXPECT_FALSE(exists("opaque/sub"));
  EXPECT_EQ(contents("opaque/early"), "this layer, before the marker");
  EXPECT_EQ(contents("opaque/new"), "n");
  EXPECT_EQ(contents("opaque/replaced"), "upper");
  EXPECT_EQ(contents("fresh"), "this layer");
  for (const auto& item : fs::recursive_directory_iterator(root_)) {
    EXPECT_EQ(item.path().filename().string().rfind(".wh.", 0), std::string::npos) << item.path();
  }
}

TEST_F(LayerExtractorTest, OpaqueMarkerKeepsThisLayersEntriesInSubdirectories) {
  ASSERT_TRUE(apply(TarBuilder().file("a/b/lower", "l").file("a/other", "o").build()));
  auto upper = apply(TarBuilder().file("a/b/upper", "u").whiteout("a/.wh..wh..opq").build());
  ASSERT_TRUE(upper) << upper.error().message();
  EXPECT_TRUE(exists("a/b/upper"));
  EXPECT_FALSE(exists("a/b/lower"));
  EXPECT_FALSE(exists("a/other"));
}

TEST_F(LayerExtractorTest, RejectsInvalidWhiteoutNames) {
  expectError(apply(TarBuilder().file("d/x", "").whiteout("d/.wh.").build()), "invalid whiteout");
  expectError(apply(TarBuilder().file("d/x", "").whiteout("d/.wh..").build()), "invalid whiteout");
  EXPECT_TRUE(exists("d/x"));
}

TEST_F(LayerExtractorTest, RelativeSymlinksInsideTheRootAreFollowedForParents) {
  // Merged /usr: lib -> usr/lib; an entry under lib/ lands in usr/lib/.
  auto stats = apply(TarBuilder().dir("usr/lib").symlink("lib", "usr/lib").file("lib/libc.so", "elf").build());
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(contents("usr/lib/libc.so"), "elf");
}

TEST_F(LayerExtractorTest, RootDirectoryEntrySetsMetadataButCannotBeReplaced) {
  ASSERT_TRUE(apply(TarBuilder().dir("./", 0751).file("./a", "a").build()));
  EXPECT_EQ(lstatOf(root_).st_mode & 07777, 0751u);
  EXPECT_EQ(contents("a"), "a");
  expectError(apply(TarBuilder().file(".", "x").build()), "refusing to replace the root directory");
  expectError(apply(TarBuilder().symlink("/", "/etc").build()), "refusing to replace the root directory");
  expectError(apply(TarBuilder().file("a", "").hardlink("./", "a").build()), "refusing to replace the root directory");
  expectError(apply(TarBuilder().hardlink("x", ".").build()), "hard link to the root directory");
  EXPECT_TRUE(S_ISDIR(lstatOf(root_).st_mode));
  expectNothingOutside();
}

TEST_F(LayerExtractorTest, DotDotNamesAreRefusedAndNamed) {
  auto escape = apply(TarBuilder().file("../../etc/passwd", "root::0:0::/:/bin/sh").build());
  ASSERT_FALSE(escape);
  EXPECT_EQ(escape.error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(escape.error().message(), "entry \"../../etc/passwd\": path escapes the root filesystem");
  expectError(apply(TarBuilder().file("../x", "x").build()), "path escapes the root filesystem");
  expectError(apply(TarBuilder().file("a/../../x", "x").build()), "path escapes the root filesystem");
  expectError(apply(TarBuilder().file("a/../b", "x").build()), "entry \"a/../b\": path has a \"..\" component");
  expectError(apply(TarBuilder().dir("..").build()), "path escapes the root filesystem");
  EXPECT_FALSE(exists("b"));
  expectNothingOutside();
}

TEST_F(LayerExtractorTest, AbsoluteNamesAreMadeRelative) {
  // An absolute name that points at the sandbox itself must land inside.
  std::string outside = (sandbox_->path() / "outside").string();
  auto stats = apply(TarBuilder().file(outside, "inside after all").file("/etc/hostname", "vm").build());
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(contents(outside.substr(1)), "inside after all");
  EXPECT_EQ(contents("etc/hostname"), "vm");
  expectNothingOutside();
}

TEST_F(LayerExtractorTest, RefusesToWriteThroughSymlinksLeavingTheRoot) {
  std::string sandbox = sandbox_->path().string();
  struct Case {
    std::string name;
    std::string layer;
  };
  std::vector<Case> cases = {
      {"absolute", TarBuilder().symlink("escape", "/").file("escape/pwned", "x").build()},
      {"absolute to sandbox", TarBuilder().symlink("escape", sandbox).file("escape/pwned", "x").build()},
      {"relative", TarBuilder().symlink("escape", "..").file("escape/pwned", "x").build()},
      {"nested relative", TarBuilder().dir("a").symlink("a/up", "../..").file("a/up/pwned", "x").build()},
      {"chain", TarBuilder()
                    .symlink("one", "two")
                    .symlink("two", "three/..")
                    .dir("three")
                    .symlink("three/out", "../..")
                    .symlink("hop", "three/out")
                    .file("hop/pwned", "x")
                    .build()},
      {"directory entry", TarBuilder().symlink("escape", "..").dir("escape/pwned").build()},
      {"symlink entry", TarBuilder().symlink("escape", "..").symlink("escape/pwned", "x").build()},
      {"opaque marker", TarBuilder().symlink("escape", "..").whiteout("escape/.wh..wh..opq").build()},
      {"whiteout", TarBuilder().symlink("escape", "..").whiteout("escape/.wh.rootfs").build()},
  };
  for (const auto& test : cases) {
    SCOPED_TRACE(test.name);
    auto result = apply(test.layer);
    expectError(result, "leads outside the root filesystem through a symlink");
    if (!result) {
      EXPECT_EQ(result.error().message().rfind("entry \"", 0), 0u) << result.error().message();
    }
    expectNothingOutside();
    ASSERT_TRUE(removeTree(root_));
    ASSERT_EQ(::mkdir(root_.c_str(), 0755), 0);
  }
  EXPECT_FALSE(fs::exists("/pwned"));
}

TEST_F(LayerExtractorTest, EntriesReplaceSymlinksInsteadOfWritingThroughThem) {
  ASSERT_TRUE(writeFileAtomic(sandbox_->path() / "victim", "original", 0644));
  auto stats = apply(TarBuilder()
                         .symlink("file", "../victim")
                         .file("file", "replaced")
                         .symlink("dir", "..")
                         .dir("dir")
                         .symlink("abs", (sandbox_->path() / "victim").string())
                         .file("abs", "replaced too")
                         .build());
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(*readFile(sandbox_->path() / "victim"), "original");
  EXPECT_EQ(contents("file"), "replaced");
  EXPECT_TRUE(S_ISDIR(lstatOf(root_ / "dir").st_mode));
  expectNothingOutside({"victim"});
}

TEST_F(LayerExtractorTest, HardlinksMustStayInsideTheRoot) {
  ASSERT_TRUE(writeFileAtomic(sandbox_->path() / "victim", "host secret", 0644));
  expectError(apply(TarBuilder().hardlink("passwd", "../../etc/passwd").build()),
              "hard link target \"../../etc/passwd\": path escapes the root filesystem");
  expectError(apply(TarBuilder().hardlink("leak", "../victim").build()), "path escapes the root filesystem");
  expectError(apply(TarBuilder().hardlink("leak", "a/../x").build()), "path has a \"..\" component");
  expectError(apply(TarBuilder().symlink("escape", "..").hardlink("leak", "escape/victim").build()),
              "leads outside the root filesystem through a symlink");
  expectError(apply(TarBuilder().symlink("etc", "/etc").hardlink("leak", "etc/passwd").build()),
              "leads outside the root filesystem through a symlink");
  expectError(apply(TarBuilder().hardlink("ghost", "missing").build()), "hard link target \"missing\" does not exist");
  expectError(apply(TarBuilder().dir("d").hardlink("dirlink", "d").build()), "is a directory");
  expectError(apply(TarBuilder().file("self", "").hardlink("self", "self").build()), "hard link to itself");
  struct stat victim = lstatOf(sandbox_->path() / "victim");
  EXPECT_EQ(victim.st_nlink, 1u);
  EXPECT_FALSE(exists("leak"));
  expectNothingOutside({"victim"});
}

TEST_F(LayerExtractorTest, HardlinkToAnOutwardSymlinkLinksTheSymlinkItself) {
  // The symlink is inert data inside the root; what it names must never be
  // linked in (that would copy a host file into the image).
  ASSERT_TRUE(writeFileAtomic(sandbox_->path() / "victim", "host secret", 0644));
  std::string victim = (sandbox_->path() / "victim").string();
  auto stats = apply(TarBuilder()
                         .symlink("abs", victim)
                         .symlink("rel", "../victim")
                         .hardlink("abs_link", "abs")
                         .hardlink("rel_link", "rel")
                         .build());
  ASSERT_TRUE(stats) << stats.error().message();
  for (const char* name : {"abs_link", "rel_link"}) {
    struct stat link = lstatOf(root_ / name);
    EXPECT_TRUE(S_ISLNK(link.st_mode)) << name;
    EXPECT_EQ(link.st_nlink, 2u) << name;
  }
  EXPECT_EQ(lstatOf(root_ / "abs_link").st_ino, lstatOf(root_ / "abs").st_ino);
  EXPECT_EQ(fs::read_symlink(root_ / "rel_link"), "../victim");
  EXPECT_EQ(lstatOf(sandbox_->path() / "victim").st_nlink, 1u);
  EXPECT_EQ(*readFile(sandbox_->path() / "victim"), "host secret");
  expectNothingOutside({"victim"});
}

TEST_F(LayerExtractorTest, HardlinksToLowerLayersAndThroughInnerSymlinks) {
  ASSERT_TRUE(apply(TarBuilder().file("usr/bin/busybox", "bb", withMode(0755)).symlink("bin", "usr/bin").build()));
  auto stats = apply(TarBuilder().hardlink("usr/bin/sh", "usr/bin/busybox").hardlink("ls", "bin/busybox").build());
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(lstatOf(root_ / "usr/bin/sh").st_ino, lstatOf(root_ / "usr/bin/busybox").st_ino);
  EXPECT_EQ(lstatOf(root_ / "ls").st_nlink, 3u);
}

TEST_F(LayerExtractorTest, ByteLimitIsCheckedBeforeWriting) {
  std::string half(600, 'x');
  auto result = apply(TarBuilder().file("a", half).file("b", half).build(), maxBytes(1000));
  expectError(result, "entry \"b\": layer content exceeds the limit of 1000 bytes");
  EXPECT_TRUE(exists("a"));
  EXPECT_FALSE(exists("b"));
  EXPECT_TRUE(apply(TarBuilder().file("c", std::string(1000, 'y')).build(), maxBytes(1000)));
}

TEST_F(LayerExtractorTest, EntryLimitCountsEveryHeader) {
  TarBuilder tar;
  tar.dir("d").file("d/1", "").whiteout("d/.wh.x").file("d/2", "");
  expectError(apply(tar.build(), maxEntries(3)), "more than 3 entries");
  EXPECT_FALSE(exists("d/2"));
  auto exact = apply(TarBuilder().file("a", "").file("b", "").build(), maxEntries(2));
  ASSERT_TRUE(exact) << exact.error().message();
  EXPECT_EQ(exact->entries, 2u);
}

TEST_F(LayerExtractorTest, PathLengthLimitCoversNamesAndLinkTargets) {
  ExtractLimits limits = maxPathLength(16);
  expectError(apply(TarBuilder().file(std::string(17, 'n'), "").build(), limits), "name is longer than 16 bytes");
  expectError(apply(TarBuilder().symlink("s", std::string(17, 't')).build(), limits),
              "symlink target is longer than 16 bytes");
  expectError(apply(TarBuilder().hardlink("h", std::string(17, 't')).build(), limits),
              "hard link target is longer than 16 bytes");
  EXPECT_TRUE(apply(TarBuilder().file(std::string(16, 'n'), "").build(), limits));
}

TEST_F(LayerExtractorTest, CorruptLayersFailCleanly) {
  // Incompressible content, so that half the stream ends inside the data.
  std::string noise(1 << 20, '\0');
  uint32_t state = 12345;
  for (char& c : noise) c = static_cast<char>((state = state * 1103515245 + 12345) >> 24);
  std::string good = TarBuilder(Compression::kGzip).file("big", noise).build();
  expectError(apply(good.substr(0, good.size() / 2)), "entry \"big\": read file data");
  auto garbage = apply("this is not a tar archive, not even a little bit" + std::string(600, '!'));
  ASSERT_FALSE(garbage);
  EXPECT_EQ(garbage.error().code(), ErrorCode::kProtocol);
  std::string tar = TarBuilder().file("f", "data").build();
  tar[148] ^= 0x01;  // the header checksum
  EXPECT_FALSE(apply(tar));
  expectNothingOutside();
}

TEST_F(LayerExtractorTest, NonAsciiNamesKeepTheirBytes) {
  auto stats = apply(TarBuilder().file("caf\xc3\xa9/na\xc3\xafve.txt", "ok").file("raw\xff", "bytes").build());
  ASSERT_TRUE(stats) << stats.error().message();
  EXPECT_EQ(contents("caf\xc3\xa9/na\xc3\xafve.txt"), "ok");
  EXPECT_EQ(contents("raw\xff"), "bytes");
}

TEST_F(LayerExtractorTest, ErrorMessagesEscapeHostileNames) {
  auto result = apply(TarBuilder().file("../\n[fake log line]\x1b[31m", "").build());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message().find('\n'), std::string::npos);
  EXPECT_EQ(result.error().message().find('\x1b'), std::string::npos);
  EXPECT_NE(result.error().message().find("\\x0a[fake log line]\\x1b"), std::string::npos) << result.error().message();
}

TEST_F(LayerExtractorTest, DeviceNodesNeedRoot) {
  auto stats = apply(TarBuilder().charDevice("dev/null", 1, 3).file("dev/marker", "").build());
  ASSERT_TRUE(stats) << stats.error().message();
  struct stat st {};
  if (::geteuid() == 0 && ::lstat((root_ / "dev/null").c_str(), &st) == 0) {
    EXPECT_TRUE(S_ISCHR(st.st_mode));
    EXPECT_EQ(st.st_rdev, makedev(1, 3));
    EXPECT_EQ(st.st_mode & 07777, 0666u);
    EXPECT_EQ(stats->skipped, 0u);
  } else {
    EXPECT_FALSE(exists("dev/null"));
    EXPECT_EQ(stats->skipped, 1u);
  }
  EXPECT_TRUE(exists("dev/marker"));
}

// Runs applyLayerFromMemory as an unprivileged user: directly when the tests
// are not root, else in a child that drops to nobody. Returns the stats, or
// the error message prefixed with "error: ".
std::string applyUnprivileged(const std::string& layer, const fs::path& sandbox, const fs::path& rootfs) {
  auto describe = [](const Result<ExtractStats>& result) {
    if (!result) return "error: " + result.error().message();
    return "entries=" + std::to_string(result->entries) + " skipped=" + std::to_string(result->skipped);
  };
  if (::geteuid() != 0) return describe(applyLayerFromMemory(layer, rootfs));
  constexpr uid_t kNobody = 65534;
  if (::chown(sandbox.c_str(), kNobody, kNobody) != 0 || ::chown(rootfs.c_str(), kNobody, kNobody) != 0) {
    return "error: chown sandbox";
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return "error: pipe";
  UniqueFd read_end(pipe_fds[0]);
  UniqueFd write_end(pipe_fds[1]);
  pid_t child = ::fork();
  if (child == 0) {
    std::string outcome = "error: drop privileges";
    if (::setgroups(0, nullptr) == 0 && ::setgid(kNobody) == 0 && ::setuid(kNobody) == 0) {
      outcome = describe(applyLayerFromMemory(layer, rootfs));
    }
    (void)writeAll(write_end.get(), outcome);
    ::_exit(0);
  }
  write_end.reset();
  std::string outcome;
  char buffer[512];
  for (ssize_t n; (n = ::read(read_end.get(), buffer, sizeof buffer)) > 0;) outcome.append(buffer, n);
  int status = 0;
  ::waitpid(child, &status, 0);
  return outcome;
}

TEST_F(LayerExtractorTest, UnprivilegedSkipsDevicesAndKeepsDirectoriesWritable) {
  std::string lower = TarBuilder()
                          .dir("ro", 0555)
                          .file("ro/old", "o")
                          .dir("locked", 0)
                          .charDevice("dev/sda", 8, 0)
                          .file("suid", "s", withMode(04755))
                          .build();
  EXPECT_EQ(applyUnprivileged(lower, sandbox_->path(), root_), "entries=5 skipped=1");
  EXPECT_EQ(lstatOf(root_ / "ro").st_mode & 07777, 0755u);  // u+rwx kept
  EXPECT_EQ(lstatOf(root_ / "locked").st_mode & 07777, 0700u);
  EXPECT_FALSE(exists("dev/sda"));
  EXPECT_EQ(lstatOf(root_ / "suid").st_mode & 07777, 04755u);

  // A later layer can still add to and delete from the read-only directory.
  std::string upper = TarBuilder().whiteout("ro/.wh.old").file("ro/new", "n").file("locked/x", "x").build();
  EXPECT_EQ(applyUnprivileged(upper, sandbox_->path(), root_), "entries=3 skipped=0");
  EXPECT_FALSE(exists("ro/old"));
  EXPECT_TRUE(exists("ro/new"));
  EXPECT_TRUE(exists("locked/x"));
}

}  // namespace
}  // namespace microvm
