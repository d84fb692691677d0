#include "agent/stream_mux.h"

#include <algorithm>
#include <utility>

#include "agent/tlv.h"

namespace microvm::agent {

using Kind = StreamMuxEvent::Kind;

namespace {

std::string streamName(uint32_t stream) {
  return "stream " + std::to_string(stream);
}

std::string windowProblem(uint32_t window) {
  return "a window of " + std::to_string(window) + " bytes is beyond the " + std::to_string(kMaxMuxCredit) +
         "-byte limit";
}

}  // namespace

StreamMuxEndpoint::StreamMuxEndpoint(Role role, uint64_t generation, StreamMuxLimits limits)
    : role_(role), generation_(generation), limits_(limits) {
  if (role_ == Role::kHost) startHost();
}

void StreamMuxEndpoint::startHost() {
  output_.assign(kMuxResyncPadding, '\0');
  output_offset_ = 0;
  queue(MuxMessage::hello(generation_));
}

std::vector<StreamMuxEvent> StreamMuxEndpoint::takeEvents() {
  return std::exchange(events_, {});
}

void StreamMuxEndpoint::event(Kind kind, uint32_t stream, std::string text, uint32_t port) {
  events_.push_back(StreamMuxEvent{kind, stream, port, std::move(text)});
}

void StreamMuxEndpoint::receive(std::string_view bytes) {
  input_.append(bytes);
  // A HELLO turns scanning into parsing, and a failure turns it back; go on
  // until neither consumes anything more.
  while (true) {
    size_t before = input_.size();
    bool was_live = live_;
    if (live_) {
      parseFrames();
    } else {
      scanForHello();
    }
    if (input_.size() == before && live_ == was_live) break;
  }
}

void StreamMuxEndpoint::scanForHello() {
  size_t from = kHeaderSize;
  while (true) {
    size_t at = input_.find(kMuxMagic, from);
    if (at == std::string::npos) {
      // Keep what could be the start of a header and magic split by the read.
      size_t keep = std::min(input_.size(), kHeaderSize + kMuxMagic.size() - 1);
      input_offset_ += input_.size() - keep;
      input_.erase(0, input_.size() - keep);
      return;
    }
    size_t start = at - kHeaderSize;
    const char* header = input_.data() + start;
    uint32_t length = getLe32(header + 4);
    from = at + 1;
    if (static_cast<FrameType>(getLe16(header)) != FrameType::kMuxHello || length > kMaxMuxPayload) continue;
    if (input_.size() - start < kHeaderSize + length) {
      input_offset_ += start;
      input_.erase(0, start);
      return;  // wait for the rest of this HELLO
    }
    auto hello = decodeMuxMessage(FrameType::kMuxHello, std::string_view(input_).substr(at, length));
    if (!hello) continue;  // the magic by chance inside other bytes
    if (role_ == Role::kHost && hello->generation != generation_) {
      from = start + kHeaderSize + length;  // an answer to an earlier host
      continue;
    }
    input_offset_ += start + kHeaderSize + length;
    input_.erase(0, start + kHeaderSize + length);
    handleHello(*hello);
    return;
  }
}

void StreamMuxEndpoint::parseFrames() {
  size_t pos = 0;
  while (live_ && input_.size() - pos >= kHeaderSize) {
    const char* header = input_.data() + pos;
    auto type = static_cast<FrameType>(getLe16(header));
    uint32_t length = getLe32(header + 4);
    uint64_t offset = input_offset_ + pos;
    if (std::all_of(header, header + kHeaderSize, [](char c) { return c == 0; })) {
      pos += kHeaderSize;
      if (role_ == Role::kHost) {
        fail("a resync header from the guest at pipe offset " + std::to_string(offset));
      } else {
        resync();
      }
      break;
    }
    if (length > kMaxMuxPayload) {
      pos += kHeaderSize;
      fail("frame at pipe offset " + std::to_string(offset) + " (" + muxTypeName(type) + "): length " +
           std::to_string(length) + " exceeds the " + std::to_string(kMaxMuxPayload) + "-byte limit");
      break;
    }
    if (input_.size() - pos - kHeaderSize < length) break;
    std::string_view payload = std::string_view(input_).substr(pos + kHeaderSize, length);
    pos += kHeaderSize + length;
    if (type < FrameType::kMuxHello || type > FrameType::kMuxReset) continue;  // unknown types are ignored
    if (role_ == Role::kGuest && (payload.empty() || payload.back() == '\0')) {
      resync();  // a frame of the old host that the new host's padding completed
      break;
    }
    auto message = decodeMuxMessage(type, payload);
    if (!message) {
      fail(message.error().message() + " (frame at pipe offset " + std::to_string(offset) + ")");
      break;
    }
    handle(*message);
  }
  input_offset_ += pos;
  input_.erase(0, pos);
}

void StreamMuxEndpoint::handle(const MuxMessage& message) {
  switch (message.type) {
    case FrameType::kMuxHello: handleHello(message); break;
    case FrameType::kMuxOpen: handleOpen(message); break;
    case FrameType::kMuxData: handleData(message); break;
    default: handleStreamMessage(message); break;
  }
}

void StreamMuxEndpoint::handleHello(const MuxMessage& message) {
  if (message.version != kMuxVersion) {
    fail("the peer speaks mux version " + std::to_string(message.version) + ", this end " +
         std::to_string(kMuxVersion));
    return;
  }
  if (role_ == Role::kHost) {
    if (!live_ && message.generation == generation_) {
      live_ = true;
      event(Kind::kLive, 0);
    }
    return;  // a repeated answer, or one to an earlier host
  }
  if (greeted_ && message.generation == generation_) {
    queue(MuxMessage::hello(generation_));  // the host asked again; nothing restarted
    return;
  }
  if (greeted_) {
    endAll(Kind::kReset, "the host's end of the stream mux restarted (generation " + std::to_string(generation_) +
                             " -> " + std::to_string(message.generation) + "); the stream's host end is gone");
  }
  output_.clear();
  output_offset_ = 0;
  generation_ = message.generation;
  greeted_ = true;
  live_ = true;
  highest_peer_stream_ = 0;
  queue(MuxMessage::hello(generation_));
  event(Kind::kLive, 0);
}

void StreamMuxEndpoint::handleOpen(const MuxMessage& message) {
  uint32_t id = message.stream;
  if (role_ == Role::kHost) {
    queue(MuxMessage::openRefused(id, "the host accepts no streams (mux version 1)"));
    return;
  }
  if (id % 2 == 0) {
    fail("OPEN of " + streamName(id) + ": the host opens odd stream ids");
    return;
  }
  if (id <= highest_peer_stream_) {
    fail("OPEN of " + streamName(id) + ": stream ids must increase (the last was " +
         std::to_string(highest_peer_stream_) + ")");
    return;
  }
  highest_peer_stream_ = id;
  if (streams_.size() >= limits_.max_streams) {
    queue(MuxMessage::openRefused(id, "too many streams (" + std::to_string(limits_.max_streams) + " open)"));
    return;
  }
  if (message.window > kMaxMuxCredit) {
    queue(MuxMessage::openRefused(id, windowProblem(message.window)));
    return;
  }
  Stream& stream = streams_[id];
  stream.port = message.port;
  stream.send_credit = message.window;
  event(Kind::kOpenRequested, id, {}, message.port);
}

bool StreamMuxEndpoint::endedEarlier(uint32_t stream) const {
  if (stream % 2 == 0) return false;  // no one opens even ids in version 1
  return role_ == Role::kHost ? stream < next_stream_ : stream <= highest_peer_stream_;
}

void StreamMuxEndpoint::handleData(const MuxMessage& message) {
  uint32_t id = message.stream;
  auto it = streams_.find(id);
  if (it == streams_.end()) {
    if (!endedEarlier(id)) queue(MuxMessage::reset(id, "DATA for unknown " + streamName(id)));
    return;  // else it was in flight when the stream ended
  }
  Stream& stream = it->second;
  std::string problem;
  if (role_ == Role::kHost && !stream.open) {
    problem = "DATA before OPEN_OK";
  } else if (stream.received_shutdown) {
    problem = "DATA after SHUTDOWN_WRITE";
  } else if (message.text.size() > stream.peer_credit) {
    problem = std::to_string(message.text.size()) + " bytes of DATA exceed the credit of " +
              std::to_string(stream.peer_credit) + " bytes";
  }
  if (!problem.empty()) {
    problem = streamName(id) + ": " + problem;
    queue(MuxMessage::reset(id, problem));
    endStream(id, Kind::kReset, "the peer broke the protocol: " + problem);
    return;
  }
  auto size = static_cast<uint32_t>(message.text.size());
  stream.peer_credit -= size;
  stream.unread += size;
  event(Kind::kData, id, message.text);
}

void StreamMuxEndpoint::handleStreamMessage(const MuxMessage& message) {
  uint32_t id = message.stream;
  FrameType type = message.type;
  auto it = streams_.find(id);
  if (it == streams_.end()) {
    // RESET, CLOSE and OPEN_REFUSED are never answered: no ping-pong.
    bool final = type == FrameType::kMuxReset || type == FrameType::kMuxClose || type == FrameType::kMuxOpenRefused;
    if (!final && !endedEarlier(id)) {
      queue(MuxMessage::reset(id, muxTypeName(type) + " for unknown " + streamName(id)));
    }
    return;
  }
  Stream& stream = it->second;
  bool opening = role_ == Role::kHost && !stream.open;
  switch (type) {
    case FrameType::kMuxOpenOk:
    case FrameType::kMuxOpenRefused:
      if (!opening || (type == FrameType::kMuxOpenOk && message.window > kMaxMuxCredit)) {
        std::string problem =
            streamName(id) + ": " + (opening ? windowProblem(message.window) : "unexpected " + muxTypeName(type));
        queue(MuxMessage::reset(id, problem));
        endStream(id, Kind::kReset, "the peer broke the protocol: " + problem);
      } else if (type == FrameType::kMuxOpenRefused) {
        endStream(id, Kind::kRefused, message.text.empty() ? "refused by the guest" : message.text);
      } else {
        stream.open = true;
        stream.send_credit = message.window;
        event(Kind::kOpened, id, {}, stream.port);
      }
      break;
    case FrameType::kMuxCredit:
      stream.send_credit += message.grant;
      if (stream.send_credit > kMaxMuxCredit) {
        std::string problem = streamName(id) + ": credit beyond " + std::to_string(kMaxMuxCredit) + " bytes";
        queue(MuxMessage::reset(id, problem));
        endStream(id, Kind::kReset, "the peer broke the protocol: " + problem);
      } else if (!stream.sent_shutdown && message.grant > 0) {
        event(Kind::kWritable, id);
      }
      break;
    case FrameType::kMuxShutdownWrite:
      if (stream.received_shutdown) break;
      stream.received_shutdown = true;
      event(Kind::kShutdown, id);
      if (stream.sent_shutdown) endStream(id, Kind::kClosed, {});
      break;
    case FrameType::kMuxClose: endStream(id, Kind::kClosed, {}); break;
    case FrameType::kMuxReset:
      endStream(id, Kind::kReset, message.text.empty() ? "reset by the peer" : "reset by the peer: " + message.text);
      break;
    default: break;
  }
}

void StreamMuxEndpoint::queue(const MuxMessage& message) {
  std::string frame;
  appendMuxMessage(frame, message);
  if (pendingOutputSize() + frame.size() > outputLimit()) {
    fail("the pipe output queue is over " + std::to_string(outputLimit()) + " bytes: the peer is not reading the pipe");
    return;
  }
  output_.append(frame);
}

void StreamMuxEndpoint::resync() {
  endAll(Kind::kReset, "the host's end of the stream mux restarted; the stream's host end is gone");
  output_.clear();
  output_offset_ = 0;
  live_ = false;
  greeted_ = false;
}

size_t StreamMuxEndpoint::outputLimit() const {
  // The resync padding and HELLO are queued whole, whatever max_output is.
  return std::max(limits_.max_output, kMuxResyncPadding + kHeaderSize + 64) + limits_.control_slack;
}

void StreamMuxEndpoint::fail(const std::string& reason) {
  endAll(Kind::kReset, "the stream mux failed: " + reason);
  event(Kind::kFailed, 0, reason);
  output_.clear();
  output_offset_ = 0;
  // A guest tells the host, which would otherwise wait on its streams: the
  // padding completes any frame the host holds a part of (which then ends in
  // 0, not the end marker) and reads as a resync header, so the host fails
  // too and its caller restarts it with a new generation.
  if (role_ == Role::kGuest) output_.assign(kMuxResyncPadding, '\0');
  live_ = false;
  greeted_ = false;
}

void StreamMuxEndpoint::endAll(Kind kind, const std::string& reason) {
  for (const auto& [id, stream] : streams_) event(kind, id, reason);
  streams_.clear();
}

void StreamMuxEndpoint::endStream(uint32_t stream, Kind kind, std::string text) {
  if (streams_.erase(stream) > 0) event(kind, stream, std::move(text));
}

void StreamMuxEndpoint::outputWritten(size_t count) {
  output_offset_ += std::min(count, pendingOutputSize());
  if (output_offset_ == output_.size()) {
    output_.clear();
    output_offset_ = 0;
  } else if (output_offset_ > 65536 && output_offset_ * 2 > output_.size()) {
    output_.erase(0, output_offset_);  // as FrameReader: each byte moves a bounded number of times
    output_offset_ = 0;
  }
}

Result<uint32_t> StreamMuxEndpoint::open(uint32_t port) {
  if (role_ != Role::kHost) {
    return Error(ErrorCode::kUnsupported, "the guest opens no streams in mux version 1");
  }
  if (streams_.size() >= limits_.max_streams) {
    return Error(ErrorCode::kUnavailable, "too many streams (" + std::to_string(limits_.max_streams) + " open)");
  }
  if (next_stream_ > UINT32_MAX - 2) return Error(ErrorCode::kUnavailable, "stream ids are used up; reset() the mux");
  uint32_t id = next_stream_;
  next_stream_ += 2;
  Stream& stream = streams_[id];
  stream.port = port;
  stream.peer_credit = limits_.window;
  queue(MuxMessage::open(id, port, limits_.window));
  if (streams_.count(id) == 0) return Error(ErrorCode::kUnavailable, "the stream mux failed");
  return id;
}

Result<void> StreamMuxEndpoint::accept(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return Error(ErrorCode::kNotFound, "accept " + streamName(id) + ": no such stream");
  if (role_ != Role::kGuest || it->second.open) {
    return Error(ErrorCode::kInvalidArgument, "accept " + streamName(id) + ": not waiting to be accepted");
  }
  it->second.open = true;
  it->second.peer_credit = limits_.window;
  queue(MuxMessage::openOk(id, limits_.window));
  return success();
}

Result<void> StreamMuxEndpoint::refuse(uint32_t id, std::string_view reason) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return Error(ErrorCode::kNotFound, "refuse " + streamName(id) + ": no such stream");
  if (role_ != Role::kGuest || it->second.open) {
    return Error(ErrorCode::kInvalidArgument, "refuse " + streamName(id) + ": not waiting to be accepted");
  }
  streams_.erase(it);
  queue(MuxMessage::openRefused(id, reason));
  return success();
}

