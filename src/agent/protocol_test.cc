#include "agent/protocol.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

namespace microvm::agent {
namespace {

TEST(ProtocolTest, RefreshFramesRoundTripAndBadOnesAreRefused) {
  ControlRefresh refresh{1'765'000'000'123'456'789, std::string(64, '\x5a'), "child-1"};
  auto back = decodeRefresh(encodeRefresh(refresh));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->realtime_ns, refresh.realtime_ns);
  EXPECT_EQ(back->entropy, refresh.entropy);
  EXPECT_EQ(back->hostname, "child-1");
  EXPECT_FALSE(decodeRefresh("short").ok());
  std::string too_much(10, '\0');
  too_much[8] = static_cast<char>((kMaxControlRefreshEntropy + 1) & 0xff);
  too_much[9] = static_cast<char>((kMaxControlRefreshEntropy + 1) >> 8);
  EXPECT_FALSE(decodeRefresh(too_much + std::string(kMaxControlRefreshEntropy + 1, 'x')).ok());
  std::string cut(10, '\0');
  cut[8] = 16;
  EXPECT_FALSE(decodeRefresh(cut + "abc").ok());                       // entropy cut short
  EXPECT_FALSE(decodeRefresh(std::string(7, '\0') + "\xff\0\0").ok());  // beyond INT64_MAX
  EXPECT_FALSE(decodeRefresh(std::string(10, '\0') + std::string(kMaxControlRefreshHostname + 1, 'h')).ok());
  EXPECT_FALSE(decodeRefresh(std::string(10, '\0') + std::string("a\0b", 3)).ok());
  auto bare = decodeRefresh(std::string(10, '\0'));  // no entropy, no hostname
  ASSERT_TRUE(bare.ok());
  EXPECT_TRUE(bare->entropy.empty());
  EXPECT_TRUE(bare->hostname.empty());
}

TEST(ProtocolTest, ClockAnswersRoundTripAndAddHalfTheirRoundTrip) {
  ControlClock clock{1'765'000'000'123'456'789, 5'000'000'000};
  auto back = decodeClock(encodeClock(clock));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->realtime_ns, clock.realtime_ns);
  EXPECT_EQ(back->echo_ns, clock.echo_ns);
  EXPECT_FALSE(decodeClock(encodeClock(clock) + "x").ok());
  EXPECT_FALSE(decodeClock(encodeClock(clock).substr(0, 15)).ok());
  EXPECT_FALSE(decodeClock(std::string(7, '\xff') + "\xff" + std::string(8, '\0')).ok());  // beyond INT64_MAX
  // Sent at 5 s of the guest's monotonic clock, answered at 5.004 s: the
  // host's time 2 ms ago.
  EXPECT_EQ(clockFromAnswer(clock, 5'004'000'000), clock.realtime_ns + 2'000'000);
  EXPECT_EQ(clockFromAnswer(clock, 5'000'000'000), clock.realtime_ns);
  // An echo from the future, or a round trip over a second: the time alone.
  EXPECT_EQ(clockFromAnswer(clock, 4'999'999'999), clock.realtime_ns);
  EXPECT_EQ(clockFromAnswer(clock, 6'000'000'001), clock.realtime_ns);
  EXPECT_EQ(clockFromAnswer({INT64_MAX, 0}, 1'000'000), INT64_MAX);
}

TEST(ProtocolTest, UlimitsParseAsDockerWritesThemAndTravelInTheSpec) {
  auto nofile = parseUlimit("nofile=1024:2048");
  ASSERT_TRUE(nofile.ok());
  EXPECT_EQ(nofile->resource, RLIMIT_NOFILE);
  EXPECT_EQ(nofile->soft, 1024u);
  EXPECT_EQ(nofile->hard, 2048u);
  EXPECT_EQ(formatUlimit(*nofile), "nofile=1024:2048");
  auto one = parseUlimit("RLIMIT_NPROC=512");  // the OCI spec's name; hard = soft
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(formatUlimit(*one), "nproc=512:512");
  auto unlimited = parseUlimit("core=unlimited:-1");
  ASSERT_TRUE(unlimited.ok());
  EXPECT_EQ(unlimited->soft, uint64_t{RLIM_INFINITY});
  EXPECT_EQ(formatUlimit(*unlimited), "core=unlimited:unlimited");
  for (const char* bad : {"nofile", "nofile=", "nofile=2048:1024", "nofile=x", "nofile=1:2:3", "bogus=1", "=1",
                          "nofile=-2"}) {
    auto refused = parseUlimit(bad);
    EXPECT_FALSE(refused.ok()) << bad;
    if (!refused.ok()) {
      EXPECT_NE(refused.error().message().find("ulimit"), std::string::npos) << bad;
    }
  }
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  spec.ulimits = {"nofile=1024:2048", "nproc=64:64"};
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->ulimits, spec.ulimits);
}

TEST(ProtocolTest, FrameRoundTripsAcrossArbitraryChunks) {
  std::string wire;
  appendFrame(wire, FrameType::kStdout, "hello");
  appendFrame(wire, FrameType::kExit, encodeU32(3));
  appendFrame(wire, FrameType::kStderr, "");

  FrameReader reader;
  std::vector<Frame> frames;
  for (char byte : wire) {  // worst case: one byte at a time
    reader.feed(std::string_view(&byte, 1));
    while (auto frame = reader.next()) frames.push_back(*frame);
  }
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[0].type, FrameType::kStdout);
  EXPECT_EQ(frames[0].payload, "hello");
  EXPECT_EQ(*decodeU32(frames[1].payload), 3u);
  EXPECT_EQ(frames[2].payload, "");
  EXPECT_FALSE(reader.failed());
}

// Many frames fed at once, drained one by one, with more fed midway: the
// reader compacts its buffer as it goes and must not lose or reorder bytes.
TEST(ProtocolTest, LargeBacklogsDrainInOrderWhileMoreArrives) {
  auto payload = [](int i) { return std::string(static_cast<size_t>(1000 + i % 7000), static_cast<char>('a' + i % 26)); };
  std::string first, second;
  for (int i = 0; i < 300; ++i) appendFrame(first, FrameType::kStdout, payload(i));
  for (int i = 300; i < 400; ++i) appendFrame(second, FrameType::kStdout, payload(i));
  FrameReader reader;
  reader.feed(first);
  reader.feed(std::string_view(second).substr(0, 5));  // a split header waits at the end
  int seen = 0;
  for (; seen < 150; ++seen) {
    auto frame = reader.next();
    ASSERT_TRUE(frame.has_value()) << seen;
    ASSERT_EQ(frame->payload, payload(seen));
  }
  reader.feed(std::string_view(second).substr(5));
  while (auto frame = reader.next()) {
    ASSERT_EQ(frame->payload, payload(seen)) << seen;
    ++seen;
  }
  EXPECT_EQ(seen, 400);
  EXPECT_FALSE(reader.failed());
}

TEST(ProtocolTest, OversizedLengthFailsTheStreamInsteadOfAllocating) {
  std::string wire;
  putLe16(wire, static_cast<uint16_t>(FrameType::kStdout));
  putLe16(wire, 0);
  putLe32(wire, kMaxPayload + 1);
  FrameReader reader;
  reader.feed(wire);
  EXPECT_FALSE(reader.next().has_value());
  EXPECT_TRUE(reader.failed());
  reader.feed("more");
  EXPECT_FALSE(reader.next().has_value());
}

TEST(ProtocolTest, UnknownFrameTypesAreDeliveredForTheCallerToIgnore) {
  std::string wire;
  appendFrame(wire, static_cast<FrameType>(999), "x");
  FrameReader reader;
  reader.feed(wire);
  auto frame = reader.next();
  ASSERT_TRUE(frame.has_value());
  EXPECT_EQ(static_cast<uint16_t>(frame->type), 999);
}

TEST(ProtocolTest, SpecRoundTrips) {
  WorkloadSpec spec;
  spec.argv = {"/bin/sh", "-c", std::string("a\0b", 3)};
  spec.env = {"A=1", "B="};
  spec.workdir = "/srv";
  spec.user = "app:staff";
  spec.hostname = "box";
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->argv, spec.argv);
  EXPECT_EQ(decoded->env, spec.env);
  EXPECT_EQ(decoded->workdir, "/srv");
  EXPECT_EQ(decoded->user, "app:staff");
  EXPECT_EQ(decoded->hostname, "box");
  EXPECT_EQ(decoded->root_device, "/dev/vda");
}

TEST(ProtocolTest, HardeningFieldsRoundTrip) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  spec.mounts = {{"vol0", "/data", "9p", "", true}, {"", "/scratch", "tmpfs", "size=64m", false}};
  spec.sysctls = {"kernel.kptr_restrict=2"};
  spec.capabilities = (uint64_t{1} << 40) | 1;
  spec.no_new_privs = true;
  spec.open_stdin = true;
  spec.seccomp_default = "allow";
  spec.seccomp_rules = {"errno:1:unshare", "errno:1:keyctl"};
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.ok());
  ASSERT_EQ(decoded->mounts.size(), 2u);
  EXPECT_EQ(decoded->mounts[0].target, "/data");
  EXPECT_TRUE(decoded->mounts[0].readonly);
  EXPECT_EQ(decoded->mounts[1].options, "size=64m");
  EXPECT_FALSE(decoded->mounts[1].readonly);
  EXPECT_EQ(decoded->sysctls, spec.sysctls);
  EXPECT_EQ(decoded->capabilities, spec.capabilities);
  EXPECT_TRUE(decoded->no_new_privs);
  EXPECT_TRUE(decoded->open_stdin);
  EXPECT_EQ(decoded->seccomp_default, "allow");
  EXPECT_EQ(decoded->seccomp_rules, spec.seccomp_rules);
}

TEST(ProtocolTest, ASeccompProgramTravelsOnlyAsWholeInstructionsWithinTheKernelsLimit) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  spec.seccomp_program = std::string(3 * kSeccompInstructionBytes, '\x06');
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  EXPECT_EQ(decoded->seccomp_program, spec.seccomp_program);
  WorkloadSpec without;
  without.argv = {"/bin/true"};
  auto plain = decodeSpec(encodeSpec(without));
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->seccomp_program.empty());

  auto refused = [&](const std::string& program) {
    std::string wire = encodeSpec(without);
    TlvWriter(wire).bytes(SpecTag::kSeccompProgram, program);
    auto result = decodeSpec(wire);
    return !result.ok() && result.error().message().find("seccomp program") != std::string::npos;
  };
  EXPECT_TRUE(refused(""));
  EXPECT_TRUE(refused(std::string(kSeccompInstructionBytes + 1, 'x')));
  EXPECT_TRUE(refused(std::string((kMaxSeccompProgramInstructions + 1) * kSeccompInstructionBytes, 'x')));
  EXPECT_FALSE(refused(std::string(kMaxSeccompProgramInstructions * kSeccompInstructionBytes, 'x')));
}

TEST(ProtocolTest, InjectedFilesRoundTripWithinTheirBounds) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  spec.injected = {{"/etc/hook.txt", false, std::string("a\0b\xff", 4), 0640, 1000, 70000},
                   {"/opt/dir", true, "", 0750, 7, 8}};
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  ASSERT_EQ(decoded->injected.size(), 2u);
  EXPECT_EQ(decoded->injected[0].path, "/etc/hook.txt");
  EXPECT_EQ(decoded->injected[0].content, std::string("a\0b\xff", 4));
  EXPECT_EQ(decoded->injected[0].mode, 0640u);
  EXPECT_EQ(decoded->injected[0].uid, 1000u);
  EXPECT_EQ(decoded->injected[0].gid, 70000u);
  EXPECT_FALSE(decoded->injected[0].directory);
  EXPECT_TRUE(decoded->injected[1].directory);
  EXPECT_EQ(decoded->injected[1].mode, 0750u);

  // Malformed values, and more than the spec may carry.
  EXPECT_FALSE(decodeInjected("short").ok());
  EXPECT_FALSE(decodeInjected(std::string(12, '\0') + "\x02/p\0").ok());
  EXPECT_FALSE(decodeInjected(std::string(13, '\0') + "/no-nul").ok());
  WorkloadSpec many = spec;
  many.injected.assign(kMaxSpecInjectedFiles + 1, {"/f", false, "x", 0644, 0, 0});
  EXPECT_FALSE(decodeSpec(encodeSpec(many)).ok());
  WorkloadSpec big = spec;
  big.injected = {{"/big", false, std::string(kMaxSpecInjectedBytes + 1, 'x'), 0644, 0, 0}};
  EXPECT_FALSE(decodeSpec(encodeSpec(big)).ok());
}

TEST(ProtocolTest, NetworkFieldsRoundTripAndAreOmittedWhenEmpty) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  std::string without = encodeSpec(spec);
  spec.net_address4 = "10.0.2.15/24";
  spec.net_gateway4 = "10.0.2.2";
  spec.net_address6 = "fd00::15/64";
  spec.net_gateway6 = "fd00::2";
  spec.etc_hosts = "127.0.0.1\tlocalhost\n";
  spec.etc_resolv_conf = "nameserver 10.0.2.3\n";
  spec.net_mac = "02:12:34:56:78:9a";
  spec.net_mtu = 1450;
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->net_address4, spec.net_address4);
  EXPECT_EQ(decoded->net_gateway4, spec.net_gateway4);
  EXPECT_EQ(decoded->net_address6, spec.net_address6);
  EXPECT_EQ(decoded->net_gateway6, spec.net_gateway6);
  EXPECT_EQ(decoded->etc_hosts, spec.etc_hosts);
  EXPECT_EQ(decoded->etc_resolv_conf, spec.etc_resolv_conf);
  EXPECT_EQ(decoded->net_mac, spec.net_mac);
  EXPECT_EQ(decoded->net_mtu, 1450u);
  // A spec without networking encodes as before: no new tags at all.
  auto plain = decodeSpec(without);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE(plain->net_address4.empty());
  EXPECT_EQ(plain->net_mtu, 0u);
  EXPECT_EQ(without.find("10.0.2"), std::string::npos);
}

