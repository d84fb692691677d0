#include "state/vm_store.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <optional>

#include "base/process.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

class VmStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto temp = TempDir::create("microvm-store-test");
    ASSERT_TRUE(temp);
    temp_.emplace(std::move(*temp));
    auto layout = Layout::resolve(temp_->path());
    ASSERT_TRUE(layout);
    store_.emplace(*layout);
  }

  void addVm(const std::string& id, const std::string& name, std::optional<VmState> state = std::nullopt) {
    auto dir = store_->layout().vmDir(id);
    ASSERT_TRUE(makeDirs(dir));
    VmSpec spec;
    spec.id = id;
    spec.name = name;
    spec.created_at = nowRfc3339();
    ASSERT_TRUE(saveSpec(dir, spec));
    if (state) {
      ASSERT_TRUE(saveState(dir, *state));
    }
  }

  std::optional<TempDir> temp_;
  std::optional<VmStore> store_;
};

const std::string kIdA = "aaaa" + std::string(60, '1');
const std::string kIdB = "aaab" + std::string(60, '2');

TEST_F(VmStoreTest, FindsByIdPrefixAndName) {
  addVm(kIdA, "alpha");
  addVm(kIdB, "beta");
  EXPECT_EQ(store_->find(kIdA)->spec.name, "alpha");
  EXPECT_EQ(store_->find("aaab")->spec.name, "beta");
  EXPECT_EQ(store_->find("beta")->spec.id, kIdB);
  auto ambiguous = store_->find("aaa");
  ASSERT_FALSE(ambiguous);
  EXPECT_NE(ambiguous.error().message().find("ambiguous"), std::string::npos);
  EXPECT_EQ(store_->find("gamma").error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(store_->find("").error().code(), ErrorCode::kInvalidArgument);
}

TEST_F(VmStoreTest, NamesMustBeFree) {
  addVm(kIdA, "alpha");
  EXPECT_TRUE(store_->checkNameFree("beta"));
  EXPECT_EQ(store_->checkNameFree("alpha").error().code(), ErrorCode::kAlreadyExists);
}

TEST_F(VmStoreTest, DeadRunnerIsReconciledToExited) {
  VmState state;
  state.status = VmStatus::kRunning;
  state.runner_pid = ::getpid();
  state.runner_start_time = 1;  // not ours: a reused pid must not count as alive
  addVm(kIdA, "alpha", state);
  auto record = store_->find("alpha");
  ASSERT_TRUE(record);
  EXPECT_EQ(record->state.status, VmStatus::kExited);
  EXPECT_NE(record->state.error.find("died unexpectedly"), std::string::npos);
  // And it was written back, once.
  EXPECT_EQ(loadState(record->dir)->status, VmStatus::kExited);
}

TEST_F(VmStoreTest, LiveRunnerStaysRunning) {
  VmState state;
  state.status = VmStatus::kRunning;
  state.runner_pid = ::getpid();
  state.runner_start_time = *processStartTime(::getpid());
  addVm(kIdA, "alpha", state);
  EXPECT_EQ(store_->find("alpha")->state.status, VmStatus::kRunning);
}

TEST_F(VmStoreTest, BrokenEntriesAreSkippedByList) {
  addVm(kIdA, "alpha");
  ASSERT_TRUE(makeDirs(store_->layout().vmDir(kIdB)));  // no spec.json: a create cut short
  auto records = store_->list();
  ASSERT_TRUE(records);
  ASSERT_EQ(records->size(), 1u);
  EXPECT_EQ((*records)[0].spec.name, "alpha");
}

}  // namespace
}  // namespace microvm
