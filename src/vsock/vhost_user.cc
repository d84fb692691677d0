#include "vsock/vhost_user.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/unix_socket.h"

namespace microvm::vsock {

namespace {

enum Request : uint32_t {
  kGetFeatures = 1,
  kSetFeatures = 2,
  kSetOwner = 3,
  kResetOwner = 4,
  kSetMemTable = 5,
  kSetLogBase = 6,
  kSetLogFd = 7,
  kSetVringNum = 8,
  kSetVringAddr = 9,
  kSetVringBase = 10,
  kGetVringBase = 11,
  kSetVringKick = 12,
  kSetVringCall = 13,
  kSetVringErr = 14,
  kGetProtocolFeatures = 15,
  kSetProtocolFeatures = 16,
  kGetQueueNum = 17,
  kSetVringEnable = 18,
  kGetConfig = 24,
  kSetConfig = 25,
};

constexpr uint64_t kProtocolLogShmfd = 1ull << 1;
constexpr uint64_t kProtocolReplyAck = 1ull << 3;
constexpr uint64_t kProtocolConfig = 1ull << 9;
constexpr uint64_t kProtocolFeatures = kProtocolLogShmfd | kProtocolReplyAck | kProtocolConfig;

constexpr uint32_t kVersion = 1;
constexpr uint32_t kFlagReply = 1u << 2;
constexpr uint32_t kFlagNeedReply = 1u << 3;
constexpr size_t kHeaderSize = 12;
// Bigger than any message this device accepts (8 memory regions, a 256-byte
// config space); anything larger is a broken peer.
constexpr size_t kMaxPayload = 4096;
constexpr size_t kMaxFds = 8;
constexpr size_t kMaxRegions = 8;
constexpr uint64_t kVringLogFlag = 1;
constexpr uint64_t kVringNoFd = 1ull << 8;
constexpr uint64_t kPageSize = 4096;

template <typename T>
T load(const std::string& payload, size_t offset) {
  T value{};
  if (offset + sizeof(T) <= payload.size()) std::memcpy(&value, payload.data() + offset, sizeof(T));
  return value;
}

template <typename T>
void append(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

Error protocolError(const std::string& what) { return Error(ErrorCode::kProtocol, "vhost-user: " + what); }

}  // namespace

Result<Mapping> Mapping::map(int fd, uint64_t size, uint64_t offset) {
  if (size == 0 || size > (1ull << 46)) return protocolError("bad mapping size " + std::to_string(size));
  // A page of a shared file beyond its end faults with SIGBUS when touched,
  // which would take the runner down: the file must hold the whole range,
  // now and later. QEMU's memfds (guest RAM and the dirty log) are sealed
  // against shrinking, so both are checked once here.
  struct stat status {};
  if (::fstat(fd, &status) != 0) return Error::fromErrno("fstat shared memory");
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (!S_ISREG(status.st_mode) || seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return protocolError("shared memory is not a memfd sealed against shrinking");
  }
  if (offset > static_cast<uint64_t>(status.st_size) || size > static_cast<uint64_t>(status.st_size) - offset) {
    return protocolError("mapping of " + std::to_string(size) + " bytes at " + std::to_string(offset) +
                         " lies beyond the end of its " + std::to_string(status.st_size) + "-byte file");
  }
  void* data = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd,
                      static_cast<off_t>(offset));
  if (data == MAP_FAILED) return Error::fromErrno("mmap guest memory");
  Mapping mapping;
  mapping.data_ = static_cast<uint8_t*>(data);
  mapping.size_ = size;
  return mapping;
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

Mapping::~Mapping() {
  if (data_ != nullptr) ::munmap(data_, size_);
}

uint8_t* MemoryTable::translate(uint64_t gpa, uint64_t len) {
  for (const Region& region : regions_) {
    // Written so that no sum can overflow: the guest chose gpa and len.
    if (gpa >= region.gpa && gpa - region.gpa < region.size && len <= region.size - (gpa - region.gpa)) {
      return region.host + (gpa - region.gpa);
    }
  }
  return nullptr;
}

uint8_t* MemoryTable::translateUser(uint64_t user_addr, uint64_t len) {
  for (const Region& region : regions_) {
    if (user_addr >= region.user_addr && user_addr - region.user_addr < region.size &&
        len <= region.size - (user_addr - region.user_addr)) {
      return region.host + (user_addr - region.user_addr);
    }
  }
  return nullptr;
}

bool MemoryTable::userToGuest(uint64_t user_addr, uint64_t& gpa) const {
  for (const Region& region : regions_) {
    if (user_addr >= region.user_addr && user_addr - region.user_addr < region.size) {
      gpa = region.gpa + (user_addr - region.user_addr);
      return true;
    }
  }
  return false;
}

void MemoryTable::markDirty(uint64_t gpa, uint64_t len) {
  if (!logging() || len == 0) return;
  uint64_t first = gpa / kPageSize;
  uint64_t last = (gpa + len - 1) / kPageSize;
  for (uint64_t page = first; page <= last; ++page) {
    uint64_t byte = page / 8;
    if (byte >= log_.size()) return;  // beyond the log QEMU gave: nothing to record
    // QEMU reads and clears the log concurrently.
    __atomic_fetch_or(log_.data() + byte, static_cast<uint8_t>(1u << (page % 8)), __ATOMIC_RELAXED);
  }
}

// --- server ------------------------------------------------------------------

Result<std::unique_ptr<VhostUserServer>> VhostUserServer::create(EventLoop& loop, const std::filesystem::path& socket,
                                                                 Device device, Callbacks callbacks) {
  if (device.queues <= 0 || device.queues > kMaxQueues) {
    return Error(ErrorCode::kInvalidArgument, "vhost-user: bad queue count");
  }
  std::unique_ptr<VhostUserServer> server(new VhostUserServer(loop, std::move(device), std::move(callbacks)));
  auto listener = listenUnix(socket, 1, SOCK_NONBLOCK);
  if (!listener) return std::move(listener).error().withContext("vhost-user");
  server->listener_ = std::move(*listener);
  server->path_ = socket;

  // The control plane is its own epoll set, so that one fd stands for it in
  // the runner's loop and in a QMP wait alike.
  server->control_epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!server->control_epoll_.valid()) return Error::fromErrno("epoll_create1");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = server->listener_.get();
  if (::epoll_ctl(server->control_epoll_.get(), EPOLL_CTL_ADD, server->listener_.get(), &event) != 0) {
    return Error::fromErrno("epoll_ctl");
  }
  VhostUserServer* self = server.get();
  MICROVM_TRY(loop.add(server->control_epoll_.get(), EPOLLIN, [self](uint32_t) { self->serviceControl(); }));
  return server;
}

VhostUserServer::~VhostUserServer() {
  for (int i = 0; i < device_.queues; ++i) stopQueue(i);
  loop_.remove(control_epoll_.get());
  if (!path_.empty()) ::unlink(path_.c_str());
}

void VhostUserServer::serviceControl() {
  epoll_event events[4];
  int ready = ::epoll_wait(control_epoll_.get(), events, 4, 0);
  for (int i = 0; i < ready; ++i) {
    if (events[i].data.fd == listener_.get()) {
      accept();
    } else if (connection_.valid() && events[i].data.fd == connection_.get()) {
      readMessages();
    }
  }
}

void VhostUserServer::accept() {
  UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
  if (!fd.valid()) return;
  if (connection_.valid()) return;  // one front-end at a time; the newcomer is closed
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = fd.get();
  if (::epoll_ctl(control_epoll_.get(), EPOLL_CTL_ADD, fd.get(), &event) != 0) return;
  connection_ = std::move(fd);
  in_.clear();
  in_fds_.clear();
  log("vhost-user: front-end connected");
}

void VhostUserServer::disconnect(const std::string& why) {
  if (!connection_.valid()) return;
  log("vhost-user: " + why);
  ::epoll_ctl(control_epoll_.get(), EPOLL_CTL_DEL, connection_.get(), nullptr);
  connection_.reset();
  for (int i = 0; i < device_.queues; ++i) {
    stopQueue(i);
    vrings_[i] = Vring();
  }
  memory_ = MemoryTable();
  log_call_.reset();
  features_ = 0;
  protocol_features_ = 0;
  if (callbacks_.disconnected) callbacks_.disconnected();
}

void VhostUserServer::readMessages() {
  // A message is read exactly (header, then its payload), so that file
  // descriptors, which arrive with a message's first byte, are never
  // mixed up with the next message's.
  for (int budget = 0; budget < 64 && connection_.valid(); ++budget) {
    size_t want;
    if (in_.size() < kHeaderSize) {
      want = kHeaderSize - in_.size();
    } else {
      uint32_t size = load<uint32_t>(in_, 8);
      want = kHeaderSize + size - in_.size();
    }
    char buffer[kHeaderSize + kMaxPayload];
    iovec io{buffer, want};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
    msghdr header{};
    header.msg_iov = &io;
    header.msg_iovlen = 1;
    header.msg_control = control;
    header.msg_controllen = sizeof control;
    ssize_t got = ::recvmsg(connection_.get(), &header, MSG_CMSG_CLOEXEC);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) return disconnect(got == 0 ? "front-end disconnected" : "read: " + std::string(strerror(errno)));
    takeReceivedFds(header, in_fds_);
    if ((header.msg_flags & MSG_CTRUNC) != 0 || in_fds_.size() > kMaxFds) {
      ++protocol_errors_;
      return disconnect("too many file descriptors in one message");
    }
    in_.append(buffer, static_cast<size_t>(got));
    if (in_.size() == kHeaderSize && load<uint32_t>(in_, 8) > kMaxPayload) {
      ++protocol_errors_;
      return disconnect("message too long");
    }
    if (in_.size() < kHeaderSize || in_.size() < kHeaderSize + load<uint32_t>(in_, 8)) continue;
    Message message;
    message.request = load<uint32_t>(in_, 0);
    message.flags = load<uint32_t>(in_, 4);
    message.payload = in_.substr(kHeaderSize);
    message.fds = std::move(in_fds_);
    in_.clear();
    in_fds_.clear();
    if (auto handled = handle(message); !handled) {
      ++protocol_errors_;
      return disconnect("request " + std::to_string(message.request) + ": " + handled.error().message());
    }
  }
}

