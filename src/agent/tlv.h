// The one TLV codec of the host<->guest protocols (agent/protocol.h): the
// workload spec, agent requests, results and file entries are all sequences
// of fields {u16 tag, u32 length, `length` bytes}, integers little-endian.
// Writing cannot fail. Reading checks every length against the bytes that are
// there, and its errors (ErrorCode::kProtocol) say what was wrong and where:
//   request: field 3 (arg) at offset 12: length 70000 exceeds the 18 bytes left
//
// Usage:
//   std::string payload;
//   TlvWriter out(payload);
//   out.u32(AgentTag::kOp, 1);
//   out.bytes(AgentTag::kPath, "/etc");
//
//   TlvReader in(payload, "request", agentTagName);
//   while (!in.done()) {
//     auto field = in.next();
//     if (!field) return field.error();
//     if (field->tag == 1) { auto op = in.u32(*field); if (!op) return op.error(); }
//   }
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "microvm/result.h"

namespace microvm::agent {

// Little-endian integers, the byte order of every header and field.
void putLe16(std::string& out, uint16_t value);
void putLe32(std::string& out, uint32_t value);
void putLe64(std::string& out, uint64_t value);
uint16_t getLe16(const char* bytes);
uint32_t getLe32(const char* bytes);
uint64_t getLe64(const char* bytes);

// u16 tag + u32 length.
inline constexpr size_t kTlvHeaderSize = 6;

// Appends fields to a string it does not own. Tags are any 16-bit enum.
class TlvWriter {
 public:
  explicit TlvWriter(std::string& out) : out_(out) {}

  template <typename Tag>
  void bytes(Tag tag, std::string_view value) {
    appendBytes(static_cast<uint16_t>(tag), value);
  }
  template <typename Tag>
  void u32(Tag tag, uint32_t value) {
    appendU32(static_cast<uint16_t>(tag), value);
  }
  template <typename Tag>
  void u64(Tag tag, uint64_t value) {
    appendU64(static_cast<uint16_t>(tag), value);
  }
  // One byte, 0 or 1.
  template <typename Tag>
  void flag(Tag tag, bool value) {
    appendBytes(static_cast<uint16_t>(tag), value ? std::string_view("\1", 1) : std::string_view("\0", 1));
  }

 private:
  void appendBytes(uint16_t tag, std::string_view value);
  void appendU32(uint16_t tag, uint32_t value);
  void appendU64(uint16_t tag, uint64_t value);

  std::string& out_;
};

struct TlvField {
  uint16_t tag = 0;
  std::string_view value;  // a view into the reader's payload
  size_t offset = 0;       // of the field's header in the payload
};

// Walks the fields of a payload it does not own. Every error names `what`
// (the message being decoded) and, for a field, its tag, name and offset.
class TlvReader {
 public:
  // The name of a tag for messages ("arg"); nullptr: the protocol has none.
  using TagName = const char* (*)(uint16_t tag);

  TlvReader(std::string_view payload, std::string_view what, TagName tag_name = nullptr)
      : payload_(payload), what_(what), tag_name_(tag_name) {}

  // True once every byte has been read as a field (or a field was malformed).
  bool done() const { return pos_ >= payload_.size(); }

  // The next field; an error if the bytes left do not hold a whole one.
  Result<TlvField> next();

  // A field's value read as a fixed-width integer or a one-byte flag (any
  // nonzero byte is true); an error if the width is wrong.
  Result<uint32_t> u32(const TlvField& field) const;
  Result<uint64_t> u64(const TlvField& field) const;
  Result<bool> flag(const TlvField& field) const;

  // "<what>: field <tag> (<name>) at offset <n>: <problem>".
  Error fieldError(const TlvField& field, std::string_view problem) const;
  // "<what>: <problem>", for what is wrong with the message as a whole.
  Error error(std::string_view problem) const;

 private:
  std::string_view payload_;
  std::string_view what_;
  TagName tag_name_;
  size_t pos_ = 0;
};

}  // namespace microvm::agent
