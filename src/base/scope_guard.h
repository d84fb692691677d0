// ScopeGuard: runs a rollback action at scope exit unless dismissed.
//
//   ScopeGuard undo([&] { removeTree(dir); });
//   MICROVM_TRY(step1()); MICROVM_TRY(step2());
//   undo.dismiss();   // success: keep what was made
#pragma once

#include <utility>

namespace microvm {

template <typename F>
class ScopeGuard {
 public:
  explicit ScopeGuard(F action) : action_(std::move(action)) {}
  ScopeGuard(const ScopeGuard&) = delete;
  ScopeGuard& operator=(const ScopeGuard&) = delete;
  ~ScopeGuard() {
    if (active_) action_();
  }
  void dismiss() { active_ = false; }

 private:
  F action_;
  bool active_ = true;
};

}  // namespace microvm