TEST(ProtocolTest, TtyAndItsSizeRoundTripAndAreOmittedWithoutATty) {
  WorkloadSpec spec;
  spec.argv = {"/bin/sh"};
  auto plain = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->tty);
  EXPECT_EQ(encodeSpec(spec).find(std::string("\x16\x00", 2)), std::string::npos);  // no kTty tag
  spec.tty = true;
  spec.tty_rows = 33;
  spec.tty_cols = 101;
  auto decoded = decodeSpec(encodeSpec(spec));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  EXPECT_TRUE(decoded->tty);
  EXPECT_EQ(decoded->tty_rows, 33);
  EXPECT_EQ(decoded->tty_cols, 101);
}

TEST(ProtocolTest, TtySizeOfTheWrongWidthIsRefused) {
  for (std::string_view value : {std::string_view("\x01\x00\x02", 3), std::string_view("\x01\x00\x02\x00\x00", 5)}) {
    std::string wire;
    TlvWriter field(wire);
    field.bytes(SpecTag::kArg, "/bin/sh");
    field.bytes(SpecTag::kTtySize, value);
    auto decoded = decodeSpec(wire);
    ASSERT_FALSE(decoded.ok());
    EXPECT_NE(decoded.error().message().find("tty size"), std::string::npos) << decoded.error().message();
  }
  std::string wire;
  TlvWriter field(wire);
  field.bytes(SpecTag::kArg, "/bin/sh");
  field.bytes(SpecTag::kTty, "\x01\x01");  // a flag is one byte
  EXPECT_FALSE(decodeSpec(wire).ok());
}

