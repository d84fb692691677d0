// Container records and the host helpers of the OCI runtime (container.h).
#include "oci/container.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace microvm::oci {
namespace fs = std::filesystem;
using json = nlohmann::json;

fs::path ContainerDir::dataDir() const {
  uint64_t hash = 14695981039346656037ULL;  // FNV-1a
  for (unsigned char c : id_) hash = (hash ^ c) * 1099511628211ULL;
  char name[17];
  snprintf(name, sizeof name, "%016llx", static_cast<unsigned long long>(hash));
  return root_ / ".vm" / name;
}

bool ContainerDir::exists() const {
  std::error_code error;
  return fs::exists(stateFile(), error);
}

Result<ContainerState> ContainerDir::load() const {
  auto text = readFileBounded(stateFile(), 1 << 20);
  if (!text) return Error(ErrorCode::kNotFound, "container \"" + id_ + "\" does not exist");
  json doc = json::parse(*text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return Error(ErrorCode::kProtocol, stateFile().string() + ": not valid JSON");
  }
  ContainerState state;
  state.id = doc.value("id", "");
  state.bundle = doc.value("bundle", "");
  state.vm_id = doc.value("vm_id", "");
  state.oci_version = doc.value("ociVersion", "1.0.2");
  state.created = doc.value("created", "");
  state.netns = doc.value("netns", "");
  state.pid = doc.value("pid", 0);
  state.pid_start = doc.value("pid_start", 0ULL);
  if (doc.contains("annotations") && doc["annotations"].is_object()) {
    for (const auto& [key, value] : doc["annotations"].items()) {
      if (value.is_string()) state.annotations[key] = value.get<std::string>();
    }
  }
  return state;
}

Result<void> ContainerDir::save(const ContainerState& state) const {
  json doc = {{"id", state.id},           {"bundle", state.bundle},       {"vm_id", state.vm_id},
              {"ociVersion", state.oci_version}, {"created", state.created}, {"netns", state.netns}, {"pid", state.pid},
              {"pid_start", state.pid_start},     {"annotations", state.annotations}};
  return writeFileAtomic(stateFile(), doc.dump());
}

std::string ContainerDir::status(const ContainerState& state) const {
  if (state.pid <= 0 || !processAlive(state.pid, state.pid_start)) return "stopped";
  std::error_code error;
  return fs::exists(startedMark(), error) ? "running" : "created";
}

Result<void> checkContainerId(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 256 && std::isalnum(static_cast<unsigned char>(id[0]));
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '+' && c != '-') ok = false;
  }
  if (!ok) return Error(ErrorCode::kInvalidArgument, "invalid container id \"" + id + "\"");
  return success();
}

std::vector<std::string> listContainers(const fs::path& root) {
  std::vector<std::string> ids;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    std::string id = entry.path().filename().string();
    if (checkContainerId(id) && fs::exists(entry.path() / "state.json", error)) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string stateJson(const ContainerState& state, const std::string& status) {
  json doc = {{"ociVersion", state.oci_version.empty() ? "1.0.2" : state.oci_version},
              {"id", state.id},
              {"status", status},
              {"pid", status == "stopped" ? 0 : state.pid},
              {"bundle", state.bundle},
              {"rootfs", (fs::path(state.bundle) / "rootfs").string()},
              {"created", state.created},
              {"annotations", state.annotations}};
  return doc.dump(2);
}

unsigned long long processStartTime(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  // The command name may hold spaces and parentheses: fields follow the last ')'.
  size_t paren = line.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(line.substr(paren + 2));
  std::string field;
  char state = 0;
  fields >> state;
  if (state == 'Z' || state == 'X') return 0;
  for (int i = 4; i < 22 && fields >> field; ++i) {
  }
  unsigned long long start = 0;
  fields >> start;
  return start;
}

bool processAlive(pid_t pid, unsigned long long start_time) {
  unsigned long long now = processStartTime(pid);
  return now != 0 && (start_time == 0 || now == start_time);
}

Result<void> writeFileAtomic(const fs::path& path, const std::string& content) {
  fs::path temp = path;
  temp += ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    out << content;
    out.close();
    if (!out) return Error::fromErrno("write " + temp.string());
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) return Error::fromErrno("rename " + temp.string());
  return success();
}

Result<std::string> readFileBounded(const fs::path& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error::fromErrno("open " + path.string());
  std::string out;
  char buffer[65536];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int saved = errno;
      ::close(fd);
      return Error::fromErrno("read " + path.string(), saved);
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
    if (out.size() > max_bytes) {
      ::close(fd);
      return Error(ErrorCode::kInvalidArgument, path.string() + ": larger than " + std::to_string(max_bytes) + " bytes");
    }
  }
  ::close(fd);
  return out;
}

Result<int> parseSignal(const std::string& text) {
  if (!text.empty() && std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c); })) {
    if (text.size() > 3) return Error(ErrorCode::kInvalidArgument, "invalid signal \"" + text + "\"");
    int number = std::stoi(text);
    if (number < 1 || number >= NSIG) return Error(ErrorCode::kInvalidArgument, "invalid signal \"" + text + "\"");
    return number;
  }
  std::string name = text;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::toupper(c); });
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  for (int number = 1; number < NSIG; ++number) {
    const char* abbrev = sigabbrev_np(number);
    if (abbrev != nullptr && name == abbrev) return number;
  }
  return Error(ErrorCode::kInvalidArgument, "invalid signal \"" + text + "\"");
}

std::string nowRfc3339() {
  struct timespec now {};
  clock_gettime(CLOCK_REALTIME, &now);
  struct tm utc {};
  gmtime_r(&now.tv_sec, &utc);
  char buffer[64];
  strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &utc);
  char nanos[16];
  snprintf(nanos, sizeof nanos, ".%09ldZ", now.tv_nsec);
  return std::string(buffer) + nanos;
}

Result<Pty> openPty() {
  int master = ::posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) return Error::fromErrno("posix_openpt");
  if (::grantpt(master) != 0 || ::unlockpt(master) != 0) {
    int saved = errno;
    ::close(master);
    return Error::fromErrno("unlockpt", saved);
  }
  char name[128];
  if (::ptsname_r(master, name, sizeof name) != 0) {
    int saved = errno;
    ::close(master);
    return Error::fromErrno("ptsname", saved);
  }
  int slave = ::open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (slave < 0) {
    int saved = errno;
    ::close(master);
    return Error::fromErrno(std::string("open ") + name, saved);
  }
  return Pty{master, slave};
}

Result<void> sendConsole(const fs::path& socket_path, int master_fd) {
  int sock = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0) return Error::fromErrno("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (socket_path.string().size() >= sizeof address.sun_path) {
    ::close(sock);
    return Error(ErrorCode::kInvalidArgument, "console socket path too long: " + socket_path.string());
  }
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof address.sun_path - 1);
  if (::connect(sock, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    int saved = errno;
    ::close(sock);
    return Error::fromErrno("connect " + socket_path.string(), saved);
  }
  char name[] = "/dev/ptmx";
  struct iovec iov {name, sizeof name - 1};
  alignas(struct cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  struct msghdr message {};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  struct cmsghdr* header = CMSG_FIRSTHDR(&message);
  header->cmsg_level = SOL_SOCKET;
  header->cmsg_type = SCM_RIGHTS;
  header->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(header), &master_fd, sizeof(int));
  ssize_t sent;
  do {
    sent = ::sendmsg(sock, &message, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  int saved = errno;
  ::close(sock);
  if (sent < 0) return Error::fromErrno("send the console to " + socket_path.string(), saved);
  return success();
}

}  // namespace microvm::oci