size_t StreamMuxEndpoint::sendRoom(uint32_t id) const {
  auto it = streams_.find(id);
  if (it == streams_.end() || !it->second.open || it->second.sent_shutdown) return 0;
  size_t queued = pendingOutputSize();
  size_t room = queued < limits_.max_output ? limits_.max_output - queued : 0;
  return static_cast<size_t>(std::min<uint64_t>(room, it->second.send_credit));
}

Result<size_t> StreamMuxEndpoint::send(uint32_t id, std::string_view bytes) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return Error(ErrorCode::kNotFound, "send on " + streamName(id) + ": no such stream");
  if (!it->second.open) return Error(ErrorCode::kInvalidArgument, "send on " + streamName(id) + ": not open yet");
  if (it->second.sent_shutdown) {
    return Error(ErrorCode::kInvalidArgument, "send on " + streamName(id) + ": shut down for writing");
  }
  size_t count = std::min(bytes.size(), sendRoom(id));
  for (size_t at = 0; at < count; at += kMaxMuxDataChunk) {
    // Appended directly: sendRoom() has bounded it by max_output already.
    appendMuxMessage(output_, MuxMessage::data(id, bytes.substr(at, std::min(kMaxMuxDataChunk, count - at))));
  }
  it->second.send_credit -= count;
  return count;
}

