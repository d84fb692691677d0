#include "vsock/packet.h"

#include <cstring>

namespace microvm::vsock {

namespace {

template <typename T>
T loadLe(const uint8_t* p) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(static_cast<T>(p[i]) << (8 * i));
  return value;
}

template <typename T>
void storeLe(uint8_t* p, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<uint8_t>(value >> (8 * i));
}

}  // namespace

bool decodeHeader(std::string_view bytes, PacketHeader& header) {
  if (bytes.size() < kHeaderSize) return false;
  // SAFETY: reinterpreting char bytes as unsigned bytes of the same size.
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  header.src_cid = loadLe<uint64_t>(p);
  header.dst_cid = loadLe<uint64_t>(p + 8);
  header.src_port = loadLe<uint32_t>(p + 16);
  header.dst_port = loadLe<uint32_t>(p + 20);
  header.len = loadLe<uint32_t>(p + 24);
  header.type = loadLe<uint16_t>(p + 28);
  header.op = loadLe<uint16_t>(p + 30);
  header.flags = loadLe<uint32_t>(p + 32);
  header.buf_alloc = loadLe<uint32_t>(p + 36);
  header.fwd_cnt = loadLe<uint32_t>(p + 40);
  return true;
}

void encodeHeader(const PacketHeader& header, uint8_t* out) {
  storeLe(out, header.src_cid);
  storeLe(out + 8, header.dst_cid);
  storeLe(out + 16, header.src_port);
  storeLe(out + 20, header.dst_port);
  storeLe(out + 24, header.len);
  storeLe(out + 28, header.type);
  storeLe(out + 30, header.op);
  storeLe(out + 32, header.flags);
  storeLe(out + 36, header.buf_alloc);
  storeLe(out + 40, header.fwd_cnt);
}

}  // namespace microvm::vsock
