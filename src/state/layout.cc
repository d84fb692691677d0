#include "state/layout.h"

#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>

namespace microvm {

namespace fs = std::filesystem;

namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

fs::path homeDir() {
  std::string home = env("HOME");
  return home.empty() ? fs::path("/root") : fs::path(home);
}

}  // namespace

Result<Layout> Layout::resolve(const fs::path& data_dir) {
  Layout layout;
  bool root = ::geteuid() == 0;
  std::string microvm_home = env("MICROVM_HOME");
  if (!data_dir.empty()) {
    layout.data_dir_ = data_dir;
  } else if (!microvm_home.empty()) {
    layout.data_dir_ = microvm_home;
  } else if (root) {
    layout.data_dir_ = "/var/lib/microvm";
  } else if (std::string xdg = env("XDG_DATA_HOME"); !xdg.empty()) {
    layout.data_dir_ = fs::path(xdg) / "microvm";
  } else {
    layout.data_dir_ = homeDir() / ".local" / "share" / "microvm";
  }
  std::error_code ec;
  layout.data_dir_ = fs::absolute(layout.data_dir_, ec);

  if (std::string runtime = env("MICROVM_RUNTIME_DIR"); !runtime.empty()) {
    layout.runtime_dir_ = runtime;
  } else if (!data_dir.empty() || !microvm_home.empty()) {
    // A private data dir gets private sockets, so two homes never collide.
    layout.runtime_dir_ = layout.data_dir_ / "run";
  } else if (root) {
    layout.runtime_dir_ = "/run/microvm";
  } else if (std::string xdg = env("XDG_RUNTIME_DIR"); !xdg.empty()) {
    layout.runtime_dir_ = fs::path(xdg) / "microvm";
  } else {
    layout.runtime_dir_ = layout.data_dir_ / "run";
  }

  if (std::string cache = env("MICROVM_CACHE_DIR"); !cache.empty()) {
    layout.cache_dir_ = cache;
  } else if (std::string xdg = env("XDG_CACHE_HOME"); !xdg.empty()) {
    layout.cache_dir_ = fs::path(xdg) / "microvm";
  } else {
    layout.cache_dir_ = homeDir() / ".cache" / "microvm";
  }
  return layout;
}

Result<void> checkSocketPath(const fs::path& path) {
  constexpr size_t kMax = sizeof(sockaddr_un::sun_path) - 1;
  if (path.native().size() > kMax) {
    return Error(ErrorCode::kInvalidArgument,
                 "socket path " + path.string() + " is " + std::to_string(path.native().size()) +
                     " bytes; unix sockets allow " + std::to_string(kMax) +
                     " (set MICROVM_RUNTIME_DIR to a shorter directory)");
  }
  return success();
}

}  // namespace microvm
