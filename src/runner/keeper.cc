#include "runner/keeper.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "base/fs.h"
#include "base/paths.h"
#include "base/unix_socket.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

constexpr char kConnect = 'c';
constexpr char kSnapshot = 's';
constexpr char kFinish = 'f';
constexpr char kSavedState = 'm';
constexpr size_t kMaxRequest = 4096 + 1;  // an op byte and a path
constexpr size_t kMaxFds = 4;

// One reply: an errno (0: done) and up to kMaxFds fds.
void reply(int socket, int error, const std::vector<UniqueFd>& fds) {
  int32_t code = error;
  std::vector<int> raw;
  for (const auto& fd : fds) raw.push_back(fd.get());
  // SAFETY: the errno's bytes, as the peer reads them back.
  (void)sendWithFds(socket, std::string_view(reinterpret_cast<const char*>(&code), sizeof code), raw);
}

int createFile(const fs::path& path, UniqueFd& fd) {
  fd.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  return fd.valid() ? 0 : errno;
}

// The keeper's whole life, in the forked child.
[[noreturn]] void serve(int socket, const VmSpec& spec, const fs::path& vm_dir) {
  for (;;) {
    char request[kMaxRequest];
    ssize_t got = ::recv(socket, request, sizeof request, 0);
    if (got < 0 && errno == EINTR) continue;
    // The runner went away without finishing (killed, `rm -f`): whoever
    // removes the VM cleans up; nothing here races with it.
    if (got <= 0) ::_exit(0);
    std::string argument(request + 1, static_cast<size_t>(got) - 1);
    std::vector<UniqueFd> fds;
    switch (request[0]) {
      case kConnect: {
        if (!keeperMayConnect(spec, argument)) {
          reply(socket, EACCES, fds);
          break;
        }
        auto fd = connectUnix(argument, SOCK_NONBLOCK);
        if (!fd) {
          reply(socket, fd.error().sysErrno() != 0 ? fd.error().sysErrno() : ECONNREFUSED, fds);
          break;
        }
        fds.push_back(std::move(*fd));
        reply(socket, 0, fds);
        break;
      }
      case kSnapshot: {
        if (!keeperMayWriteSnapshot(vm_dir, argument)) {
          reply(socket, EACCES, fds);
          break;
        }
        fds.resize(4);
        int failed = createFile(SnapshotPaths::memory(argument), fds[0]);
        if (failed == 0) failed = createFile(SnapshotPaths::disk(argument), fds[1]);
        if (failed == 0) failed = createFile(SnapshotPaths::ram(argument), fds[2]);
        if (failed == 0) failed = createFile(SnapshotPaths::network(argument), fds[3]);
        if (failed != 0) fds.clear();
        reply(socket, failed, fds);
        break;
      }
      case kSavedState: {
        if (!keeperMayWriteSavedState(vm_dir)) {
          reply(socket, EACCES, fds);
          break;
        }
        fds.resize(3);
        fs::path saving = VmPaths(vm_dir).saving();
        int failed = createFile(saving / VmPaths(vm_dir).savedMemory().filename(), fds[0]);
        if (failed == 0) failed = createFile(saving / VmPaths(vm_dir).savedRam().filename(), fds[1]);
        if (failed == 0) failed = createFile(saving / VmPaths(vm_dir).savedNetwork().filename(), fds[2]);
        if (failed != 0) fds.clear();
        reply(socket, failed, fds);
        break;
      }
      case kFinish: {
        if (!spec.runtime_dir.empty()) (void)removeTree(spec.runtime_dir);
        if (spec.remove_on_exit) (void)removeTree(vm_dir);
        reply(socket, 0, fds);
        ::_exit(0);
      }
      default: reply(socket, EINVAL, fds); break;
    }
  }
}

}  // namespace

bool keeperMayConnect(const VmSpec& spec, const fs::path& target) {
  for (const auto& port : spec.vsock_ports) {
    if (!port.listen && fs::path(port.path) == target) return true;
  }
  if (spec.runtime_dir.empty()) return false;
  std::string base = VmSockets(spec.runtime_dir).vsock().string() + "_";
  std::string path = target.string();
  if (path.size() <= base.size() || path.size() > base.size() + 10 || path.compare(0, base.size(), base) != 0) {
    return false;
  }
  return path.find_first_not_of("0123456789", base.size()) == std::string::npos;
}