TEST(ProtocolTest, MalformedMountIsRejected) {
  EXPECT_FALSE(decodeMount(std::string("a\0b\0c\0d", 7)).ok());
  EXPECT_FALSE(decodeMount(std::string("a\0b\0c\0d\0maybe", 13)).ok());
  EXPECT_TRUE(decodeMount(std::string("a\0b\0c\0d\0ro", 10)).ok());
}

TEST(ProtocolTest, TruncatedSpecIsRejectedAtEveryLength) {
  WorkloadSpec spec;
  spec.argv = {"/bin/true"};
  std::string wire = encodeSpec(spec);
  // Dropping the last field's bytes one by one must never read past the end.
  for (size_t cut = 1; cut < 6 + spec.argv[0].size(); ++cut) {
    auto decoded = decodeSpec(std::string_view(wire).substr(0, 6 + spec.argv[0].size() - cut));
    EXPECT_FALSE(decoded.ok()) << "cut " << cut;
  }
}

TEST(ProtocolTest, SpecWithoutArgvIsRejected) {
  WorkloadSpec spec;
  EXPECT_FALSE(decodeSpec(encodeSpec(spec)).ok());
}

TEST(ProtocolTest, DecodeU32NeedsExactlyFourBytes) {
  EXPECT_FALSE(decodeU32("abc").ok());
  EXPECT_FALSE(decodeU32("abcde").ok());
  EXPECT_EQ(*decodeU32(encodeU32(0xdeadbeef)), 0xdeadbeefu);
}

