#include "agent/stream_mux_wire.h"

#include <algorithm>
#include <optional>

#include "agent/tlv.h"

namespace microvm::agent {

const char* muxTagName(uint16_t tag) {
  switch (static_cast<MuxTag>(tag)) {
    case MuxTag::kVersion: return "version";
    case MuxTag::kGeneration: return "generation";
    case MuxTag::kStream: return "stream";
    case MuxTag::kPort: return "port";
    case MuxTag::kWindow: return "window";
    case MuxTag::kCredit: return "credit";
    case MuxTag::kReason: return "reason";
  }
  return nullptr;
}

std::string muxTypeName(FrameType type) {
  switch (type) {
    case FrameType::kMuxHello: return "HELLO";
    case FrameType::kMuxOpen: return "OPEN";
    case FrameType::kMuxOpenOk: return "OPEN_OK";
    case FrameType::kMuxOpenRefused: return "OPEN_REFUSED";
    case FrameType::kMuxData: return "DATA";
    case FrameType::kMuxCredit: return "CREDIT";
    case FrameType::kMuxShutdownWrite: return "SHUTDOWN_WRITE";
    case FrameType::kMuxClose: return "CLOSE";
    case FrameType::kMuxReset: return "RESET";
    default: return "frame type " + std::to_string(static_cast<uint16_t>(type));
  }
}

MuxMessage MuxMessage::hello(uint64_t generation) {
  MuxMessage m;
  m.type = FrameType::kMuxHello;
  m.version = kMuxVersion;
  m.generation = generation;
  return m;
}

MuxMessage MuxMessage::open(uint32_t stream, uint32_t port, uint32_t window) {
  MuxMessage m;
  m.type = FrameType::kMuxOpen;
  m.stream = stream;
  m.port = port;
  m.window = window;
  return m;
}

MuxMessage MuxMessage::openOk(uint32_t stream, uint32_t window) {
  MuxMessage m;
  m.type = FrameType::kMuxOpenOk;
  m.stream = stream;
  m.window = window;
  return m;
}

MuxMessage MuxMessage::openRefused(uint32_t stream, std::string_view reason) {
  MuxMessage m;
  m.type = FrameType::kMuxOpenRefused;
  m.stream = stream;
  m.text = reason;
  return m;
}

MuxMessage MuxMessage::data(uint32_t stream, std::string_view bytes) {
  MuxMessage m;
  m.type = FrameType::kMuxData;
  m.stream = stream;
  m.text = bytes;
  return m;
}

MuxMessage MuxMessage::credit(uint32_t stream, uint32_t bytes) {
  MuxMessage m;
  m.type = FrameType::kMuxCredit;
  m.stream = stream;
  m.grant = bytes;
  return m;
}

MuxMessage MuxMessage::shutdownWrite(uint32_t stream) {
  MuxMessage m;
  m.type = FrameType::kMuxShutdownWrite;
  m.stream = stream;
  return m;
}

MuxMessage MuxMessage::close(uint32_t stream) {
  MuxMessage m;
  m.type = FrameType::kMuxClose;
  m.stream = stream;
  return m;
}

MuxMessage MuxMessage::reset(uint32_t stream, std::string_view reason) {
  MuxMessage m;
  m.type = FrameType::kMuxReset;
  m.stream = stream;
  m.text = reason;
  return m;
}

void appendMuxMessage(std::string& out, const MuxMessage& message) {
  std::string payload;
  TlvWriter tlv(payload);
  std::string_view reason = std::string_view(message.text).substr(0, kMaxMuxReason);
  switch (message.type) {
    case FrameType::kMuxHello:
      payload.append(kMuxMagic);
      tlv.u32(MuxTag::kVersion, message.version);
      tlv.u64(MuxTag::kGeneration, message.generation);
      break;
    case FrameType::kMuxData:
      putLe32(payload, message.stream);
      payload.append(message.text);
      break;
    default:
      tlv.u32(MuxTag::kStream, message.stream);
      if (message.type == FrameType::kMuxOpen) tlv.u32(MuxTag::kPort, message.port);
      if (message.type == FrameType::kMuxOpen || message.type == FrameType::kMuxOpenOk) {
        tlv.u32(MuxTag::kWindow, message.window);
      }
      if (message.type == FrameType::kMuxCredit) tlv.u32(MuxTag::kCredit, message.grant);
      if (message.type == FrameType::kMuxOpenRefused || message.type == FrameType::kMuxReset) {
        tlv.bytes(MuxTag::kReason, reason);
      }
      break;
  }
  payload.push_back(kMuxEndMarker);
  appendFrame(out, message.type, payload);
}

namespace {

Error malformed(std::string_view what, std::string_view problem) {
  return Error(ErrorCode::kProtocol, std::string(what) + ": " + std::string(problem));
}

Result<MuxMessage> decodeData(std::string_view payload) {
  if (payload.size() < 4) {
    return malformed("mux DATA", std::to_string(payload.size()) + " byte(s) are too few for a stream id");
  }
  MuxMessage m;
  m.type = FrameType::kMuxData;
  m.stream = getLe32(payload.data());
  if (m.stream == 0) return malformed("mux DATA", "stream id 0");
  if (payload.size() == 4) return malformed("mux DATA of stream " + std::to_string(m.stream), "no bytes");
  m.text = payload.substr(4);
  return m;
}

}  // namespace

Result<MuxMessage> decodeMuxMessage(FrameType type, std::string_view payload) {
  if (type < FrameType::kMuxHello || type > FrameType::kMuxReset) {
    return malformed("mux", muxTypeName(type) + " is not a mux message");
  }
  std::string what = "mux " + muxTypeName(type);
  if (payload.size() > kMaxMuxPayload) {
    return malformed(what, "payload of " + std::to_string(payload.size()) + " bytes exceeds the " +
                               std::to_string(kMaxMuxPayload) + "-byte limit");
  }
  if (payload.empty() || payload.back() != kMuxEndMarker) {
    return malformed(what, "no end marker: the frame was cut short");
  }
  payload.remove_suffix(1);
  if (type == FrameType::kMuxData) return decodeData(payload);
  if (type == FrameType::kMuxHello) {
    if (payload.substr(0, kMuxMagic.size()) != kMuxMagic) return malformed(what, "no magic at the start");
    payload.remove_prefix(kMuxMagic.size());
  }
  MuxMessage m;
  m.type = type;
  std::optional<uint32_t> stream, port, window, grant, version;
  std::optional<uint64_t> generation;
  TlvReader in(payload, what, muxTagName);
  while (!in.done()) {
    auto field = in.next();
    if (!field) return field.error();
    auto readU32 = [&](std::optional<uint32_t>& into) -> Result<void> {
      auto value = in.u32(*field);
      if (!value) return value.error();
      into = *value;
      return success();
    };
    switch (static_cast<MuxTag>(field->tag)) {
      case MuxTag::kVersion: MICROVM_TRY(readU32(version)); break;
      case MuxTag::kStream: MICROVM_TRY(readU32(stream)); break;
      case MuxTag::kPort: MICROVM_TRY(readU32(port)); break;
      case MuxTag::kWindow: MICROVM_TRY(readU32(window)); break;
      case MuxTag::kCredit: MICROVM_TRY(readU32(grant)); break;
      case MuxTag::kGeneration: {
        auto value = in.u64(*field);
        if (!value) return value.error();
        generation = *value;
        break;
      }
      case MuxTag::kReason: m.text = field->value; break;
      default: break;  // unknown tags are skipped
    }
  }
  auto require = [&](bool present, std::string_view name) -> Result<void> {
    if (!present) return in.error("the " + std::string(name) + " field is missing");
    return success();
  };
  if (type == FrameType::kMuxHello) {
    MICROVM_TRY(require(version.has_value(), "version"));
    MICROVM_TRY(require(generation.has_value(), "generation"));
    m.version = *version;
    m.generation = *generation;
    return m;
  }
  MICROVM_TRY(require(stream.has_value(), "stream"));
  if (*stream == 0) return in.error("stream id 0");
  m.stream = *stream;
  if (type == FrameType::kMuxOpen) {
    MICROVM_TRY(require(port.has_value(), "port"));
    m.port = *port;
  }
  if (type == FrameType::kMuxOpen || type == FrameType::kMuxOpenOk) {
    MICROVM_TRY(require(window.has_value(), "window"));
    m.window = *window;
  }
  if (type == FrameType::kMuxCredit) {
    MICROVM_TRY(require(grant.has_value(), "credit"));
    m.grant = *grant;
  }
  return m;
}

}  // namespace microvm::agent
