#include "agent/tlv.h"

namespace microvm::agent {

void putLe16(std::string& out, uint16_t value) {
  out.push_back(static_cast<char>(value & 0xff));
  out.push_back(static_cast<char>(value >> 8));
}

void putLe32(std::string& out, uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) out.push_back(static_cast<char>((value >> shift) & 0xff));
}

void putLe64(std::string& out, uint64_t value) {
  putLe32(out, static_cast<uint32_t>(value));
  putLe32(out, static_cast<uint32_t>(value >> 32));
}

uint16_t getLe16(const char* bytes) {
  return static_cast<uint16_t>(static_cast<uint8_t>(bytes[0]) | static_cast<uint8_t>(bytes[1]) << 8);
}

uint32_t getLe32(const char* bytes) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = value << 8 | static_cast<uint8_t>(bytes[i]);
  return value;
}

uint64_t getLe64(const char* bytes) { return getLe32(bytes) | uint64_t{getLe32(bytes + 4)} << 32; }

void TlvWriter::appendBytes(uint16_t tag, std::string_view value) {
  putLe16(out_, tag);
  putLe32(out_, static_cast<uint32_t>(value.size()));
  out_.append(value);
}

void TlvWriter::appendU32(uint16_t tag, uint32_t value) {
  putLe16(out_, tag);
  putLe32(out_, 4);
  putLe32(out_, value);
}

void TlvWriter::appendU64(uint16_t tag, uint64_t value) {
  putLe16(out_, tag);
  putLe32(out_, 8);
  putLe64(out_, value);
}

Result<TlvField> TlvReader::next() {
  size_t left = payload_.size() - pos_;
  if (left < kTlvHeaderSize) {
    size_t at = pos_;
    pos_ = payload_.size();
    return error(std::to_string(left) + " byte(s) at offset " + std::to_string(at) +
                 " are too few for a field header (" + std::to_string(kTlvHeaderSize) + " bytes)");
  }
  TlvField field;
  field.tag = getLe16(payload_.data() + pos_);
  field.offset = pos_;
  uint32_t length = getLe32(payload_.data() + pos_ + 2);
  left -= kTlvHeaderSize;
  if (length > left) {
    pos_ = payload_.size();
    return fieldError(field, "length " + std::to_string(length) + " exceeds the " + std::to_string(left) +
                                 " byte(s) left in the " + std::to_string(payload_.size()) + "-byte payload");
  }
  field.value = payload_.substr(field.offset + kTlvHeaderSize, length);
  pos_ = field.offset + kTlvHeaderSize + length;
  return field;
}

Result<uint32_t> TlvReader::u32(const TlvField& field) const {
  if (field.value.size() != 4) {
    return fieldError(field, "a 4-byte integer expected, got " + std::to_string(field.value.size()) + " byte(s)");
  }
  return getLe32(field.value.data());
}

Result<uint64_t> TlvReader::u64(const TlvField& field) const {
  if (field.value.size() != 8) {
    return fieldError(field, "an 8-byte integer expected, got " + std::to_string(field.value.size()) + " byte(s)");
  }
  return getLe64(field.value.data());
}

Result<bool> TlvReader::flag(const TlvField& field) const {
  if (field.value.size() != 1) {
    return fieldError(field, "a one-byte flag expected, got " + std::to_string(field.value.size()) + " byte(s)");
  }
  return field.value[0] != 0;
}

Error TlvReader::fieldError(const TlvField& field, std::string_view problem) const {
  std::string where = "field " + std::to_string(field.tag);
  const char* name = tag_name_ ? tag_name_(field.tag) : nullptr;
  if (name) where += std::string(" (") + name + ")";
  where += " at offset " + std::to_string(field.offset);
  return error(where + ": " + std::string(problem));
}

Error TlvReader::error(std::string_view problem) const {
  return Error(ErrorCode::kProtocol, std::string(what_) + ": " + std::string(problem));
}

}  // namespace microvm::agent