TEST(AgentProtocolTest, RequestRoundTripsWithEveryField) {
  AgentRequest request;
  request.op = static_cast<uint32_t>(AgentOp::kExec);
  request.id = 9;
  request.argv = {"sh", "-c", std::string("a\0b", 3)};
  request.env = {"A=1"};
  request.cwd = "/srv";
  request.user = "app:staff";
  request.tty = true;
  request.rows = 24;
  request.cols = 80;
  request.path = "/tmp/x";
  request.mode = 0755;
  request.uid = 0;
  request.gid = 1000;
  request.mtime = -1;
  request.link_target = "../y";
  request.parents = true;
  request.port = 8080;
  request.timeout_ms = 250;
  auto decoded = decodeRequest(encodeRequest(request));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, request);
}

TEST(AgentProtocolTest, MalformedRequestsAreRefused) {
  EXPECT_FALSE(decodeRequest("").ok());  // no op
  std::string truncated;
  appendU32Field(truncated, AgentTag::kOp, 1);
  truncated += std::string("\x0a\x00\x10\x00\x00\x00/short", 12);
  EXPECT_FALSE(decodeRequest(truncated).ok());
  std::string wide_window;
  appendU32Field(wide_window, AgentTag::kOp, 2);
  appendU32Field(wide_window, AgentTag::kRows, 70000);
  EXPECT_FALSE(decodeRequest(wide_window).ok());
  std::string short_integer;
  appendField(short_integer, AgentTag::kOp, "\x01");
  EXPECT_FALSE(decodeRequest(short_integer).ok());
  // Unknown fields are skipped.
  std::string unknown;
  appendU32Field(unknown, AgentTag::kOp, 1);
  appendField(unknown, static_cast<AgentTag>(999), "future");
  EXPECT_TRUE(decodeRequest(unknown).ok());
}

