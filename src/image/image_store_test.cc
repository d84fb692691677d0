#include "image/image_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "base/fs.h"
#include "base/temp_dir.h"

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

}  // namespace
}  // namespace microvm