bool keeperMayWriteSnapshot(const fs::path& vm_dir, const fs::path& dir) {
  // <data dir>/vms/<id> and <data dir>/snapshots/.tmp-<name>-<hex>: a real
  // directory of root's (the CLI made it), not a link to elsewhere.
  fs::path data_dir = vm_dir.lexically_normal().parent_path().parent_path();
  for (const auto& part : dir) {
    if (part == "..") return false;  // which may go back up across a link
  }
  std::string name = dir.filename().string();
  if (dir.lexically_normal().parent_path() != SnapshotPaths(data_dir).dir() ||
      name.rfind(SnapshotPaths::kTempPrefix, 0) != 0) return false;
  struct stat st {};
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0;
}

bool keeperMayWriteSavedState(const fs::path& vm_dir) {
  // The VM's directory is writable by the runner's id (sticky): the saving
  // dir must be root's own directory, not something the runner put there.
  struct stat st {};
  fs::path dir = VmPaths(vm_dir).saving();
  return ::lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == 0;
}

Result<Keeper> Keeper::start(const VmSpec& spec, const fs::path& vm_dir) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return Error::fromErrno("keeper: socketpair");
  UniqueFd runner_end(pair[0]);
  UniqueFd keeper_end(pair[1]);
  pid_t pid = ::fork();
  if (pid < 0) return Error::fromErrno("keeper: fork");
  if (pid == 0) {
    // Nothing of the runner's but the socket: no stdio (a caller reading
    // the runner's output to its end must not wait for us), no signals
    // from the terminal or the CLI (the runner's end decides).
    int fd = keeper_end.get();
    int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int std_fd = 0; std_fd < 3; ++std_fd) ::dup2(null_fd, std_fd);
    for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGPIPE}) ::signal(sig, SIG_IGN);
    ::prctl(PR_SET_NAME, "microvm-keeper");
    if (fd != 3) {
      ::dup2(fd, 3);
      fd = 3;
    }
    ::close_range(4, ~0U, 0);
    serve(fd, spec, vm_dir);
  }
  keeper_end.reset();
  return Keeper(std::move(runner_end), pid);
}

Keeper::~Keeper() {
  if (pid_ <= 0) return;
  socket_.reset();  // the keeper sees the end of its socket and exits
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
}

Result<std::vector<UniqueFd>> Keeper::ask(char op, const std::string& argument, size_t fds) {
  if (argument.size() + 1 > kMaxRequest) return Error(ErrorCode::kInvalidArgument, "keeper: path too long: " + argument);
  std::string request = op + argument;
  ssize_t sent;
  do {
    sent = ::send(socket_.get(), request.data(), request.size(), MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent < 0) return Error::fromErrno("keeper: send");
  int32_t code = 0;
  iovec io{&code, sizeof code};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)] = {};
  msghdr header{};
  header.msg_iov = &io;
  header.msg_iovlen = 1;
  header.msg_control = control;
  header.msg_controllen = sizeof control;
  ssize_t got;
  do {
    got = ::recvmsg(socket_.get(), &header, MSG_CMSG_CLOEXEC);
  } while (got < 0 && errno == EINTR);
  if (got < 0) return Error::fromErrno("keeper: receive");
  if (got != sizeof code) return Error(ErrorCode::kIo, "keeper: no answer (it exited?)");
  std::vector<UniqueFd> received;
  takeReceivedFds(header, received);
  if (code != 0) {
    return Error::fromErrno("keeper", code);
  }
  if (received.size() != fds) return Error(ErrorCode::kIo, "keeper: expected " + std::to_string(fds) + " fds");
  return received;
}

Result<UniqueFd> Keeper::connect(const fs::path& target) {
  auto fds = ask(kConnect, target.string(), 1);
  if (!fds) return std::move(fds).error().withContext("connect " + target.string());
  return std::move((*fds)[0]);
}

Result<SnapshotFiles> Keeper::snapshotFiles(const fs::path& dir) {
  auto fds = ask(kSnapshot, dir.string(), 4);
  if (!fds) return std::move(fds).error().withContext("create snapshot files in " + dir.string());
  return SnapshotFiles{std::move((*fds)[0]), std::move((*fds)[1]), std::move((*fds)[2]), std::move((*fds)[3])};
}

Result<SnapshotFiles> Keeper::savedStateFiles() {
  auto fds = ask(kSavedState, "", 3);
  if (!fds) return std::move(fds).error().withContext("create the saved state files");
  return SnapshotFiles{std::move((*fds)[0]), UniqueFd(), std::move((*fds)[1]), std::move((*fds)[2])};
}

Result<void> Keeper::finish() {
  auto done = ask(kFinish, "", 0);
  socket_.reset();
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
  if (!done) return std::move(done).error().withContext("clean up");
  return success();
}

}  // namespace microvm