Result<void> VhostUserServer::reply(const Message& request, std::string_view payload) {
  std::string out;
  append<uint32_t>(out, request.request);
  append<uint32_t>(out, kVersion | kFlagReply);
  append<uint32_t>(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  // QEMU waits for this answer and reads it at once; the socket buffer holds
  // far more than one reply, so a short write means the peer is broken.
  ssize_t sent;
  do {
    sent = ::send(connection_.get(), out.data(), out.size(), MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(out.size())) return Error::fromErrno("vhost-user reply");
  return success();
}

Result<void> VhostUserServer::replyU64(const Message& request, uint64_t value) {
  std::string payload;
  append<uint64_t>(payload, value);
  return reply(request, payload);
}

Virtqueue* VhostUserServer::queue(int index) {
  if (index < 0 || index >= device_.queues) return nullptr;
  Vring& vring = vrings_[index];
  if (!vring.started || !vring.queue.configured()) return nullptr;
  // Without protocol features rings are enabled as they start; with them,
  // only SET_VRING_ENABLE enables them.
  if ((features_ & kVhostUserFProtocolFeatures) != 0 && !vring.enabled) return nullptr;
  return &vring.queue;
}

void VhostUserServer::notify(int index) {
  if (index < 0 || index >= device_.queues) return;
  Vring& vring = vrings_[index];
  if (vring.call.valid() && vring.queue.shouldNotify()) {
    uint64_t one = 1;
    (void)::write(vring.call.get(), &one, sizeof one);
  }
  if (memory_.logging() && log_call_.valid()) {
    uint64_t one = 1;
    (void)::write(log_call_.get(), &one, sizeof one);
  }
}

void VhostUserServer::configureQueue(int index) {
  Vring& vring = vrings_[index];
  if (!vring.started) return;
  uint16_t next = vring.queue.configured() ? vring.queue.nextAvail() : vring.base;
  uint64_t malformed = vring.queue.malformed();
  vring.queue.reset();
  if (vring.num == 0 || vring.num > Virtqueue::kMaxSize) return;
  auto size = static_cast<uint16_t>(vring.num);
  Virtqueue::Layout layout;
  layout.size = size;
  layout.desc = memory_.translateUser(vring.desc, Virtqueue::bytesForDesc(size));
  layout.avail = memory_.translateUser(vring.avail, Virtqueue::bytesForAvail(size));
  layout.used = memory_.translateUser(vring.used, Virtqueue::bytesForUsed(size));
  if (layout.desc == nullptr || layout.avail == nullptr || layout.used == nullptr) {
    log("vhost-user: queue " + std::to_string(index) + " addresses lie outside guest memory");
    return;
  }
  layout.log_used = (vring.flags & kVringLogFlag) != 0;
  layout.used_gpa = vring.log_guest_addr;
  vring.queue.configure(layout, &memory_);
  vring.queue.setNextAvail(next);
  (void)malformed;
}

void VhostUserServer::stopQueue(int index) {
  Vring& vring = vrings_[index];
  if (vring.kick.valid()) loop_.remove(vring.kick.get());
  vring.kick.reset();
  if (vring.queue.configured()) vring.base = vring.queue.nextAvail();
  vring.queue.reset();
  vring.started = false;
}

Result<void> VhostUserServer::handle(Message& message) {
  bool replied = false;
  auto vringIndex = [&](uint32_t index) -> Result<int> {
    if (index >= static_cast<uint32_t>(device_.queues)) return protocolError("no queue " + std::to_string(index));
    return static_cast<int>(index);
  };
  switch (message.request) {
    case kGetFeatures:
      MICROVM_TRY(replyU64(message, device_.features | kVirtioFVersion1 | kVhostUserFProtocolFeatures | kVhostFLogAll));
      replied = true;
      break;
    case kSetFeatures:
      features_ = load<uint64_t>(message.payload, 0);
      memory_.setLogging((features_ & kVhostFLogAll) != 0);
      break;
    case kGetProtocolFeatures:
      MICROVM_TRY(replyU64(message, kProtocolFeatures));
      replied = true;
      break;
    case kSetProtocolFeatures: protocol_features_ = load<uint64_t>(message.payload, 0) & kProtocolFeatures; break;
    case kSetOwner: break;
    case kResetOwner:
      for (int i = 0; i < device_.queues; ++i) stopQueue(i);
      break;
    case kGetQueueNum:
      MICROVM_TRY(replyU64(message, static_cast<uint64_t>(device_.queues)));
      replied = true;
      break;
    case kSetMemTable: {
      auto count = load<uint32_t>(message.payload, 0);
      if (count == 0 || count > kMaxRegions || count != message.fds.size() ||
          message.payload.size() < 8 + 32ull * count) {
        return protocolError("malformed memory table");
      }
      std::vector<MemoryTable::Region> regions;
      for (uint32_t i = 0; i < count; ++i) {
        size_t at = 8 + 32ull * i;
        MemoryTable::Region region;
        region.gpa = load<uint64_t>(message.payload, at);
        region.size = load<uint64_t>(message.payload, at + 8);
        region.user_addr = load<uint64_t>(message.payload, at + 16);
        uint64_t mmap_offset = load<uint64_t>(message.payload, at + 24);
        if (region.size == 0 || mmap_offset > (1ull << 46) || region.size > (1ull << 46)) {
          return protocolError("malformed memory region");
        }
        // The region starts mmap_offset bytes into its file; map from the
        // file's start so the offset needs no page alignment.
        auto mapping = Mapping::map(message.fds[i].get(), region.size + mmap_offset, 0);
        if (!mapping) return std::move(mapping).error();
        region.host = mapping->data() + mmap_offset;
        region.mapping = std::move(*mapping);
        regions.push_back(std::move(region));
      }
      memory_.setRegions(std::move(regions));
      // Ring addresses were translated through the old table.
      for (int i = 0; i < device_.queues; ++i) configureQueue(i);
      break;
    }
    case kSetLogBase: {
      if (message.fds.size() != 1 || message.payload.size() < 16) return protocolError("malformed log base");
      auto size = load<uint64_t>(message.payload, 0);
      auto offset = load<uint64_t>(message.payload, 8);
      auto mapping = Mapping::map(message.fds[0].get(), size, offset);
      if (!mapping) return std::move(mapping).error();
      memory_.setLog(std::move(*mapping));
      // QEMU waits for this answer whether or not it asked for an ack.
      MICROVM_TRY(replyU64(message, 0));
      replied = true;
      break;
    }
    case kSetLogFd:
      if (message.fds.size() == 1) log_call_ = std::move(message.fds[0]);
      break;
    case kSetVringNum: {
      auto index = vringIndex(load<uint32_t>(message.payload, 0));
      if (!index) return std::move(index).error();
      auto num = load<uint32_t>(message.payload, 4);
      if (num == 0 || num > Virtqueue::kMaxSize) return protocolError("bad ring size " + std::to_string(num));
      vrings_[*index].num = num;
      configureQueue(*index);
      break;
    }
    case kSetVringAddr: {
      auto index = vringIndex(load<uint32_t>(message.payload, 0));
      if (!index) return std::move(index).error();
      Vring& vring = vrings_[*index];
      vring.flags = load<uint32_t>(message.payload, 4);
      vring.desc = load<uint64_t>(message.payload, 8);
      vring.used = load<uint64_t>(message.payload, 16);
      vring.avail = load<uint64_t>(message.payload, 24);
      vring.log_guest_addr = load<uint64_t>(message.payload, 32);
      configureQueue(*index);
      break;
    }
    case kSetVringBase: {
      auto index = vringIndex(load<uint32_t>(message.payload, 0));
      if (!index) return std::move(index).error();
      vrings_[*index].base = static_cast<uint16_t>(load<uint32_t>(message.payload, 4));
      if (vrings_[*index].queue.configured()) vrings_[*index].queue.setNextAvail(vrings_[*index].base);
      break;
    }
    case kGetVringBase: {
      auto index = vringIndex(load<uint32_t>(message.payload, 0));
      if (!index) return std::move(index).error();
      // The ring stops here: QEMU saves this index and may migrate.
      stopQueue(*index);
      std::string payload;
      append<uint32_t>(payload, static_cast<uint32_t>(*index));
      append<uint32_t>(payload, vrings_[*index].base);
      MICROVM_TRY(reply(message, payload));
      replied = true;
      break;
    }
    case kSetVringKick:
    case kSetVringCall:
    case kSetVringErr: {
      auto value = load<uint64_t>(message.payload, 0);
      auto index = vringIndex(static_cast<uint32_t>(value & 0xff));
      if (!index) return std::move(index).error();
      bool has_fd = (value & kVringNoFd) == 0;
      if (has_fd != (message.fds.size() == 1)) return protocolError("vring fd missing or unexpected");
      Vring& vring = vrings_[*index];
      if (message.request == kSetVringCall) {
        vring.call = has_fd ? std::move(message.fds[0]) : UniqueFd();
      } else if (message.request == kSetVringKick) {
        if (!has_fd) return protocolError("polling queues are not supported");
        if (vring.kick.valid()) loop_.remove(vring.kick.get());
        vring.kick = std::move(message.fds[0]);
        vring.started = true;
        configureQueue(*index);
        int queue_index = *index;
        int kick = vring.kick.get();
        MICROVM_TRY(loop_.add(kick, EPOLLIN, [this, queue_index, kick](uint32_t) {
          uint64_t count;
          (void)::read(kick, &count, sizeof count);
          if (callbacks_.kicked) callbacks_.kicked(queue_index);
        }));
        if (callbacks_.kicked) callbacks_.kicked(*index);
      }
      break;
    }
    case kSetVringEnable: {
      auto index = vringIndex(load<uint32_t>(message.payload, 0));
      if (!index) return std::move(index).error();
      vrings_[*index].enabled = load<uint32_t>(message.payload, 4) != 0;
      if (vrings_[*index].enabled && callbacks_.kicked) callbacks_.kicked(*index);
      break;
    }
    case kGetConfig: {
      if (message.payload.size() < 12) return protocolError("malformed config request");
      auto offset = load<uint32_t>(message.payload, 0);
      auto size = load<uint32_t>(message.payload, 4);
      if (size > 256 || offset > 256) return protocolError("config request out of range");
      std::string payload = message.payload.substr(0, 12);
      std::string data(size, '\0');
      for (uint32_t i = 0; i < size; ++i) {
        if (offset + i < device_.config.size()) data[i] = device_.config[offset + i];
      }
      payload += data;
      MICROVM_TRY(reply(message, payload));
      replied = true;
      break;
    }
    case kSetConfig: break;  // the vsock config (the CID) is read-only
    default:
      log("vhost-user: ignoring request " + std::to_string(message.request));
      if ((message.flags & kFlagNeedReply) != 0) {
        MICROVM_TRY(replyU64(message, 1));
        replied = true;
      }
      break;
  }
  if (!replied && (message.flags & kFlagNeedReply) != 0 && (protocol_features_ & kProtocolReplyAck) != 0) {
    MICROVM_TRY(replyU64(message, 0));
  }
  return success();
}

}  // namespace microvm::vsock
