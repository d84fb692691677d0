// The TLV codec (agent/tlv.h) and the reasons every decoder gives for a
// malformed message.
#include "agent/tlv.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "agent/protocol.h"

namespace microvm::agent {
namespace {

const char* testTagName(uint16_t tag) { return tag == 7 ? "seven" : nullptr; }

// The message of a failed Result, or a marker if it succeeded.
template <typename T>
std::string reason(const Result<T>& result) {
  if (result.ok()) return "(decoded)";
  EXPECT_EQ(result.error().code(), ErrorCode::kProtocol);
  return result.error().message();
}

TEST(TlvTest, WriterLaysOutTagLengthValueLittleEndian) {
  std::string out;
  TlvWriter writer(out);
  writer.bytes(uint16_t{0x0102}, "ab");
  writer.u32(uint16_t{3}, 0x11223344);
  writer.u64(uint16_t{4}, 0x0102030405060708ull);
  writer.flag(uint16_t{5}, true);
  writer.flag(uint16_t{6}, false);
  EXPECT_EQ(out, std::string("\x02\x01\x02\x00\x00\x00" "ab"
                             "\x03\x00\x04\x00\x00\x00\x44\x33\x22\x11"
                             "\x04\x00\x08\x00\x00\x00\x08\x07\x06\x05\x04\x03\x02\x01"
                             "\x05\x00\x01\x00\x00\x00\x01"
                             "\x06\x00\x01\x00\x00\x00\x00",
                             6 + 2 + 10 + 14 + 7 + 7));
}

TEST(TlvTest, ReaderRoundTripsFieldsWithTheirOffsets) {
  std::string out;
  TlvWriter writer(out);
  writer.bytes(uint16_t{7}, "");
  writer.u32(uint16_t{8}, 42);
  writer.u64(uint16_t{9}, uint64_t{1} << 40);
  writer.flag(uint16_t{10}, true);
  TlvReader reader(out, "test", testTagName);
  std::vector<TlvField> fields;
  while (!reader.done()) {
    auto field = reader.next();
    ASSERT_TRUE(field.ok()) << field.error().message();
    fields.push_back(*field);
  }
  ASSERT_EQ(fields.size(), 4u);
  EXPECT_EQ(fields[0].tag, 7);
  EXPECT_EQ(fields[0].value, "");
  EXPECT_EQ(fields[1].offset, 6u);
  EXPECT_EQ(*reader.u32(fields[1]), 42u);
  EXPECT_EQ(fields[2].offset, 16u);
  EXPECT_EQ(*reader.u64(fields[2]), uint64_t{1} << 40);
  EXPECT_TRUE(*reader.flag(fields[3]));
  EXPECT_TRUE(TlvReader("", "empty").done());
}

TEST(TlvTest, TruncatedHeaderSaysHowManyBytesAreLeftAndWhere) {
  std::string out;
  TlvWriter(out).u32(uint16_t{1}, 5);
  out += std::string("\x02\x00\x01", 3);
  TlvReader reader(out, "test");
  ASSERT_TRUE(reader.next().ok());
  EXPECT_EQ(reason(reader.next()), "test: 3 byte(s) at offset 10 are too few for a field header (6 bytes)");
  EXPECT_TRUE(reader.done());  // a malformed payload ends the walk
}

TEST(TlvTest, LengthPastTheEndNamesTheField) {
  std::string out("\x07\x00\x70\x11\x01\x00" "abc", 9);  // length 70000
  TlvReader reader(out, "test", testTagName);
  EXPECT_EQ(reason(reader.next()),
            "test: field 7 (seven) at offset 0: length 70000 exceeds the 3 byte(s) left in the 9-byte payload");
  EXPECT_TRUE(reader.done());
  // A tag without a name is given by number only.
  std::string unnamed("\x08\x00\x04\x00\x00\x00" "ab", 8);
  EXPECT_EQ(reason(TlvReader(unnamed, "test", testTagName).next()),
            "test: field 8 at offset 0: length 4 exceeds the 2 byte(s) left in the 8-byte payload");
}

TEST(TlvTest, WrongWidthsAreErrorsNamingTheField) {
  std::string out;
  TlvWriter(out).bytes(uint16_t{7}, "xyz");
  TlvReader reader(out, "test", testTagName);
  auto field = reader.next();
  ASSERT_TRUE(field.ok());
  EXPECT_EQ(reason(reader.u32(*field)), "test: field 7 (seven) at offset 0: a 4-byte integer expected, got 3 byte(s)");
  EXPECT_EQ(reason(reader.u64(*field)), "test: field 7 (seven) at offset 0: an 8-byte integer expected, got 3 byte(s)");
  EXPECT_EQ(reason(reader.flag(*field)), "test: field 7 (seven) at offset 0: a one-byte flag expected, got 3 byte(s)");
}

TEST(TlvTest, FrameReaderSaysWhereAnOversizedFrameStarts) {
  std::string wire;
  appendFrame(wire, FrameType::kStdout, "hello");
  putLe16(wire, static_cast<uint16_t>(FrameType::kStderr));
  putLe16(wire, 0);
  putLe32(wire, kMaxPayload + 1);
  FrameReader reader;
  reader.feed(wire);
  EXPECT_TRUE(reader.next().has_value());
  EXPECT_EQ(reader.failure(), "");
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_TRUE(reader.failed());
  EXPECT_EQ(reader.failure(), "frame at stream offset 13 (type 19): length 1048577 exceeds the 1048576-byte limit");
}

TEST(ProtocolReasonTest, FixedSizePayloads) {
  EXPECT_EQ(reason(decodeU32("abc")), "a 4-byte integer payload expected, got 3 byte(s)");
  EXPECT_EQ(reason(decodeWindowSize("abcde")), "window size: 4 bytes expected, got 5 byte(s)");
}

TEST(ProtocolReasonTest, WorkloadSpec) {
  std::string wire;
  TlvWriter spec(wire);
  spec.bytes(SpecTag::kArg, "/bin/true");
  spec.bytes(static_cast<SpecTag>(999), "from a newer host");  // skipped
  EXPECT_TRUE(decodeSpec(wire).ok());

  std::string bad_mount = wire;
  TlvWriter(bad_mount).bytes(SpecTag::kMount, std::string("a\0b\0c\0d", 7));
  EXPECT_EQ(reason(decodeSpec(bad_mount)),
            "workload spec: field 8 (mount) at offset 38: mount: 5 NUL-separated parts expected, got 4");
  EXPECT_EQ(reason(decodeMount(std::string("a\0b\0c\0d\0maybe", 13))),
            "mount: the last part must be \"ro\" or \"rw\", not \"maybe\"");

  std::string narrow_caps = wire;
  TlvWriter(narrow_caps).u32(SpecTag::kCapabilities, 1);
  EXPECT_EQ(reason(decodeSpec(narrow_caps)),
            "workload spec: field 10 (capabilities) at offset 38: an 8-byte integer expected, got 4 byte(s)");

  std::string wide_flag = wire;
  TlvWriter(wide_flag).bytes(SpecTag::kOpenStdin, "yes");
  EXPECT_EQ(reason(decodeSpec(wide_flag)),
            "workload spec: field 30 (open stdin) at offset 38: a one-byte flag expected, got 3 byte(s)");

  EXPECT_EQ(reason(decodeSpec("")), "workload spec: no arg field: argv is empty");
  EXPECT_EQ(reason(decodeSpec(std::string_view(wire).substr(0, 10))),
            "workload spec: field 1 (arg) at offset 0: length 9 exceeds the 4 byte(s) left in the 10-byte payload");
}

TEST(ProtocolReasonTest, AgentRequest) {
  EXPECT_EQ(reason(decodeRequest("")), "request: no op field");
  std::string wide_window;
  appendU32Field(wide_window, AgentTag::kOp, 2);
  appendU32Field(wide_window, AgentTag::kRows, 70000);
  EXPECT_EQ(reason(decodeRequest(wide_window)), "request: field 8 (rows) at offset 10: 70000 exceeds 65535");
  std::string short_op;
  appendField(short_op, AgentTag::kOp, "\x01");
  EXPECT_EQ(reason(decodeRequest(short_op)),
            "request: field 1 (op) at offset 0: a 4-byte integer expected, got 1 byte(s)");
  std::string oversized_arg;
  appendU32Field(oversized_arg, AgentTag::kOp, 2);
  oversized_arg += std::string("\x03\x00\x70\x11\x01\x00", 6);  // argv: length 70000, no bytes
  EXPECT_EQ(reason(decodeRequest(oversized_arg)),
            "request: field 3 (arg) at offset 10: length 70000 exceeds the 0 byte(s) left in the 16-byte payload");
}

TEST(ProtocolReasonTest, EveryTruncationInsideAFieldIsAnError) {
  AgentRequest request;
  request.op = static_cast<uint32_t>(AgentOp::kExec);
  request.argv = {"sh", "-c", "true"};
  request.mtime = 5;
  std::string wire = encodeRequest(request);
  std::set<size_t> boundaries;  // cut there, the request is whole but shorter
  for (TlvReader reader(wire, "request"); !reader.done();) boundaries.insert(reader.next()->offset);
  for (size_t size = 1; size < wire.size(); ++size) {
    if (boundaries.count(size)) continue;
    auto decoded = decodeRequest(std::string_view(wire).substr(0, size));
    ASSERT_FALSE(decoded.ok()) << size;
    EXPECT_EQ(decoded.error().message().rfind("request: ", 0), 0u) << decoded.error().message();
  }
  EXPECT_GE(boundaries.size(), 5u);
}

TEST(ProtocolReasonTest, AgentResultsAndEntriesNameTheNestedField) {
  EXPECT_EQ(reason(decodeResult("")), "result: no status field");
  std::string bad_info;
  appendU32Field(bad_info, AgentTag::kStatus, 0);
  appendField(bad_info, AgentTag::kInfo, std::string("\x31\x00\x01\x00\x00\x00\x07", 7));
  EXPECT_EQ(reason(decodeResult(bad_info)),
            "result: field 38 (info) at offset 10: file info: field 49 (type) at offset 0: unknown file type 7");
  std::string bad_type;
  appendField(bad_type, AgentTag::kEntry, std::string("\x31\x00\x02\x00\x00\x00\x01\x01", 8));
  EXPECT_EQ(reason(decodeEntries(bad_type)),
            "directory entries: field 51 (entry) at offset 0: file info: field 49 (type) at offset 0: one byte "
            "expected, got 2");
  // Fields other than kEntry are skipped, as before.
  std::string other;
  appendField(other, AgentTag::kMessage, "ignored");
  auto entries = decodeEntries(other);
  ASSERT_TRUE(entries.ok());
  EXPECT_TRUE(entries->empty());
}

}  // namespace
}  // namespace microvm::agent
