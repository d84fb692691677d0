#include "daemon/requests.h"

#include <gtest/gtest.h>

namespace microvm::daemon {
namespace {

TEST(DaemonRequests, CreateTakesEveryFieldIntoRunOptions) {
  auto request = parseCreateRequest(
      R"({"rootfs": "/srv/rfs", "cmd": "echo hi", "env": {"A": "1"}, "cwd": "/tmp", "user": "1000",
          "cpus": 2, "memory_mib": 256, "ports": [8080, "127.0.0.1:9000:80/tcp"],
          "volumes": [{"host": "/srv", "guest": "/data", "readonly": true}],
          "egress": {"allow": ["example.com:443"], "deny_all": true}, "labels": {"team": "a"},
          "ttl_seconds": 60, "name": "n"})");
  ASSERT_TRUE(request) << request.error().message();
  EXPECT_EQ(request->run.rootfs, "/srv/rfs");
  EXPECT_EQ(request->run.command, (std::vector<std::string>{"/bin/sh", "-c", "echo hi"}));
  EXPECT_EQ(request->run.env, (std::vector<std::string>{"A=1"}));
  EXPECT_EQ(request->run.cpus, 2);
  EXPECT_EQ(request->run.memory_mib, 256);
  EXPECT_EQ(request->run.publish, (std::vector<std::string>{"8080", "127.0.0.1:9000:80/tcp"}));
  ASSERT_EQ(request->run.volumes.size(), 1u);
  EXPECT_TRUE(request->run.volumes[0].readonly);
  EXPECT_TRUE(request->run.egress_deny_all);
  EXPECT_EQ(request->run.stdout_fd, -1);
  EXPECT_EQ(request->labels.at("team"), "a");
  EXPECT_EQ(request->ttl_seconds, 60);
  EXPECT_EQ(request->source, "/srv/rfs");
}

TEST(DaemonRequests, ErrorsNameTheFieldAndTheFix) {
  EXPECT_NE(parseCreateRequest("{").error().message().find("not valid JSON"), std::string::npos);
  EXPECT_NE(parseCreateRequest("[]").error().message().find("JSON object"), std::string::npos);
  EXPECT_NE(parseCreateRequest(R"({"image": "a", "rootfs": "/b"})").error().message().find("exactly one"),
            std::string::npos);
  EXPECT_NE(parseCreateRequest(R"({"image": "a", "cpu": 1})").error().message().find("unknown field \"cpu\""),
            std::string::npos);
  EXPECT_NE(parseCreateRequest(R"({"rootfs": "rel"})").error().message().find("absolute"), std::string::npos);
  EXPECT_NE(parseCreateRequest(R"({"image": "a", "cpus": 0})").error().message().find("between 1 and 64"),
            std::string::npos);
  EXPECT_NE(parseCreateRequest(R"({"image": "a", "ttl_seconds": -1})").error().message().find("ttl_seconds"),
            std::string::npos);
  EXPECT_NE(parseCreateRequest(R"({"image": "a", "labels": {"bad key": "v"}})").error().message().find("labels"),
            std::string::npos);
  EXPECT_NE(parseExecRequest(R"({"cmd": []})").error().message().find("cmd"), std::string::npos);
  EXPECT_NE(parseExecRequest(R"({"cmd": ["a"], "stdin": "!!"})").error().message().find("base64"), std::string::npos);
  EXPECT_NE(parseExecRequest(R"({"cmd": ["a"], "tty": true})").error().message().find("unknown field"),
            std::string::npos);
}

TEST(DaemonRequests, ExecDefaultsAndStreamingForm) {
  auto plain = parseExecRequest(R"({"cmd": ["cat"], "stdin": "aGk="})");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->stdin_data, "hi");
  EXPECT_EQ(plain->timeout_seconds, 60);
  auto streaming = parseExecRequest(R"({"cmd": ["sh"], "tty": true, "rows": 30, "cols": 100})", true);
  ASSERT_TRUE(streaming) << streaming.error().message();
  EXPECT_TRUE(streaming->tty);
  EXPECT_EQ(streaming->timeout_seconds, 0);
}

TEST(DaemonRequests, Base64RoundTripsAndRefusesGarbage) {
  std::vector<std::string> samples{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)};
  for (const std::string& data : samples) {
    auto decoded = base64Decode(base64Encode(data));
    ASSERT_TRUE(decoded);
    EXPECT_EQ(*decoded, data);
  }
  EXPECT_EQ(base64Encode("hello"), "aGVsbG8=");
  EXPECT_FALSE(base64Decode("abc"));
  EXPECT_FALSE(base64Decode("a=bc"));
  EXPECT_FALSE(base64Decode("ab*c"));
}

TEST(DaemonRequests, Utf8Check) {
  EXPECT_TRUE(isUtf8("plain"));
  EXPECT_TRUE(isUtf8("\xc3\xa9\xf0\x9f\x98\x80"));
  EXPECT_FALSE(isUtf8("\xff"));
  EXPECT_FALSE(isUtf8("\xc3"));          // cut short
  EXPECT_FALSE(isUtf8("\xc0\xaf"));      // overlong
  EXPECT_FALSE(isUtf8("\xed\xa0\x80"));  // a surrogate
}

TEST(DaemonRequests, QueriesAndLabelFilters) {
  auto paths = queryValues("path=%2Ftmp%2Fa+b&x=1&path=/c", "path");
  ASSERT_TRUE(paths);
  EXPECT_EQ(*paths, (std::vector<std::string>{"/tmp/a b", "/c"}));
  EXPECT_FALSE(queryValues("path=%zz", "path"));
  EXPECT_FALSE(queryValues("path=%2", "path"));
  auto filter = parseLabelFilter("team=a=b");
  ASSERT_TRUE(filter);
  EXPECT_EQ(filter->key, "team");
  EXPECT_EQ(*filter->value, "a=b");
  EXPECT_FALSE(parseLabelFilter("=x"));
  EXPECT_FALSE(parseLabelFilter("bad key"));
}

}  // namespace
}  // namespace microvm::daemon
