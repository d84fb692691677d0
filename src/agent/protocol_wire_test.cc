// The wire bytes of every message, pinned: captured from the codec before it
// moved into agent/tlv.{h,cc}, so a refactor that changes one byte on the
// wire fails here. (An old init or agent must keep reading what a new host
// sends, and the other way round.)
#include <gtest/gtest.h>

#include <string>

#include "agent/protocol.h"

namespace microvm::agent {
namespace {

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char byte : bytes) {
    out.push_back(kDigits[byte >> 4]);
    out.push_back(kDigits[byte & 0xf]);
  }
  return out;
}

WorkloadSpec fullSpec() {
  WorkloadSpec spec;
  spec.argv = {"/bin/sh", "-c", "echo hi"};
  spec.env = {"PATH=/bin", "A=b"};
  spec.workdir = "/srv";
  spec.user = "1000:1000";
  spec.hostname = "box";
  spec.open_stdin = true;
  spec.mounts.push_back({"share0", "/data", "9p", "trans=virtio", true});
  spec.mounts.push_back({"", "/tmp", "tmpfs", "size=64m", false});
  spec.sysctls = {"kernel.kptr_restrict=2"};
  spec.capabilities = 0x1234567890ull;
  spec.no_new_privs = true;
  spec.seccomp_default = "errno:1";
  spec.seccomp_rules = {"kill:ptrace"};
  spec.net_address4 = "10.0.2.15/24";
  spec.net_gateway4 = "10.0.2.2";
  spec.net_address6 = "fd00::15/64";
  spec.net_gateway6 = "fd00::2";
  spec.etc_hosts = "127.0.0.1 localhost\n";
  spec.etc_resolv_conf = "nameserver 10.0.2.3\n";
  return spec;
}

AgentRequest fullRequest() {
  AgentRequest request;
  request.op = 2;
  request.id = 7;
  request.argv = {"ls", "-l"};
  request.env = {"X=1"};
  request.cwd = "/tmp";
  request.user = "nobody";
  request.tty = true;
  request.rows = 40;
  request.cols = 120;
  request.path = "/etc/passwd";
  request.mode = 0644;
  request.uid = 1;
  request.gid = 2;
  request.mtime = -5;
  request.link_target = "target";
  request.parents = true;
  request.port = 8080;
  request.timeout_ms = 1500;
  return request;
}

AgentResult fullResult() {
  AgentResult result;
  result.id = 7;
  result.status = AgentStatus::kFailed;
  result.error_number = 2;
  result.message = "no such file";
  result.pid = 42;
  result.exit_code = 3;
  result.http_status = 200;
  result.info = FileInfo{"f", FileType::kSymlink, 0777, 11, 1700000000, 0, 0, "dest"};
  return result;
}

std::vector<FileInfo> twoEntries() {
  return {FileInfo{"a", FileType::kRegular, 0644, 5, 1, 2, 3, ""},
          FileInfo{"d", FileType::kDirectory, 0755, 0, 0, 0, 0, ""}};
}

TEST(ProtocolWireTest, SpecEncodingIsPinned) {
  EXPECT_EQ(hex(encodeSpec(fullSpec())),
            "0100070000002f62696e2f73680100020000002d630100070000006563686f206869020009000000504154483d2f62696e02"
            "0003000000413d620300040000002f737276040009000000313030303a31303030050003000000626f780600080000002f64"
            "65762f7664610700040000006578743408001f000000736861726530002f64617461003970007472616e733d76697274696f"
            "00726f080017000000002f746d7000746d7066730073697a653d36346d0072770900160000006b65726e656c2e6b7074725f"
            "72657374726963743d320a000800000090785634120000000b0001000000011e0001000000010c00070000006572726e6f3a"
            "310d000b0000006b696c6c3a7074726163650e000c00000031302e302e322e31352f32340f000800000031302e302e322e32"
            "10000b000000666430303a3a31352f3634110007000000666430303a3a321200140000003132372e302e302e31206c6f6361"
            "6c686f73740a1300140000006e616d657365727665722031302e302e322e330a");
  WorkloadSpec minimal;
  minimal.argv = {"true"};
  EXPECT_EQ(hex(encodeSpec(minimal)),
            "010004000000747275650300010000002f0400000000000500000000000600080000002f6465762f76646107000400000065"
            "7874340a0008000000ffffffffff0100000b000100000000");
  auto decoded = decodeSpec(encodeSpec(fullSpec()));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  EXPECT_EQ(encodeSpec(*decoded), encodeSpec(fullSpec()));
}

TEST(ProtocolWireTest, AgentEncodingsArePinned) {
  EXPECT_EQ(hex(encodeRequest(fullRequest())),
            "01000400000002000000020004000000070000000300020000006c730300020000002d6c040003000000583d310500040000"
            "002f746d700600060000006e6f626f64790700010000000108000400000028000000090004000000780000000a000b000000"
            "2f6574632f7061737377640b0004000000a40100000c0004000000010000000d0004000000020000000e0008000000fbffff"
            "ffffffffff120006000000746172676574110001000000010f0004000000901f0000100004000000dc050000");
  EXPECT_EQ(hex(encodeResult(fullResult())),
            "02000400000007000000200004000000010000002100040000000200000022000c0000006e6f20737563682066696c652300"
            "040000002a00000024000400000003000000250004000000c800000026005200000030000100000066310001000000030b00"
            "04000000ff0100003200080000000b000000000000000e000800000000f15365000000000c0004000000000000000d000400"
            "00000000000012000400000064657374");
  EXPECT_EQ(hex(encodeEntries(twoEntries())),
            "33004800000030000100000061310001000000010b0004000000a401000032000800000005000000000000000e0008000000"
            "01000000000000000c0004000000020000000d00040000000300000033004800000030000100000064310001000000020b00"
            "04000000ed01000032000800000000000000000000000e000800000000000000000000000c0004000000000000000d000400"
            "000000000000");
  EXPECT_EQ(hex(encodeWindowSize({40, 120})), "28007800");
  EXPECT_EQ(*decodeRequest(encodeRequest(fullRequest())), fullRequest());
  EXPECT_EQ(*decodeResult(encodeResult(fullResult())), fullResult());
  EXPECT_EQ(*decodeEntries(encodeEntries(twoEntries())), twoEntries());
}

TEST(ProtocolWireTest, FrameEncodingIsPinned) {
  std::string wire;
  appendFrame(wire, FrameType::kExit, encodeU32(0x81));
  EXPECT_EQ(hex(wire), "140000000400000081000000");
}

}  // namespace
}  // namespace microvm::agent