TEST(AgentProtocolTest, RefreshCarriesTheClockAndEntropyAndBoundsTheEntropy) {
  AgentRequest request;
  request.op = static_cast<uint32_t>(AgentOp::kRefresh);
  request.id = 3;
  request.realtime_ns = int64_t{1'765'000'000'123'456'789};
  request.entropy = std::string("\0\xff", 2) + std::string(kMaxRefreshEntropy - 2, 'e');
  auto decoded = decodeRequest(encodeRequest(request));
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  EXPECT_EQ(*decoded, request);

  // An older request has neither field: nothing to set.
  AgentRequest bare;
  bare.op = static_cast<uint32_t>(AgentOp::kRefresh);
  auto plain = decodeRequest(encodeRequest(bare));
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->realtime_ns.has_value());
  EXPECT_TRUE(plain->entropy.empty());

  std::string too_much;
  appendU32Field(too_much, AgentTag::kOp, static_cast<uint32_t>(AgentOp::kRefresh));
  appendField(too_much, AgentTag::kEntropy, std::string(kMaxRefreshEntropy + 1, 'e'));
  auto refused = decodeRequest(too_much);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("entropy"), std::string::npos) << refused.error().message();
  std::string short_clock;
  appendU32Field(short_clock, AgentTag::kOp, static_cast<uint32_t>(AgentOp::kRefresh));
  appendU32Field(short_clock, AgentTag::kRealtimeNs, 5);  // a u64 field
  EXPECT_FALSE(decodeRequest(short_clock).ok());
}

TEST(AgentProtocolTest, ResultsAndEntriesRoundTripAndUnknownStatusIsFailure) {
  AgentResult result;
  result.id = 3;
  result.status = AgentStatus::kFailed;
  result.error_number = 2;
  result.message = "stat /x: no such file or directory";
  result.info = FileInfo{"x", FileType::kSymlink, 0777, 4, 1600000000, 1, 2, "/etc"};
  auto decoded = decodeResult(encodeResult(result));
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(*decoded, result);

  std::string future;
  appendU32Field(future, AgentTag::kStatus, 42);
  auto unknown = decodeResult(future);
  ASSERT_TRUE(unknown.ok());
  EXPECT_EQ(unknown->status, AgentStatus::kFailed);
  EXPECT_FALSE(decodeResult("").ok());  // no status

  std::vector<FileInfo> entries = {FileInfo{"a", FileType::kRegular, 0644, 10, 1, 0, 0, ""},
                                   FileInfo{"d", FileType::kDirectory, 0755, 0, 2, 0, 0, ""}};
  auto listed = decodeEntries(encodeEntries(entries));
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(*listed, entries);
  std::string bad_type;
  appendField(bad_type, AgentTag::kEntry, std::string("\x31\x00\x01\x00\x00\x00\x07", 7));
  EXPECT_FALSE(decodeEntries(bad_type).ok());
}

TEST(AgentProtocolTest, WindowSizeIsFourBytes) {
  auto size = decodeWindowSize(encodeWindowSize({40, 120}));
  ASSERT_TRUE(size.ok());
  EXPECT_EQ(size->rows, 40);
  EXPECT_EQ(size->cols, 120);
  EXPECT_FALSE(decodeWindowSize("abc").ok());
}

}  // namespace
}  // namespace microvm::agent
