// Boot templates' bookkeeping without a VM: what refuses a template, what
// changes the key, and how create() finds, finishes and cleans staged ones.
// (tests/e2e/template_test.cc boots real VMs through them.)
#include "core/templates.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <optional>

#include "base/fs.h"
#include "base/paths.h"
#include "base/temp_dir.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;

class TemplatesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto dir = TempDir::create("microvm-templates-test");
    ASSERT_TRUE(dir.ok());
    dir_.emplace(std::move(*dir));
    spec_.id = std::string(64, 'a');
    spec_.vsock = true;
    spec_.kernel = write("vmlinux", "kernel image");
    spec_.initramfs = write("initramfs.cpio", "initramfs archive");
    spec_.base_disk = write("base.ext4", "a root disk");
    spec_.qemu = write("qemu-system-x86_64", "#!/bin/sh\necho 'QEMU emulator version 7.2.0 (test)'\n");
    ::chmod(spec_.qemu.c_str(), 0755);
  }

  std::string write(const std::string& name, const std::string& bytes) {
    fs::path path = dir_->path() / name;
    EXPECT_TRUE(writeFileAtomic(path, bytes));
    return path.string();
  }
  fs::path vmDir() const { return dir_->path() / "vms" / spec_.id; }

  std::optional<TempDir> dir_;
  VmSpec spec_;
};

TEST_F(TemplatesTest, WhatCannotBeTemplatedSaysWhy) {
  EXPECT_FALSE(templateRefusal(spec_, true, vmDir()));
  EXPECT_NE(templateRefusal(spec_, false, vmDir())->find("--no-template"), std::string::npos);
  VmSpec with_volume = spec_;
  with_volume.shares.push_back({"/srv", "/data", false, std::nullopt, std::nullopt, "vol0"});
  EXPECT_NE(templateRefusal(with_volume, true, vmDir())->find("volumes"), std::string::npos);
  VmSpec with_port = spec_;
  with_port.vsock_ports.push_back({5000, "/tmp/s.sock", false});
  EXPECT_NE(templateRefusal(with_port, true, vmDir())->find("vsock"), std::string::npos);
  VmSpec injected = spec_;
  injected.initramfs = (vmDir() / "initramfs.cpio").string();
  EXPECT_NE(templateRefusal(injected, true, vmDir())->find("injected"), std::string::npos);
  VmSpec restored = spec_;
  restored.restore_from = "/snapshots/s/memory.bin";
  EXPECT_TRUE(templateRefusal(restored, true, vmDir()));
}

TEST_F(TemplatesTest, TheKeyFollowsTheMachineAndTheFilesButNotTheWorkload) {
  std::string key = templateKey(spec_);
  EXPECT_EQ(key.size(), 32u);
  VmSpec workload = spec_;
  workload.argv = {"/bin/other"};
  workload.env = {"A=B"};
  workload.hostname = "elsewhere";
  workload.id = std::string(64, 'b');
  EXPECT_EQ(templateKey(workload), key);
  VmSpec memory = spec_;
  memory.memory_mib = spec_.memory_mib * 2;
  EXPECT_NE(templateKey(memory), key);
  VmSpec network = spec_;
  network.network = "none";
  EXPECT_NE(templateKey(network), key);
  // A rewritten initramfs (a new inode, even with the same bytes) is a new key.
  write("initramfs.cpio", "initramfs archive");
  EXPECT_NE(templateKey(spec_), key);
}

TEST_F(TemplatesTest, AStagedTemplateIsSealedAndPutInPlaceAndAnAbandonedOneIsRemoved) {
  fs::path data = dir_->path() / "data";
  VmSpec first = spec_;
  ASSERT_TRUE(chooseBootTemplate(data, first, true, vmDir()));
  ASSERT_FALSE(first.template_capture.empty());
  EXPECT_TRUE(first.template_dir.empty());
  // The saving VM is not in the data dir at all: its staging goes, and the
  // next VM saves one itself.
  VmSpec second = spec_;
  second.id = std::string(64, 'c');
  ASSERT_TRUE(chooseBootTemplate(data, second, true, vmDir()));
  EXPECT_FALSE(fs::exists(first.template_capture));
  ASSERT_FALSE(second.template_capture.empty());
  // Its runner saved it (device state, RAM, the mark).
  fs::path staged = second.template_capture;
  ASSERT_TRUE(writeFileAtomic(TemplatePaths::memory(staged), std::string(4096, 'm')));
  ASSERT_TRUE(writeFileAtomic(TemplatePaths::ram(staged), std::string(8192, 'r')));
  ASSERT_TRUE(writeFileAtomic(TemplatePaths::saved(staged), "saved\n"));
  VmSpec third = spec_;
  third.id = std::string(64, 'd');
  ASSERT_TRUE(chooseBootTemplate(data, third, true, vmDir()));
  EXPECT_EQ(third.template_dir, TemplatePaths(data).entry(templateKey(spec_)).string());
  EXPECT_TRUE(third.template_capture.empty());
  EXPECT_FALSE(fs::exists(staged));
  auto listed = listTemplates(data);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_FALSE((*listed)[0].stale);
  // A damaged template is removed and made again, never used.
  ASSERT_TRUE(writeFileAtomic(TemplatePaths::memory(third.template_dir), std::string(4096, 'x')));
  VmSpec fourth = spec_;
  fourth.id = std::string(64, 'e');
  ASSERT_TRUE(chooseBootTemplate(data, fourth, true, vmDir()));
  EXPECT_TRUE(fourth.template_dir.empty());
  EXPECT_FALSE(fourth.template_capture.empty());
  EXPECT_FALSE(fs::exists(third.template_dir));
  auto pruned = pruneTemplates(data);
  ASSERT_TRUE(pruned);
  EXPECT_TRUE(fs::is_empty(TemplatePaths(data).dir()));
}

