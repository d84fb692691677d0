#include "runner/template_memory.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <vector>

#include "base/eintr.h"
#include "base/fs.h"
#include "base/process.h"
#include "base/unix_socket.h"
#include "base/xxh64.h"

namespace microvm {

namespace fs = std::filesystem;

namespace {

// A holder with no VM connected lingers this long, so that VMs started one
// after another reuse its memory instead of loading it again.
constexpr int kLingerMs = 5000;
// More VMs than this on one template get a private copy.
constexpr size_t kMaxClients = 1024;
constexpr auto kHolderStartTimeout = std::chrono::seconds(10);
constexpr auto kHandOverTimeout = std::chrono::seconds(5);

}  // namespace

// The socket is named after the RAM file's identity: a template rebuilt in
// the same place is another file, so never served the old memory.
Result<std::string> templateMemorySocketName(const fs::path& ram_file, uint64_t size) {
  struct stat st {};
  if (::stat(ram_file.c_str(), &st) != 0) return Error::fromErrno("stat " + ram_file.string());
  std::string identity = ram_file.string() + '\0' + std::to_string(st.st_dev) + ':' + std::to_string(st.st_ino) +
                         ':' + std::to_string(st.st_size) + ':' + std::to_string(st.st_mtim.tv_sec) + '.' +
                         std::to_string(st.st_mtim.tv_nsec) + ':' + std::to_string(size) + ':' +
                         std::to_string(::geteuid());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(xxh64(identity)));
  return std::string("microvm-template-memory-") + hex;
}

namespace {

socklen_t abstractAddress(const std::string& name, sockaddr_un& address) {
  address = {};
  address.sun_family = AF_UNIX;
  // A leading NUL: the abstract namespace, where nothing is left on disk.
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

// Waits up to `timeout` for `fd` to be readable (or hung up).
bool readable(int fd, std::chrono::milliseconds timeout) {
  pollfd pfd{fd, POLLIN, 0};
  return retryOnEintr([&] { return ::poll(&pfd, 1, static_cast<int>(timeout.count())); }) == 1;
}

uid_t peerUid(int fd) {
  ucred cred{};
  socklen_t length = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) return static_cast<uid_t>(-1);
  return cred.uid;
}

// Starts a holder for `ram_file` in a session of its own (it outlives this
// runner), orphaned at once so that nobody needs to reap it. Returns once
// it serves `name`, or someone else does.
Result<void> startHolder(const fs::path& ram_file, uint64_t size, const std::string& name) {
  UniqueFd ram(::open(ram_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!ram.valid()) return Error::fromErrno("open " + ram_file.string());
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) return Error::fromErrno("pipe");
  UniqueFd report_read(report[0]), report_write(report[1]);
  std::string size_text = std::to_string(size);
  const char* argv[] = {"microvm-runner", kTemplateMemoryFlag, name.c_str(), size_text.c_str(), nullptr};
  pid_t child = ::fork();
  if (child < 0) return Error::fromErrno("fork the template memory holder");
  if (child == 0) {
    // Only async-signal-safe calls from here to exec.
    ::setsid();
    if (::fork() != 0) ::_exit(0);
    int null = ::open("/dev/null", O_RDWR);
    if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(null, 2) < 0) ::_exit(127);
    if (::dup2(ram.get(), kTemplateMemoryRamFd) < 0 || ::dup2(report_write.get(), kTemplateMemoryReportFd) < 0) {
      ::_exit(127);
    }
    ::close_range(kTemplateMemoryReportFd + 1, ~0U, 0);
    ::execv("/proc/self/exe", const_cast<char* const*>(argv));
    ::_exit(127);
  }
  int status = 0;
  retryOnEintr([&] { return ::waitpid(child, &status, 0); });
  report_write.reset();
  if (!readable(report_read.get(), kHolderStartTimeout)) {
    return Error(ErrorCode::kTimeout, "the template memory holder did not start");
  }
  char message[256];
  ssize_t got = retryOnEintr([&] { return ::read(report_read.get(), message, sizeof message - 1); });
  if (got <= 0) return Error(ErrorCode::kInternal, "the template memory holder failed to start");
  std::string said(message, static_cast<size_t>(got));
  if (said != "ready" && said != "busy") return Error(ErrorCode::kInternal, "template memory holder: " + said);
  return success();
}

// One try: connect to the holder, check it, take its memfd. nullopt: no
// holder serves `name` (or it was leaving); start one and try again.
using Taken = std::optional<std::pair<UniqueFd, UniqueFd>>;
Result<Taken> takeMemory(const std::string& name, uint64_t size) {
  UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket.valid()) return Error::fromErrno("socket");
  sockaddr_un address;
  socklen_t length = abstractAddress(name, address);
  if (retryOnEintr([&] { return ::connect(socket.get(), reinterpret_cast<sockaddr*>(&address), length); }) != 0) {
    if (errno == ECONNREFUSED || errno == ENOENT || errno == EAGAIN) return Taken();
    return Error::fromErrno("connect to the template memory holder");
  }
  // Anyone may bind an abstract name: only a holder running as this
  // runner's own user is trusted with the guest's memory.
  if (peerUid(socket.get()) != ::geteuid()) {
    return Error(ErrorCode::kProtocol, "the template memory socket is served by another user");
  }
  if (!readable(socket.get(), kHandOverTimeout)) {
    return Error(ErrorCode::kTimeout, "the template memory holder did not answer");
  }
  char byte = 0;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr message{};
  message.msg_iov = &iov;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t got = retryOnEintr([&] { return ::recvmsg(socket.get(), &message, MSG_CMSG_CLOEXEC); });
  std::vector<UniqueFd> fds;
  if (got > 0) takeReceivedFds(message, fds);
  if (got <= 0) return Taken();  // the holder was leaving as we came
  if (byte != 'M' || fds.size() != 1 || (message.msg_flags & MSG_CTRUNC)) {
    return Error(ErrorCode::kProtocol, "the template memory holder sent something else than one memfd");
  }
  int seals = ::fcntl(fds[0].get(), F_GET_SEALS);
  struct stat st {};
  if (seals < 0 || (seals & kTemplateMemorySeals) != kTemplateMemorySeals || ::fstat(fds[0].get(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != size) {
    return Error(ErrorCode::kProtocol, "the template memory holder's memfd is not sealed, or not the right size");
  }
  return Taken(std::pair(std::move(fds[0]), std::move(socket)));
}

}  // namespace

