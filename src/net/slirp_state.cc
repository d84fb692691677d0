#include "net/slirp_state.h"

#include <cstring>

#include "base/xxh64.h"

namespace microvm::net {

namespace {

constexpr char kMagic[4] = {'M', 'V', 'N', 'S'};
constexpr size_t kHeaderBytes = 4 + 4 + 4 + 8;

template <typename T>
void put(std::string& out, T value) {
  for (size_t i = 0; i < sizeof value; ++i) out.push_back(static_cast<char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff));
}

template <typename T>
T get(std::string_view in, size_t at) {
  uint64_t value = 0;
  for (size_t i = 0; i < sizeof(T); ++i) value |= uint64_t{static_cast<uint8_t>(in[at + i])} << (8 * i);
  return static_cast<T>(value);
}

Error refused(const std::string& why) { return Error(ErrorCode::kProtocol, "network state: " + why); }

}  // namespace

std::string encodeSlirpState(const SlirpState& state) {
  std::string out(kMagic, sizeof kMagic);
  put(out, static_cast<uint32_t>(state.version));
  put(out, static_cast<uint32_t>(state.bytes.size()));
  put(out, xxh64(state.bytes));
  return out + state.bytes;
}

Result<SlirpState> decodeSlirpState(std::string_view file) {
  if (file.size() < kHeaderBytes || std::memcmp(file.data(), kMagic, sizeof kMagic) != 0) {
    return refused("not a saved network state");
  }
  SlirpState state;
  uint32_t version = get<uint32_t>(file, 4);
  uint32_t length = get<uint32_t>(file, 8);
  if (version == 0 || version > 1000) return refused("unknown version " + std::to_string(version));
  if (length > kMaxSlirpStateBytes) return refused(std::to_string(length) + " bytes is more than any stack saves");
  if (file.size() != kHeaderBytes + length) {
    return refused("truncated or with trailing bytes (" + std::to_string(file.size()) + " bytes, want " +
                   std::to_string(kHeaderBytes + length) + ")");
  }
  state.version = static_cast<int>(version);
  state.bytes = std::string(file.substr(kHeaderBytes));
  if (xxh64(state.bytes) != get<uint64_t>(file, 12)) return refused("checksum mismatch (the file is corrupted)");
  return state;
}

}  // namespace microvm::net
