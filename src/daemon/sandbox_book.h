// What microvmd knows of a sandbox beyond the library's records: its labels,
// its expiry and what it was made from. One JSON file per sandbox under
// <data dir>/microvmd/sandboxes/, so that a restarted daemon (kill -9
// included) finds them again; the VM itself is the library's, shared with
// the CLI.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "microvm/result.h"

namespace microvm::daemon {

struct SandboxNote {
  std::string id;
  std::map<std::string, std::string> labels;
  std::string source;      // image reference, rootfs path or "snapshot:NAME"
  int64_t expires_at = 0;  // unix seconds; 0: never
};

class SandboxBook {
 public:
  // Loads every note under `dir` (created if missing).
  static Result<SandboxBook> open(const std::filesystem::path& dir);
  SandboxBook(SandboxBook&& other) noexcept : dir_(std::move(other.dir_)), notes_(std::move(other.notes_)) {}

  Result<void> put(const SandboxNote& note);  // written atomically (rename)
  std::optional<SandboxNote> get(const std::string& id) const;
  void remove(const std::string& id);
  std::vector<SandboxNote> all() const;

 private:
  explicit SandboxBook(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::filesystem::path dir_;
  mutable std::mutex mutex_;
  std::map<std::string, SandboxNote> notes_;
};

}  // namespace microvm::daemon
