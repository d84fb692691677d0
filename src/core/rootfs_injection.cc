// RootfsEditor (the public side of rootfs hooks) and the cpio it turns into.
#include "core/rootfs_injection.h"

#include <sys/stat.h>

#include <cstdio>

#include "agent/control_protocol.h"
#include "base/fs.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

constexpr char kInjectDir[] = ".microvm-inject";  // guest/boot.h: kInjectDir, without the leading '/'

// An absolute path with no empty, "." or ".." component and no newline:
// init resolves it component by component inside the root disk.
Result<void> checkGuestPath(const std::string& path) {
  auto invalid = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument, "rootfs hook: path \"" + path + "\" " + why);
  };
  if (path.size() < 2 || path[0] != '/') return invalid("must be absolute and not /");
  if (path.size() > 4096) return invalid("is too long");
  if (path.find('\n') != std::string::npos || path.find('\0') != std::string::npos) {
    return invalid("contains a newline or NUL");
  }
  size_t start = 1;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    std::string part = path.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return invalid("must be normalized (no //, . or ..)");
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return success();
}

// One newc ("070701") cpio record: header, name, data, each padded to 4.
void appendCpio(std::string& out, const std::string& name, uint32_t mode, const std::string& data, uint32_t ino) {
  char header[111];
  std::snprintf(header, sizeof header, "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", ino, mode, 0u, 0u,
                1u, 0u, static_cast<uint32_t>(data.size()), 0u, 0u, 0u, 0u, static_cast<uint32_t>(name.size() + 1), 0u);
  out.append(header, 110);
  out += name;
  out.push_back('\0');
  out.append((4 - out.size() % 4) % 4, '\0');
  out += data;
  out.append((4 - out.size() % 4) % 4, '\0');
}

}  // namespace

Result<void> RootfsEditor::add(Entry entry) {
  MICROVM_TRY(checkGuestPath(entry.path));
  if (entry.mode > 07777) return Error(ErrorCode::kInvalidArgument, "rootfs hook: mode of " + entry.path + " is not 0-07777");
  entries_.push_back(std::move(entry));
  return success();
}

Result<void> RootfsEditor::writeFile(const std::string& path, std::string_view content, uint32_t mode, uint32_t uid,
                                     uint32_t gid) {
  return add({path, false, std::string(content), mode, uid, gid});
}

Result<void> RootfsEditor::copyFile(const fs::path& host_file, const std::string& path, int mode, uint32_t uid,
                                    uint32_t gid) {
  struct stat info {};
  if (::stat(host_file.c_str(), &info) != 0) return Error::fromErrno("rootfs hook: stat " + host_file.string());
  if (!S_ISREG(info.st_mode)) {
    return Error(ErrorCode::kInvalidArgument, "rootfs hook: " + host_file.string() + " is not a regular file");
  }
  auto content = readFile(host_file);
  if (!content) return std::move(content).error().withContext("rootfs hook");
  uint32_t bits = mode < 0 ? (info.st_mode & 07777) : static_cast<uint32_t>(mode);
  return add({path, false, std::move(*content), bits, uid, gid});
}

Result<void> RootfsEditor::makeDirectory(const std::string& path, uint32_t mode, uint32_t uid, uint32_t gid) {
  return add({path, true, {}, mode, uid, gid});
}

Result<void> RootfsEditor::writeEnvFile(const std::string& path, const std::vector<std::string>& env) {
  std::string content;
  for (const auto& entry : env) {
    if (entry.find('=') == std::string::npos || entry[0] == '=' || entry.find('\n') != std::string::npos) {
      return Error(ErrorCode::kInvalidArgument, "rootfs hook: environment entry \"" + entry + "\" is not KEY=VALUE");
    }
    content += entry + "\n";
  }
  return writeFile(path, content, 0644);
}

Result<void> RootfsEditor::addAuthorizedKeys(const std::string& home, const std::vector<std::string>& keys, uint32_t uid,
                                             uint32_t gid) {
  std::string content;
  for (const auto& key : keys) {
    if (key.find('\n') != std::string::npos) {
      return Error(ErrorCode::kInvalidArgument, "rootfs hook: an authorized key spans lines");
    }
    content += key + "\n";
  }
  std::string dir = (home.size() > 1 && home.back() == '/' ? home.substr(0, home.size() - 1) : home) + "/.ssh";
  MICROVM_TRY(makeDirectory(dir, 0700, uid, gid));
  return writeFile(dir + "/authorized_keys", content, 0600, uid, gid);
}

bool fitsInSpec(const std::vector<RootfsEditor::Entry>& entries) {
  if (entries.size() > agent::kMaxSpecInjectedFiles) return false;
  size_t bytes = 0;
  for (const auto& entry : entries) bytes += entry.content.size();
  return bytes <= agent::kMaxSpecInjectedBytes;
}

std::string injectionManifest(const std::vector<RootfsEditor::Entry>& entries) {
  std::string manifest;
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto& entry = entries[i];
    char fields[64];
    std::snprintf(fields, sizeof fields, "%c %o %u %u %zu ", entry.directory ? 'd' : 'f', entry.mode, entry.uid,
                  entry.gid, i);
    manifest += fields + entry.path + "\n";
  }
  return manifest;
}

Result<void> writeInjectionInitramfs(const fs::path& base, const std::vector<RootfsEditor::Entry>& entries,
                                     const fs::path& destination) {
  auto archive = readFile(base);
  if (!archive) return std::move(archive).error().withContext("initramfs");
  archive->append((4 - archive->size() % 4) % 4, '\0');
  uint32_t ino = 0x4d56000;  // away from the base archive's inode numbers
  appendCpio(*archive, kInjectDir, S_IFDIR | 0700, {}, ino++);
  appendCpio(*archive, std::string(kInjectDir) + "/manifest", S_IFREG | 0600, injectionManifest(entries), ino++);
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].directory) continue;
    appendCpio(*archive, std::string(kInjectDir) + "/" + std::to_string(i), S_IFREG | 0600, entries[i].content, ino++);
  }
  appendCpio(*archive, "TRAILER!!!", 0, {}, 0);
  return writeFileAtomic(destination, *archive, 0600);
}

}  // namespace microvm
