#include "net/tap_relay.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace microvm::net {

namespace {

constexpr size_t kReadChunk = 256 * 1024;
// Frames read from the TAP per event: enough to keep up, few enough that
// the loop's other work (the agent, the console) gets its turn.
constexpr int kTapFramesPerEvent = 64;

}  // namespace

TapRelay::TapRelay(EventLoop& loop, UniqueFd stream, UniqueFd tap, size_t max_queued_bytes)
    : loop_(loop),
      stream_(std::move(stream)),
      tap_(std::move(tap)),
      max_queued_bytes_(max_queued_bytes),
      out_(kReadChunk) {}

TapRelay::~TapRelay() {
  closeStream();
  if (tap_.valid() && loop_.watching(tap_.get())) loop_.remove(tap_.get());
}

Result<std::unique_ptr<TapRelay>> TapRelay::create(EventLoop& loop, UniqueFd stream, UniqueFd tap,
                                                   size_t max_queued_bytes) {
  std::unique_ptr<TapRelay> relay(new TapRelay(loop, std::move(stream), std::move(tap), max_queued_bytes));
  relay->frame_.resize(StreamFrameReader::kMaxFrame);
  TapRelay* self = relay.get();
  MICROVM_TRY(loop.add(self->stream_.get(), EPOLLIN, [self](uint32_t events) {
    if (events & EPOLLOUT) self->flush();
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) self->readStream();
  }));
  MICROVM_TRY(loop.add(self->tap_.get(), EPOLLIN, [self](uint32_t) { self->readTap(); }));
  return relay;
}

void TapRelay::readStream() {
  for (int round = 0; round < 4 && stream_.valid(); ++round) {
    std::span<uint8_t> space = in_.prepare(kReadChunk);
    ssize_t got = ::read(stream_.get(), space.data(), space.size());
    in_.commit(static_cast<size_t>(got > 0 ? got : 0));
    if (got == 0) {
      closeStream();  // QEMU is gone
      return;
    }
    if (got < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) closeStream();
      return;
    }
    while (auto frame = in_.next()) {
      ++frames_from_guest_;
      bytes_from_guest_ += frame->size();
      if (frame->empty()) continue;
      // A TAP write takes the whole frame or none of it; one the link
      // cannot take now (or that exceeds its MTU) is dropped, as a NIC would.
      if (::write(tap_.get(), frame->data(), frame->size()) != static_cast<ssize_t>(frame->size())) {
        ++frames_to_link_dropped_;
      }
    }
    if (in_.corrupt()) {
      closeStream();
      return;
    }
    if (static_cast<size_t>(got) < kReadChunk) return;
  }
}

void TapRelay::readTap() {
  for (int round = 0; round < kTapFramesPerEvent; ++round) {
    ssize_t got = ::read(tap_.get(), frame_.data(), frame_.size());
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    if (!stream_.valid()) continue;  // drained and dropped: nobody to deliver to
    if (out_.queued() + static_cast<size_t>(got) > max_queued_bytes_) {
      ++frames_to_guest_dropped_;
      continue;
    }
    ++frames_to_guest_;
    bytes_to_guest_ += static_cast<uint64_t>(got);
    // SAFETY: reinterpreting the chars just read as bytes of the same buffer.
    out_.append({reinterpret_cast<const uint8_t*>(frame_.data()), static_cast<size_t>(got)});
  }
  flush();
}

void TapRelay::flush() {
  if (!stream_.valid()) return;
  switch (out_.flush(stream_.get())) {
    case StreamFrameWriter::kAll: break;
    case StreamFrameWriter::kWouldBlock: ++stream_write_waits_; break;
    case StreamFrameWriter::kFailed: closeStream(); return;
  }
  bool want_write = out_.queued() != 0;
  if (want_write != want_write_) {
    want_write_ = want_write;
    (void)loop_.modify(stream_.get(), want_write ? EPOLLIN | EPOLLOUT : EPOLLIN);
  }
}

void TapRelay::closeStream() {
  if (!stream_.valid()) return;
  loop_.remove(stream_.get());
  stream_.reset();
  out_.clear();
  in_.reset();
}

std::map<std::string, uint64_t> TapRelay::counters() const {
  return {{"frames_from_guest", frames_from_guest_},
          {"bytes_from_guest", bytes_from_guest_},
          {"frames_to_guest", frames_to_guest_},
          {"bytes_to_guest", bytes_to_guest_},
          {"frames_to_guest_dropped", frames_to_guest_dropped_},
          {"frames_to_link_dropped", frames_to_link_dropped_},
          {"stream_write_waits", stream_write_waits_}};
}

}  // namespace microvm::net
