#include <signal.h>

#include <gtest/gtest.h>

#include <fstream>

#include "base/temp_dir.h"
#include "microvm/options.h"

namespace microvm {
namespace {

std::string volumeError(std::string_view text) {
  auto volume = parseVolume(text);
  return volume ? "" : volume.error().message();
}

TEST(ParseVolume, HostAndGuestPaths) {
  auto volume = parseVolume("/srv/data:/data");
  ASSERT_TRUE(volume);
  EXPECT_EQ(volume->host, "/srv/data");
  EXPECT_EQ(volume->guest, "/data");
  EXPECT_FALSE(volume->readonly);
  EXPECT_FALSE(volume->uid);
  EXPECT_FALSE(volume->gid);
}

TEST(ParseVolume, Options) {
  auto volume = parseVolume("./rel:/data:ro,uid=1000,gid=0");
  ASSERT_TRUE(volume);
  EXPECT_EQ(volume->host, "./rel");
  EXPECT_TRUE(volume->readonly);
  EXPECT_EQ(volume->uid, 1000u);
  EXPECT_EQ(volume->gid, 0u);
  auto rw = parseVolume("/a:/b:rw");
  ASSERT_TRUE(rw);
  EXPECT_FALSE(rw->readonly);
  auto largest = parseVolume("/a:/b:uid=4294967294");
  ASSERT_TRUE(largest);
  EXPECT_EQ(largest->uid, 4294967294u);
}

TEST(ParseVolume, InvalidOnesNameTheTextAndTheForm) {
  EXPECT_EQ(volumeError("/a"),
            "invalid volume \"/a\" (want HOST:GUEST[:OPTIONS], OPTIONS from ro, rw, uid=N, gid=N)");
  for (const char* text : {"", ":/b", "/a:", "/a::ro", "/a:/b:", "/a:/b:ro,rw", "/a:/b:ro,", "/a:/b:rx",
                           "/a:/b:uid=", "/a:/b:uid=x", "/a:/b:uid=-1", "/a:/b:uid=4294967295",
                           "/a:/b:gid=12345678901", "/a:/b:uid=1,uid=2", "/a:/b:ro:rw"}) {
    EXPECT_EQ(volumeError(text), "invalid volume \"" + std::string(text) +
                                     "\" (want HOST:GUEST[:OPTIONS], OPTIONS from ro, rw, uid=N, gid=N)")
        << text;
  }
  EXPECT_EQ(parseVolume("/a").error().code(), ErrorCode::kInvalidArgument);
}

TEST(ParseVsockPort, ConnectAndListen) {
  auto connect = parseVsockPort("1024:/run/app.sock");
  ASSERT_TRUE(connect);
  EXPECT_EQ(connect->port, 1024u);
  EXPECT_EQ(connect->host_socket, "/run/app.sock");
  EXPECT_FALSE(connect->listen);
  auto listen = parseVsockPort("4294967295:/run/a:b.sock:listen");
  ASSERT_TRUE(listen);
  EXPECT_EQ(listen->port, 4294967295u);
  EXPECT_EQ(listen->host_socket, "/run/a:b.sock");
  EXPECT_TRUE(listen->listen);
  // ":listen" alone is the path, not the flag.
  auto named_listen = parseVsockPort("5::listen");
  ASSERT_TRUE(named_listen);
  EXPECT_EQ(named_listen->host_socket, ":listen");
  EXPECT_FALSE(named_listen->listen);
}

TEST(ParseVsockPort, Invalid) {
  for (const char* text : {"", "5", ":/a", "x:/a", "-1:/a", "5:", "4294967296:/a", "12345678901:/a"}) {
    auto mapping = parseVsockPort(text);
    ASSERT_FALSE(mapping) << text;
    EXPECT_EQ(mapping.error().message(),
              "invalid vsock mapping \"" + std::string(text) + "\" (want PORT:HOST_SOCKET_PATH[:listen])");
  }
}

TEST(ParseMemoryMib, UnitsAndDefault) {
  EXPECT_EQ(parseMemoryMib("512").value(), 512);
  EXPECT_EQ(parseMemoryMib("512m").value(), 512);
  EXPECT_EQ(parseMemoryMib("2G").value(), 2048);
  EXPECT_EQ(parseMemoryMib("1048576k").value(), 1024);
  EXPECT_EQ(parseMemoryMib("536870912b").value(), 512);
  EXPECT_EQ(parseMemoryMib("2000000g").value(), 1 << 30);  // capped at 1 GiB of MiB
}

TEST(ParseMemoryMib, Invalid) {
  for (const char* text : {"", "m", "12x", "1mb", "-1", "1 g", "1234567890123456"}) {
    auto memory = parseMemoryMib(text);
    ASSERT_FALSE(memory) << text;
    EXPECT_EQ(memory.error().message(),
              "invalid memory size \"" + std::string(text) + "\" (want MiB, or a number with b, k, m or g)");
  }
  EXPECT_EQ(parseMemoryMib("1k").error().message(), "memory size \"1k\" is not a whole number of MiB");
}

TEST(ApplySecurityOpt, EachKey) {
  RunOptions options;
  ASSERT_TRUE(applySecurityOpt("seccomp=unconfined", options));
  EXPECT_EQ(options.seccomp, "unconfined");
  ASSERT_TRUE(applySecurityOpt("no-new-privileges=false", options));
  EXPECT_FALSE(options.no_new_privs);
  ASSERT_TRUE(applySecurityOpt("no-new-privileges", options));
  EXPECT_TRUE(options.no_new_privs);
  ASSERT_TRUE(applySecurityOpt("sysctl-hardening=false", options));
  EXPECT_FALSE(options.sysctl_hardening);
  ASSERT_TRUE(applySecurityOpt("sysctl-hardening", options));  // a key alone means =true
  EXPECT_TRUE(options.sysctl_hardening);
  for (const char* text : {"apparmor=x", "no-new-privileges=yes", "sysctl-hardening=1", ""}) {
    auto applied = applySecurityOpt(text, options);
    ASSERT_FALSE(applied) << text;
    EXPECT_EQ(applied.error().message(), "unknown --security-opt \"" + std::string(text) + "\"");
  }
}

TEST(ApplyLogOpt, SizesAndCounts) {
  RunOptions options;
  ASSERT_TRUE(applyLogOpt("max-size=64k,max-file=3", options));
  EXPECT_EQ(options.log_max_size, 64u << 10);
  EXPECT_EQ(options.log_max_files, 3);
  ASSERT_TRUE(applyLogOpt("max-size=2048", options));
  EXPECT_EQ(options.log_max_size, 2048u);
  ASSERT_TRUE(applyLogOpt("max-size=1G", options));
  EXPECT_EQ(options.log_max_size, uint64_t{1} << 30);
}

TEST(ApplyLogOpt, Invalid) {
  RunOptions options;
  EXPECT_EQ(applyLogOpt("max-size=1q", options).error().message(),
            "invalid --log-opt max-size \"1q\" (want bytes, or a number with k, m or g)");
  EXPECT_EQ(applyLogOpt("max-size=", options).error().message(),
            "invalid --log-opt max-size \"\" (want bytes, or a number with k, m or g)");
  EXPECT_EQ(applyLogOpt("max-file=a", options).error().message(),
            "invalid --log-opt max-file \"a\" (want a number)");
  EXPECT_EQ(applyLogOpt("max-file=1234567", options).error().message(),
            "invalid --log-opt max-file \"1234567\" (want a number)");
  EXPECT_EQ(applyLogOpt("foo=1", options).error().message(),
            "unknown --log-opt \"foo=1\" (want max-size=SIZE or max-file=N)");
  // An empty item between commas is an unknown option, as before.
  EXPECT_EQ(applyLogOpt("max-file=2,,max-size=4k", options).error().message(),
            "unknown --log-opt \"\" (want max-size=SIZE or max-file=N)");
}

TEST(ParseEnvFile, LinesCommentsAndBlanks) {
  EXPECT_EQ(parseEnvFile("A=1\n# comment\n\n  B=two words  \r\nC\n   # indented comment\nD=x#y"),
            (std::vector<std::string>{"A=1", "B=two words", "C", "D=x#y"}));
  EXPECT_TRUE(parseEnvFile("").empty());
  EXPECT_TRUE(parseEnvFile("\n \r\n").empty());
}

TEST(ReadEnvFiles, FilesInTurnAndAMissingOne) {
  auto dir = TempDir::create("env-files");
  ASSERT_TRUE(dir);
  std::ofstream(dir->path() / "one") << "A=1\nB=2\n";
  std::ofstream(dir->path() / "two") << "# two\nA=3";
  auto env = readEnvFiles({(dir->path() / "one").string(), (dir->path() / "two").string()});
  ASSERT_TRUE(env);
  EXPECT_EQ(*env, (std::vector<std::string>{"A=1", "B=2", "A=3"}));
  std::string missing = (dir->path() / "missing").string();
  auto failed = readEnvFiles({missing});
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(failed.error().message(), "env file " + missing + ": cannot be read");
}

TEST(ParseSignal, NamesAndNumbers) {
  EXPECT_EQ(parseSignal("TERM").value(), SIGTERM);
  EXPECT_EQ(parseSignal("sigkill").value(), SIGKILL);
  EXPECT_EQ(parseSignal("Winch").value(), SIGWINCH);
  EXPECT_EQ(parseSignal("9").value(), 9);
  EXPECT_EQ(parseSignal("64").value(), 64);
  for (const char* text : {"", "FOO", "SIG", "0", "65", "100", "-9"}) {
    auto signal = parseSignal(text);
    ASSERT_FALSE(signal) << text;
    EXPECT_EQ(signal.error().message(), "invalid signal \"" + std::string(text) + "\"");
  }
}

}  // namespace
}  // namespace microvm
