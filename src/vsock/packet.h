// The virtio-vsock packet header (virtio 1.2, "Socket Device"): 44 bytes,
// little-endian, in front of every packet on the RX and TX queues. Only the
// stream type exists here; the device never offers SEQPACKET.
//
//   PacketHeader header;
//   if (!decodeHeader(bytes, header)) drop();  // short input
//   encodeHeader(header, out);                  // 44 bytes
#pragma once

#include <cstdint>
#include <string_view>

namespace microvm::vsock {

constexpr uint64_t kHostCid = 2;
constexpr size_t kHeaderSize = 44;
// Linux never sends more than 64 KiB of payload in one packet; a larger
// length is malformed.
constexpr uint32_t kMaxPayload = 64 * 1024;

constexpr uint16_t kTypeStream = 1;

enum class Op : uint16_t {
  kInvalid = 0,
  kRequest = 1,
  kResponse = 2,
  kRst = 3,
  kShutdown = 4,
  kRw = 5,
  kCreditUpdate = 6,
  kCreditRequest = 7,
};

// SHUTDOWN flags: the sender will receive no more (RCV) / send no more (SEND).
constexpr uint32_t kShutdownRcv = 1;
constexpr uint32_t kShutdownSend = 2;

struct PacketHeader {
  uint64_t src_cid = 0;
  uint64_t dst_cid = 0;
  uint32_t src_port = 0;
  uint32_t dst_port = 0;
  uint32_t len = 0;
  uint16_t type = kTypeStream;
  uint16_t op = 0;
  uint32_t flags = 0;
  uint32_t buf_alloc = 0;
  uint32_t fwd_cnt = 0;
};

// Decodes the first kHeaderSize bytes of `bytes`; false if there are fewer.
bool decodeHeader(std::string_view bytes, PacketHeader& header);
// Writes exactly kHeaderSize bytes to `out`.
void encodeHeader(const PacketHeader& header, uint8_t* out);

}  // namespace microvm::vsock