Result<void> StreamMuxEndpoint::consume(uint32_t id, size_t count) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return Error(ErrorCode::kNotFound, "consume on " + streamName(id) + ": no such stream");
  Stream& stream = it->second;
  if (count > stream.unread) {
    return Error(ErrorCode::kInvalidArgument, "consume " + std::to_string(count) + " bytes of " + streamName(id) +
                                                  ": only " + std::to_string(stream.unread) + " are unread");
  }
  stream.unread -= static_cast<uint32_t>(count);
  stream.unannounced += static_cast<uint32_t>(count);
  // Grant in quarters of the window, so CREDITs stay few; a peer that has
  // shut down needs none.
  if (!stream.received_shutdown && stream.unannounced >= std::max<uint32_t>(1, limits_.window / 4)) {
    uint32_t grant = stream.unannounced;
    stream.peer_credit += grant;
    stream.unannounced = 0;
    queue(MuxMessage::credit(id, grant));
  }
  return success();
}

Result<void> StreamMuxEndpoint::shutdownWrite(uint32_t id) {
  auto it = streams_.find(id);
  if (it == streams_.end()) return Error(ErrorCode::kNotFound, "shut down " + streamName(id) + ": no such stream");
  if (it->second.sent_shutdown) return success();
  it->second.sent_shutdown = true;
  bool finished = it->second.received_shutdown;
  queue(MuxMessage::shutdownWrite(id));
  if (finished) endStream(id, Kind::kClosed, {});
  return success();
}

