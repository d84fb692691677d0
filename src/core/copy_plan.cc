#include "core/copy_plan.h"

namespace microvm {

namespace {

bool endsWithSlash(const std::string& path) { return !path.empty() && path.back() == '/'; }

bool endsWithDot(const std::string& path) { return path == "." || (path.size() >= 2 && path.ends_with("/.")); }

std::string stripTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

}  // namespace

uint32_t hostModeFor(uint32_t guest_mode, uint32_t umask) { return guest_mode & 0777 & ~umask; }

std::string baseName(const std::string& path) {
  std::string stripped = stripTrailingSlashes(path);
  if (stripped == "/") return "";
  size_t slash = stripped.rfind('/');
  return slash == std::string::npos ? stripped : stripped.substr(slash + 1);
}

std::string joinPath(const std::string& path, const std::string& name) {
  std::string stripped = stripTrailingSlashes(path);
  if (stripped.empty() || stripped.back() == '/') return stripped + name;
  return stripped + "/" + name;
}

Result<std::string> planCopy(const std::string& source, agent::FileType source_type, const std::string& destination,
                             std::optional<agent::FileType> destination_type) {
  auto invalid = [](const std::string& message) { return Error(ErrorCode::kInvalidArgument, message); };
  bool source_is_dir = source_type == agent::FileType::kDirectory;
  bool contents_only = endsWithDot(source);
  if ((endsWithSlash(source) || contents_only) && !source_is_dir) return invalid(source + ": not a directory");
  if (destination_type == agent::FileType::kDirectory) {
    std::string name = baseName(source);
    if (contents_only || name.empty() || name == "." || name == "..") return stripTrailingSlashes(destination);
    return joinPath(destination, name);
  }
  if (destination_type) {
    if (source_is_dir) return invalid("cannot copy directory " + source + " onto file " + destination);
    if (endsWithSlash(destination)) return invalid(destination + ": not a directory");
    return destination;
  }
  if (endsWithSlash(destination) && !source_is_dir) {
    return Error(ErrorCode::kNotFound, "destination directory " + destination + " does not exist");
  }
  return stripTrailingSlashes(destination);
}

}  // namespace microvm
