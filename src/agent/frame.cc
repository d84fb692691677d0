#include "agent/frame.h"

namespace microvm::agent {

void appendFrame(std::string& out, FrameType type, std::string_view payload) {
  putLe16(out, static_cast<uint16_t>(type));
  putLe16(out, 0);
  putLe32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
}

std::string encodeU32(uint32_t value) {
  std::string out;
  putLe32(out, value);
  return out;
}

Result<uint32_t> decodeU32(std::string_view payload) {
  if (payload.size() != 4) {
    return Error(ErrorCode::kProtocol,
                 "a 4-byte integer payload expected, got " + std::to_string(payload.size()) + " byte(s)");
  }
  return getLe32(payload.data());
}

std::optional<Frame> FrameReader::next() {
  if (failed() || buffer_.size() - offset_ < kHeaderSize) return std::nullopt;
  const char* header = buffer_.data() + offset_;
  uint32_t length = getLe32(header + 4);
  if (length > kMaxPayload) {
    failure_ = "frame at stream offset " + std::to_string(discarded_ + offset_) + " (type " +
               std::to_string(getLe16(header)) + "): length " + std::to_string(length) + " exceeds the " +
               std::to_string(kMaxPayload) + "-byte limit";
    return std::nullopt;
  }
  if (buffer_.size() - offset_ < kHeaderSize + length) return std::nullopt;
  Frame frame{static_cast<FrameType>(getLe16(header)), buffer_.substr(offset_ + kHeaderSize, length)};
  offset_ += kHeaderSize + length;
  if (offset_ == buffer_.size()) {
    buffer_.clear();
    discarded_ += offset_;
    offset_ = 0;
  } else if (offset_ > 65536 && offset_ * 2 > buffer_.size()) {
    // Only once the consumed part outweighs the rest, so that draining a
    // large buffer frame by frame moves each byte a bounded number of times.
    buffer_.erase(0, offset_);
    discarded_ += offset_;
    offset_ = 0;
  }
  return frame;
}

}  // namespace microvm::agent