// Templates shared by several data dirs (microvm-runtime's containers): the
// staging directory names the saving VM's directory, wherever it is.
TEST_F(TemplatesTest, AStagedTemplateOfAVmInAnotherDataDirIsLeftWhileItRuns) {
  fs::path shared = dir_->path() / "shared-templates";
  fs::path saver_dir = dir_->path() / "other-data" / "vms" / std::string(64, 'a');
  ASSERT_TRUE(makeDirs(saver_dir));
  VmState running;
  running.status = VmStatus::kRunning;
  ASSERT_TRUE(saveState(saver_dir, running));
  VmSpec first = spec_;
  ASSERT_TRUE(chooseBootTemplate(shared, first, true, saver_dir));
  ASSERT_FALSE(first.template_capture.empty());
  VmSpec second = spec_;
  second.id = std::string(64, 'c');
  ASSERT_TRUE(chooseBootTemplate(shared, second, true, vmDir()));
  EXPECT_TRUE(fs::exists(first.template_capture));
  EXPECT_TRUE(second.template_capture.empty());
  EXPECT_NE(second.template_note.find("is saving the template"), std::string::npos) << second.template_note;
  // Once it has exited, its staging goes and the next VM saves one.
  VmState exited;
  exited.status = VmStatus::kExited;
  ASSERT_TRUE(saveState(saver_dir, exited));
  VmSpec third = spec_;
  third.id = std::string(64, 'd');
  ASSERT_TRUE(chooseBootTemplate(shared, third, true, vmDir()));
  EXPECT_FALSE(fs::exists(first.template_capture));
  EXPECT_FALSE(third.template_capture.empty());
}

TEST_F(TemplatesTest, AtMostSixteenStayAndTheLeastRecentlyUsedGoesFirst) {
  fs::path dir = dir_->path() / "capped";
  int next_id = 0;
  // A template for a machine of `memory_mib`, as a runner saves it and the
  // next create puts it in place; returns its directory.
  auto make = [&](int memory_mib) {
    VmSpec saving = spec_;
    saving.memory_mib = memory_mib;
    saving.id = std::string(60, 'a') + std::to_string(1000 + next_id++);
    EXPECT_TRUE(chooseBootTemplate(dir, saving, true, vmDir()));
    fs::path staged = saving.template_capture;
    EXPECT_TRUE(writeFileAtomic(TemplatePaths::memory(staged), std::string(4096, 'm')));
    EXPECT_TRUE(writeFileAtomic(TemplatePaths::ram(staged), std::string(4096, 'r')));
    EXPECT_TRUE(writeFileAtomic(TemplatePaths::saved(staged), "saved\n"));
    VmSpec next = saving;
    next.id = std::string(60, 'b') + std::to_string(1000 + next_id++);
    EXPECT_TRUE(chooseBootTemplate(dir, next, true, vmDir()));
    EXPECT_FALSE(next.template_dir.empty()) << next.template_note;
    return fs::path(next.template_dir);
  };
  std::vector<fs::path> made;
  for (int i = 0; i < static_cast<int>(kMaxTemplates); ++i) {
    made.push_back(make(128 + i));
    // Distinct times: the file system's clock may be coarse.
    fs::last_write_time(made.back(), fs::file_time_type::clock::now() - std::chrono::hours(100 - i));
  }
  // The oldest is used again: the next oldest goes when one more is made.
  VmSpec reuse = spec_;
  reuse.memory_mib = 128;
  ASSERT_TRUE(chooseBootTemplate(dir, reuse, true, vmDir()));
  ASSERT_EQ(fs::path(reuse.template_dir), made[0]);
  fs::path newest = make(1024);
  auto listed = listTemplates(dir);
  ASSERT_TRUE(listed);
  EXPECT_EQ(listed->size(), kMaxTemplates);
  EXPECT_TRUE(fs::exists(made[0]));
  EXPECT_FALSE(fs::exists(made[1]));
  EXPECT_TRUE(fs::exists(made[2]));
  EXPECT_TRUE(fs::exists(newest));
}

TEST_F(TemplatesTest, AChangedFileMarksATemplateStaleAndRmTakesAKeyPrefix) {
  fs::path data = dir_->path() / "data";
  VmSpec first = spec_;
  ASSERT_TRUE(chooseBootTemplate(data, first, true, vmDir()));
  fs::path staged = first.template_capture;
  ASSERT_TRUE(writeFileAtomic(TemplatePaths::memory(staged), std::string(4096, 'm')));
  ASSERT_TRUE(writeFileAtomic(TemplatePaths::ram(staged), std::string(8192, 'r')));
  ASSERT_TRUE(writeFileAtomic(TemplatePaths::saved(staged), "saved\n"));
  VmSpec second = spec_;
  ASSERT_TRUE(chooseBootTemplate(data, second, true, vmDir()));
  ASSERT_FALSE(second.template_dir.empty());
  write("vmlinux", "another kernel");
  auto listed = listTemplates(data);
  ASSERT_TRUE(listed);
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_TRUE((*listed)[0].stale);
  EXPECT_EQ((*listed)[0].stale_reason, "kernel changed");
  EXPECT_FALSE(removeTemplate(data, "zz"));
  EXPECT_FALSE(removeTemplate(data, std::string(32, 'f')));  // hex, but no such key
  ASSERT_TRUE(removeTemplate(data, (*listed)[0].key.substr(0, 6)));
  EXPECT_TRUE(listTemplates(data)->empty());
}

}  // namespace
}  // namespace microvm