Result<TemplateMemory> TemplateMemory::attach(const fs::path& ram_file, uint64_t size) {
  auto name = templateMemorySocketName(ram_file, size);
  if (!name) return std::move(name).error();
  for (int attempt = 0; attempt < 3; ++attempt) {
    auto taken = takeMemory(*name, size);
    if (!taken) return std::move(taken).error();
    if (*taken) return TemplateMemory(std::move((*taken)->first), std::move((*taken)->second));
    MICROVM_TRY(startHolder(ram_file, size, *name));
  }
  return Error(ErrorCode::kUnavailable, "no template memory holder stayed up to serve " + ram_file.string());
}

namespace {

void report(int& fd, const std::string& message) {
  if (fd < 0) return;
  (void)!::write(fd, message.data(), message.size());
  ::close(fd);
  fd = -1;
}

// Loads the template's RAM into a memfd nobody can change any more.
Result<UniqueFd> sealedMemory(int ram_fd, uint64_t size) {
  struct stat st {};
  if (::fstat(ram_fd, &st) != 0) return Error::fromErrno("stat the template's memory");
  if (static_cast<uint64_t>(st.st_size) != size) {
    return Error(ErrorCode::kInvalidArgument, "the template's memory is " + std::to_string(st.st_size) +
                                                  " bytes, not " + std::to_string(size));
  }
  UniqueFd memory(::memfd_create("microvm-template-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!memory.valid()) return Error::fromErrno("memfd_create");
  if (::ftruncate(memory.get(), static_cast<off_t>(size)) != 0) return Error::fromErrno("size the memfd");
  auto copied = copySparse(ram_fd, memory.get(), size);
  if (!copied) return std::move(copied).error();
  if (::fcntl(memory.get(), F_ADD_SEALS, kTemplateMemorySeals) != 0) return Error::fromErrno("seal the memfd");
  return memory;
}

bool handOver(int client, int memory) {
  auto sent = sendWithFds(client, "M", std::span(&memory, 1), MSG_DONTWAIT);
  return sent && *sent == 1;
}

}  // namespace

int serveTemplateMemory(const std::string& name, uint64_t size, int ram_fd, int report_fd) {
  // It needs nothing of root's: the file is open, the socket abstract.
  if (auto dropped = keepOnlyCapabilities(0); !dropped) {
    report(report_fd, dropped.error().message());
    return 1;
  }
  UniqueFd listener(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  sockaddr_un address;
  socklen_t length = abstractAddress(name, address);
  if (!listener.valid() || ::bind(listener.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
    // Another holder won the race: the runner connects to it.
    bool busy = errno == EADDRINUSE;
    report(report_fd, busy ? "busy" : std::string("bind: ") + std::strerror(errno));
    return busy ? 0 : 1;
  }
  if (::listen(listener.get(), 64) != 0) {
    report(report_fd, std::string("listen: ") + std::strerror(errno));
    return 1;
  }
  // Runners that connect meanwhile wait for their memfd.
  auto memory = sealedMemory(ram_fd, size);
  ::close(ram_fd);
  if (!memory) {
    report(report_fd, memory.error().message());
    return 1;
  }
  report(report_fd, "ready");

  // pfds[0] is the listener; every other entry a connected VM's runner,
  // which sends nothing: its hang-up is the VM's end.
  std::vector<pollfd> pfds{{listener.get(), POLLIN, 0}};
  std::vector<UniqueFd> clients;
  uid_t self = ::geteuid();
  for (;;) {
    int timeout = clients.empty() ? kLingerMs : -1;
    int ready = retryOnEintr([&] { return ::poll(pfds.data(), pfds.size(), timeout); });
    if (ready == 0) return 0;  // no VM for kLingerMs
    if (ready < 0) return 1;
    for (size_t i = pfds.size(); i-- > 1;) {
      if (pfds[i].revents == 0) continue;
      char buffer[64];
      if (::recv(pfds[i].fd, buffer, sizeof buffer, MSG_DONTWAIT) > 0) continue;  // ignored
      pfds.erase(pfds.begin() + static_cast<std::ptrdiff_t>(i));
      clients.erase(clients.begin() + static_cast<std::ptrdiff_t>(i - 1));
    }
    if (pfds[0].revents & POLLIN) {
      for (;;) {
        UniqueFd client(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!client.valid()) break;
        // Only this user's runners get the memory; past the bound, a VM
        // loads its own copy.
        if (peerUid(client.get()) != self || clients.size() >= kMaxClients) continue;
        if (!handOver(client.get(), memory->get())) continue;
        pfds.push_back({client.get(), POLLIN, 0});
        clients.push_back(std::move(client));
      }
    }
  }
}

}  // namespace microvm
