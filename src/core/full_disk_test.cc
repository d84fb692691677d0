// A full disk under the data dir never hides a VM from `ps -a` nor keeps
// `rm` from removing it: the data dir is a small tmpfs mounted here (root
// only), filled to ENOSPC before the runtime looks at it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include "base/fs.h"
#include "base/temp_dir.h"
#include "base/unique_fd.h"
#include "microvm/runtime.h"
#include "state/layout.h"
#include "state/vm_record.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

const std::string kDead = std::string(64, 'd');
const std::string kExited = std::string(64, 'e');

void addVm(const Layout& layout, const std::string& id, VmStatus status) {
  fs::path dir = layout.vmDir(id);
  ASSERT_TRUE(makeDirs(dir));
  VmSpec spec;
  spec.id = id;
  spec.name = "vm-" + id.substr(0, 4);
  spec.created_at = nowRfc3339();
  ASSERT_TRUE(saveSpec(dir, spec));
  VmState state;
  state.status = status;
  if (status == VmStatus::kRunning) {
    // A runner that died without saying so: our pid with another start
    // time is not alive. Loading it corrects the state, which needs a write.
    state.runner_pid = ::getpid();
    state.runner_start_time = 1;
  } else {
    state.exit_code = 0;
  }
  ASSERT_TRUE(saveState(dir, state));
}

// Writes to `path` until the filesystem says ENOSPC.
void fill(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd.valid());
  std::string block(65536, 'x');
  for (int i = 0; i < 4096; ++i) {
    if (::write(fd.get(), block.data(), block.size()) < 0) {
      ASSERT_EQ(errno, ENOSPC);
      // And byte by byte, so that not even a small file fits.
      while (::write(fd.get(), "x", 1) == 1) {
      }
      return;
    }
  }
  FAIL() << "the tmpfs never filled";
}

TEST(FullDiskTest, PsAllStillListsEveryVmAndRmRemovesThem) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting a tmpfs needs root";
  auto temp = TempDir::create("microvm-full-disk");
  ASSERT_TRUE(temp);
  fs::path home = temp->path() / "home";
  fs::create_directory(home);
  ASSERT_EQ(::mount("tmpfs", home.c_str(), "tmpfs", 0, "size=512k,mode=0700"), 0) << std::strerror(errno);
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{home};

  auto layout = Layout::resolve(home);
  ASSERT_TRUE(layout);
  addVm(*layout, kDead, VmStatus::kRunning);
  addVm(*layout, kExited, VmStatus::kExited);
  fill(home / "filler");
  ASSERT_FALSE(writeFileAtomic(home / "probe", "x")) << "the disk is not full";

  RuntimeOptions options;
  options.data_dir = home;
  auto runtime = Runtime::open(options);
  ASSERT_TRUE(runtime) << runtime.error().message();
  auto listed = runtime->list(true);
  ASSERT_TRUE(listed) << listed.error().message();
  std::vector<std::string> ids;
  for (const auto& vm : *listed) ids.push_back(vm.id);
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{kDead, kExited}));
  for (const auto& vm : *listed) {
    EXPECT_EQ(vm.status, "exited") << vm.id;  // the dead runner's VM is over
  }

  for (const auto& id : {kDead, kExited}) {
    auto removed = runtime->remove(id.substr(0, 12), false);
    EXPECT_TRUE(removed) << id << ": " << removed.error().message();
    EXPECT_FALSE(fs::exists(layout->vmDir(id))) << id;
  }
  listed = runtime->list(true);
  ASSERT_TRUE(listed);
  EXPECT_TRUE(listed->empty());
}

}  // namespace
}  // namespace microvm