Result<void> StreamMuxEndpoint::close(uint32_t id) {
  if (streams_.erase(id) == 0) return Error(ErrorCode::kNotFound, "close " + streamName(id) + ": no such stream");
  queue(MuxMessage::close(id));
  return success();
}

Result<void> StreamMuxEndpoint::resetStream(uint32_t id, std::string_view reason) {
  if (streams_.erase(id) == 0) return Error(ErrorCode::kNotFound, "reset " + streamName(id) + ": no such stream");
  queue(MuxMessage::reset(id, reason));
  return success();
}

void StreamMuxEndpoint::reset(std::string_view reason, uint64_t new_generation) {
  endAll(Kind::kReset, std::string(reason));
  input_.clear();
  input_offset_ = 0;
  output_.clear();
  output_offset_ = 0;
  live_ = false;
  greeted_ = false;
  highest_peer_stream_ = 0;
  if (role_ == Role::kHost) {
    generation_ = new_generation;
    next_stream_ = 1;
    startHost();
  }
}

bool StreamMuxEndpoint::invariantsHold() const {
  if (streams_.size() > limits_.max_streams) return false;
  if (input_.size() > kHeaderSize + kMaxMuxPayload) return false;
  // DATA headers may go past max_output by a little; the slack holds them.
  if (pendingOutputSize() > outputLimit()) return false;
  for (const auto& [id, stream] : streams_) {
    uint64_t window = role_ == Role::kGuest && !stream.open ? 0 : limits_.window;
    if (uint64_t{stream.peer_credit} + stream.unread + stream.unannounced != window) return false;
    if (stream.send_credit > kMaxMuxCredit) return false;
    if (id == 0) return false;
  }
  return true;
}

}  // namespace microvm::agent
