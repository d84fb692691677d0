#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <vector>

#include "base/fs.h"
#include "runner/runner_internal.h"

namespace microvm {

namespace {

// Bytes queued for the guest's control port beyond which the runner stops
// reading stdin sources, so that a workload that does not read its stdin
// backs the writer up instead of the runner's memory.
constexpr size_t kControlBacklog = size_t{1} << 20;
// Output queued for an attached client that does not read; beyond this it is
// detached rather than allowed to hold up the VM or grow without bound.
constexpr size_t kAttachBacklog = size_t{16} << 20;
constexpr size_t kChunk = 65536;
// Output goes to workload.log in records of at most this much, as Docker
// splits long lines at 16 KiB: a record (JSON-escaped, at most 6 bytes a
// byte) stays far below any max-size worth having.
constexpr size_t kLogRecordBytes = 16384;
// How long a finished VM's network stack may keep writing what the guest
// sent to host peers that read slower than it was sent.
constexpr auto kNetworkDrainTimeout = std::chrono::seconds(1);

}  // namespace

// Frames to the guest never block the loop: what the socket does not take now
// waits for EPOLLOUT.
void Runner::sendFrame(agent::FrameType type, std::string_view payload) {
  if (!control_ || control_->broken()) return;
  control_->queue(type, payload);
  flushControl();
}

void Runner::flushControl() {
  if (!control_) return;
  bool was_broken = control_->broken();
  if (!control_->writeSome() && !was_broken && control_->brokenErrno() != 0) {
    log("control channel: " + Error::fromErrno("send", control_->brokenErrno()).message());
  }
  if (loop_ && loop_->watching(control_->fd())) {
    (void)loop_->modify(control_->fd(), control_->pending() == 0 ? EPOLLIN : EPOLLIN | EPOLLOUT);
  }
  watchStdinSources();
}

size_t Runner::controlBacklog() const { return control_ ? control_->pending() : 0; }

// Stdin sources are read only while the guest keeps up (see kControlBacklog).
void Runner::watchStdinSources() {
  if (!loop_) return;
  bool room = controlBacklog() < kControlBacklog;
  if (in_fd_ >= 0 && in_fd_pollable_ && loop_->watching(in_fd_)) (void)loop_->modify(in_fd_, room ? uint32_t{EPOLLIN} : 0u);
  for (auto& entry : attached_) watchAttached(entry.second);
}

// Output waiting: EPOLLOUT. Input: always for a client without stdin (to see
// it leave), while the guest keeps up for one with stdin.
void Runner::watchAttached(AttachedClient& client) {
  uint32_t events = client.connection.pending() == 0 ? 0u : uint32_t{EPOLLOUT};
  if (!client.stdin || controlBacklog() < kControlBacklog) events |= EPOLLIN;
  (void)loop_->modify(client.connection.fd(), events);
}

void Runner::readStdin() {
  char buffer[kChunk];
  ssize_t got = ::read(in_fd_, buffer, sizeof buffer);
  if (got < 0 && (errno == EINTR || errno == EAGAIN)) return;
  if (got > 0) {
    sendFrame(agent::FrameType::kStdin, std::string_view(buffer, static_cast<size_t>(got)));
  } else {
    loop_->remove(in_fd_);
    in_fd_ = -1;
    sendFrame(agent::FrameType::kStdinClose, {});
  }
  // A regular file cannot be polled: it is read on in turns with the loop's
  // other work, as long as the guest keeps up.
  if (in_fd_ >= 0 && !in_fd_pollable_ && controlBacklog() < kControlBacklog) {
    loop_->addTimer(std::chrono::milliseconds(0), [this] { readStdin(); });
  } else if (in_fd_ >= 0 && !in_fd_pollable_) {
    loop_->addTimer(std::chrono::milliseconds(5), [this] { readStdin(); });
  }
}

void Runner::attach(UniqueFd client, const AttachRequest& request) {
  if (request.stdin && !spec_.open_stdin) {
    std::string refusal = encodeReply(Error(ErrorCode::kInvalidArgument, "the VM was not created with -i (open stdin)"));
    ::send(client.get(), refusal.data(), refusal.size(), MSG_NOSIGNAL);
    return;
  }
  std::string reply = encodeReply(success());
  if (::send(client.get(), reply.data(), reply.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(reply.size())) return;
  timeval none{0, 0};
  ::setsockopt(client.get(), SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  ::fcntl(client.get(), F_SETFL, O_NONBLOCK);
  int fd = client.get();
  if (!loop_->add(fd, EPOLLIN, [this, fd](uint32_t events) {
        if (events & EPOLLOUT) flushAttached(attached_.at(fd));
        if (attached_.contains(fd) && (events & (EPOLLIN | EPOLLHUP | EPOLLERR))) readAttached(fd);
      })) {
    return;
  }
  // At the end a client gets its exit frame within this, or not at all.
  agent::FramedConnection::Options options{.write_idle_timeout = std::chrono::seconds(2), .max_read_round = kChunk};
  attached_.emplace(fd, AttachedClient{agent::FramedConnection(std::move(client), options), request.stdin});
  log(std::string("client attached") + (request.stdin ? " with stdin" : ""));
  watchStdinSources();
}

void Runner::readAttached(int fd) {
  auto& client = attached_.at(fd);
  bool open = client.connection.readSome();
  while (auto frame = client.connection.nextFrame()) {
    if (!client.stdin) continue;
    if (frame->type == agent::FrameType::kStdin) sendFrame(agent::FrameType::kStdin, frame->payload);
    if (frame->type == agent::FrameType::kStdinClose) {
      sendFrame(agent::FrameType::kStdinClose, {});
      client.stdin = false;
    }
  }
  if (client.connection.corrupt()) {
    log("attached client sent a malformed frame (" + client.connection.corruption() + "); detaching it");
    detach(fd);
  } else if (!open) {
    // Like `docker run -i`: the attached stdin's end is the workload's.
    if (client.stdin) sendFrame(agent::FrameType::kStdinClose, {});
    detach(fd);
  }
}

void Runner::sendToAttached(AttachedClient& client, agent::FrameType type, std::string_view payload) {
  client.connection.queue(type, payload);
  flushAttached(client);
}

void Runner::flushAttached(AttachedClient& client) {
  int fd = client.connection.fd();
  if (!client.connection.writeSome()) {
    detach(fd);
    return;
  }
  if (client.connection.pending() > kAttachBacklog) {
    log("attached client does not keep up with the output; detaching it");
    detach(fd);
    return;
  }
  watchAttached(client);
}

void Runner::detach(int fd) {
  loop_->remove(fd);
  attached_.erase(fd);
}

void Runner::forwardOutput(int& fd, const char* stream, std::string_view bytes) {
  auto type = std::string_view(stream) == "stdout" ? agent::FrameType::kStdout : agent::FrameType::kStderr;
  // Detaching a client erases it: iterate over the fds, not the map.
  std::vector<int> clients;
  for (const auto& entry : attached_) clients.push_back(entry.first);
  for (int client : clients) {
    if (attached_.contains(client)) sendToAttached(attached_.at(client), type, bytes);
  }
  if (fd >= 0 && !writeAll(fd, bytes)) fd = -1;  // the reader went away; keep logging
  std::string time = nowRfc3339();
  while (!bytes.empty()) {
    size_t take = std::min(bytes.size(), kLogRecordBytes);
    // A cut inside a UTF-8 sequence would garble that character: back up
    // over its continuation bytes (10xxxxxx), at most three.
    for (size_t back = 0; take < bytes.size() && back < 3 && take > 1 &&
                          (static_cast<unsigned char>(bytes[take]) & 0xC0) == 0x80;
         ++back) {
      --take;
    }
    nlohmann::json record = {{"time", time}, {"stream", stream}, {"log", std::string(bytes.substr(0, take))}};
    writeLog(*workload_log_, record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n",
             /*stream=*/false);
    bytes.remove_prefix(take);
  }
}

// A log that cannot be written (a full disk) loses what does not fit, and
// says so once; the VM runs on.
void Runner::writeLog(RotatingFile& file, std::string_view bytes, bool stream) {
  auto written = stream ? file.writeStream(bytes) : file.write(bytes);
  if (!written && !log_write_failed_) {
    log(written.error().message() + "; output is being lost from the logs");
    log_write_failed_ = true;
  }
}

// The guest is gone; its TCP connections' last bytes may still be in the
// stack, waiting for their host sockets to take them (init waited until the
// stack had acknowledged them all). They are written out before the stack
// closes the sockets, for a bounded time.
void Runner::drainNetwork() {
  if (!network_) return;
  auto deadline = std::chrono::steady_clock::now() + kNetworkDrainTimeout;
  uint64_t left = network_->bytesForHost();
  while (left > 0 && std::chrono::steady_clock::now() < deadline) {
    if (auto ran = loop_->runOnce(std::chrono::milliseconds(20)); !ran) break;
    left = network_->bytesForHost();
  }
  if (left > 0) log("network: " + std::to_string(left) + " bytes the guest sent were still unwritten to host sockets");
}

// QEMU writes the serial console into a socket rather than a file, so that
// console.log is the runner's to bound: QEMU cannot be trusted to, and a
// guest may print without end.
void Runner::readConsole() {
  char buffer[kChunk];
  for (int turn = 0; turn < 16; ++turn) {  // a bounded share of the loop
    ssize_t got = ::read(console_.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got <= 0) {
      if (loop_ && loop_->watching(console_.get())) loop_->remove(console_.get());
      console_.reset();
      return;
    }
    writeLog(*console_log_, std::string_view(buffer, static_cast<size_t>(got)), /*stream=*/true);
  }
}

// QEMU's stderr: a pipe the runner reads into runner.log, non-blocking at
// both ends (QEMU never waits on it: what a full pipe does not take is lost).
Result<UniqueFd> Runner::openVmmStderr() {
  int diagnostics[2];
  if (::pipe2(diagnostics, O_CLOEXEC | O_NONBLOCK) != 0) return Error::fromErrno("pipe for QEMU's stderr");
  vmm_stderr_.reset(diagnostics[0]);
  return UniqueFd(diagnostics[1]);
}

// QEMU's own words, when it exited saying why (an unusable option, a missing
// device): the runner's error only sees the effect.
std::string Runner::withVmmsWords(std::string failure) {
  readVmmStderr();
  if (log_ && !log_->lastVmmLine().empty()) failure += " (QEMU: " + log_->lastVmmLine() + ")";
  return failure;
}

void Runner::readVmmStderr() {
  char buffer[kChunk];
  for (int turn = 0; turn < 16 && vmm_stderr_.valid(); ++turn) {  // a bounded share of the loop
    ssize_t got = ::read(vmm_stderr_.get(), buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && errno == EAGAIN) return;
    if (got > 0) {
      if (log_) log_->feedVmm(std::string_view(buffer, static_cast<size_t>(got)));
      continue;
    }
    if (loop_ && loop_->watching(vmm_stderr_.get())) loop_->remove(vmm_stderr_.get());
    vmm_stderr_.reset();
    if (log_) log_->flushVmm();
  }
}

}  // namespace microvm
