#include "image/registry_client.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/fs.h"
#include "base/hash.h"
#include "base/temp_dir.h"
#include "base/unique_fd.h"

namespace microvm {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

// A hostile registry on 127.0.0.1: real sockets, one connection at a time,
// each answered by the test's handler. Handlers must return soon after
// stopping() turns true; the destructor waits for them.
class HostileServer {
 public:
  // The request's head (request line and headers) and the connection.
  using Handler = std::function<void(HostileServer& server, const std::string& request, int fd)>;

  explicit HostileServer(Handler handler) : handler_(std::move(handler)) {
    listener_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    // SAFETY: sockaddr_in is the IPv4 form of sockaddr that bind and getsockname take.
    auto* generic = reinterpret_cast<sockaddr*>(&address);
    if (!listener_.valid() || ::bind(listener_.get(), generic, length) != 0 || ::listen(listener_.get(), 8) != 0 ||
        ::getsockname(listener_.get(), generic, &length) != 0) {
      ADD_FAILURE() << "listen on 127.0.0.1: " << std::strerror(errno);
      return;
    }
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~HostileServer() {
    stopping_ = true;
    if (thread_.joinable()) thread_.join();
  }
  HostileServer(const HostileServer&) = delete;
  HostileServer& operator=(const HostileServer&) = delete;

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  bool stopping() const { return stopping_; }
  std::vector<std::string> requests() {
    std::lock_guard lock(mutex_);
    return requests_;
  }

  // Sends all of `data`; false once the client has gone.
  static bool send(int fd, std::string_view data) {
    while (!data.empty()) {
      ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
  }

  // Sleeps for `duration`, or less when the server is stopping or the
  // client on `fd` hangs up.
  void pause(int fd, milliseconds duration) const {
    auto until = steady_clock::now() + duration;
    while (!stopping_ && steady_clock::now() < until) {
      pollfd hangup{fd, POLLIN, 0};
      char byte;
      if (::poll(&hangup, 1, 10) > 0 && ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) <= 0) return;
    }
  }

 private:
  void serve() {
    while (!stopping_) {
      pollfd ready{listener_.get(), POLLIN, 0};
      if (::poll(&ready, 1, 50) <= 0) continue;
      UniqueFd connection(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!connection.valid()) continue;
      std::string request;
      char buffer[4096];
      auto give_up = steady_clock::now() + seconds(5);
      while (request.find("\r\n\r\n") == std::string::npos && request.size() < 65536 &&
             steady_clock::now() < give_up && !stopping_) {
        pollfd readable{connection.get(), POLLIN, 0};
        if (::poll(&readable, 1, 50) <= 0) continue;
        ssize_t n = ::recv(connection.get(), buffer, sizeof buffer, 0);
        if (n <= 0) break;
        request.append(buffer, static_cast<size_t>(n));
      }
      {
        std::lock_guard lock(mutex_);
        requests_.push_back(request);
      }
      handler_(*this, request, connection.get());
    }
  }

  Handler handler_;
  UniqueFd listener_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<std::string> requests_;
  std::thread thread_;
};

std::string statusLine(int code, const std::string& extra_headers, size_t content_length) {
  return "HTTP/1.1 " + std::to_string(code) + " X\r\nContent-Length: " + std::to_string(content_length) +
         "\r\nConnection: close\r\n" + extra_headers + "\r\n";
}

std::string digestOf(const std::string& content) { return "sha256:" + sha256Hex(content); }

double secondsSince(steady_clock::time_point start) {
  return std::chrono::duration<double>(steady_clock::now() - start).count();
}

struct Scratch {
  TempDir dir = std::move(*TempDir::create("microvm-registry-test"));
  fs::path blob() const { return dir.path() / "blob"; }
  bool empty() const { return fs::is_empty(dir.path()); }
};

TEST(RegistryHosts, HostOfParsesRegistryNamesAndUrls) {
  EXPECT_EQ(hostOf("127.0.0.1:5000"), "127.0.0.1");
  EXPECT_EQ(hostOf("Registry.Example.COM"), "registry.example.com");
  EXPECT_EQ(hostOf("http://user:pw@[::1]:80/token?x=1"), "::1");
  EXPECT_EQ(hostOf("https://127.0.0.1@evil.example/token"), "evil.example");
  EXPECT_EQ(hostOf("127.evil.com:5000"), "127.evil.com");
  EXPECT_EQ(hostOf("http://"), "");
}

TEST(RegistryHosts, OnlyAddressLiteralsAndLocalhostAreLoopback) {
  for (const char* host : {"localhost", "127.0.0.1", "127.255.255.254", "127.1.2.3", "::1"}) {
    EXPECT_TRUE(isLoopbackHost(host)) << host;
  }
  for (const char* host : {"127.evil.com", "127.0.0.1.evil.com", "evil.127.0.0.1", "128.0.0.1", "10.0.0.1",
                           "localhost.evil.com", "::ffff:127.0.0.1", "::2", "", "0"}) {
    EXPECT_FALSE(isLoopbackHost(host)) << host;
  }
}

TEST(RegistryHosts, A127LookalikeRegistryIsReachedOverHttps) {
  // Plain http is for loopback registries; a name that merely begins with
  // "127." is somebody's DNS name.
  EXPECT_EQ(RegistryClient("127.evil.com:5000", "app", {}).baseUrl(), "https://127.evil.com:5000/v2/app");
  EXPECT_EQ(RegistryClient("127.0.0.1:5000", "app", {}).baseUrl(), "http://127.0.0.1:5000/v2/app");
  EXPECT_EQ(RegistryClient("localhost:5000", "app", {}).baseUrl(), "http://localhost:5000/v2/app");
  EXPECT_EQ(RegistryClient("[::1]:5000", "app", {}).baseUrl(), "http://[::1]:5000/v2/app");
  RegistryOptions insecure;
  insecure.insecure_registries = {"127.evil.com:5000"};
  EXPECT_EQ(RegistryClient("127.evil.com:5000", "app", insecure).baseUrl(), "http://127.evil.com:5000/v2/app");
}

TEST(RegistryHosts, CredentialsGoToPlainHttpRealmsOnlyWhereTheUserChoseHttp) {
  std::vector<std::string> none;
  std::vector<std::string> insecure = {"registry.example.com"};
  EXPECT_TRUE(mayCarryCredentials("https://auth.example.com/token", "registry.example.com", none));
  EXPECT_TRUE(mayCarryCredentials("https://127.evil.com/token", "127.0.0.1:5000", none));
  EXPECT_FALSE(mayCarryCredentials("http://auth.example.com/token", "registry.example.com", none));
  EXPECT_TRUE(mayCarryCredentials("http://auth.example.com/token", "registry.example.com", insecure));
  EXPECT_TRUE(mayCarryCredentials("http://127.0.0.1:5001/token", "127.0.0.1:5000", none));
  EXPECT_TRUE(mayCarryCredentials("http://[::1]:5001/token", "localhost:5000", none));
  EXPECT_FALSE(mayCarryCredentials("http://127.evil.com/token", "127.0.0.1:5000", none));
  EXPECT_FALSE(mayCarryCredentials("http://127.0.0.1@evil.example/token", "127.0.0.1:5000", none));
  EXPECT_FALSE(mayCarryCredentials("http://127.0.0.1:5001/token", "registry.example.com", none));
  EXPECT_FALSE(mayCarryCredentials("ftp://127.0.0.1/token", "127.0.0.1:5000", none));
  EXPECT_FALSE(mayCarryCredentials("not a url", "127.0.0.1:5000", none));
}

TEST(RegistryParsers, AuthChallenge) {
  auto bearer = parseAuthChallenge(
      R"(Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push")");
  EXPECT_EQ(bearer.scheme, "bearer");
  EXPECT_EQ(bearer.params["realm"], "https://auth.example.com/token");
  EXPECT_EQ(bearer.params["service"], "registry.example.com");
  EXPECT_EQ(bearer.params["scope"], "repository:a/b:pull,push");
  auto basic = parseAuthChallenge("Basic Realm=unquoted, Charset=\"UTF-8\"");
  EXPECT_EQ(basic.scheme, "basic");
  EXPECT_EQ(basic.params["realm"], "unquoted");
  EXPECT_EQ(basic.params["charset"], "UTF-8");
  EXPECT_TRUE(parseAuthChallenge("").params.empty());
  EXPECT_TRUE(parseAuthChallenge("Bearer realm=\"unterminated").params.empty());
}

TEST(RegistryParsers, TokenReply) {
  EXPECT_EQ(*parseTokenReply(R"({"token":"abc","expires_in":60})"), "abc");
  EXPECT_EQ(*parseTokenReply(R"({"token":"","access_token":"xyz"})"), "xyz");
  for (const char* bad : {"", "[]", "{\"token\":5}", "{\"access_token\":null}", "not json"}) {
    EXPECT_FALSE(parseTokenReply(bad)) << bad;
  }
  EXPECT_FALSE(parseTokenReply("{\"token\":\"" + std::string(2 << 20, 'a') + "\"}"));
}

TEST(RegistryParsers, Credentials) {
  std::string config = R"({"auths":{"127.0.0.1:5000":{"auth":"YWxpY2U6czNjcmV0"},
                                    "https://index.docker.io/v1/":{"auth":"Ym9iOnB3"}}})";
  auto alice = parseCredentials(config, "127.0.0.1:5000", "config.json");
  ASSERT_TRUE(alice);
  EXPECT_EQ(alice->first, "alice");
  EXPECT_EQ(alice->second, "s3cret");
  EXPECT_EQ(parseCredentials(config, "docker.io", "config.json")->first, "bob");
  EXPECT_TRUE(parseCredentials(config, "other:5000", "config.json")->first.empty());
  // Wrong shapes read as no credentials; a broken auth string is an error.
  for (const char* odd : {"", "[]", R"({"auths":[1]})", R"({"auths":{"r":{"auth":7}}})", R"({"auths":{"r":5}})"}) {
    auto none = parseCredentials(odd, "r", "config.json");
    ASSERT_TRUE(none) << odd;
    EXPECT_TRUE(none->first.empty()) << odd;
  }
  for (const char* broken : {"A===", "====", "abc"}) {
    std::string text = std::string(R"({"auths":{"r":{"auth":")") + broken + "\"}}}";
    EXPECT_FALSE(parseCredentials(text, "r", "config.json")) << broken;
  }
}

TEST(RegistryHostile, BlobLongerThanDeclaredIsCutOffAtItsSize) {
  constexpr size_t kServed = 64u << 20;
  std::string declared(1024, 'x');
  std::atomic<size_t> sent{0};
  HostileServer server([&](HostileServer&, const std::string&, int fd) {
    if (!HostileServer::send(fd, statusLine(200, "", kServed))) return;
    std::string chunk(64 << 10, 'x');
    while (sent < kServed && HostileServer::send(fd, chunk)) sent += chunk.size();
  });
  Scratch scratch;
  RegistryOptions options;
  options.max_attempts = 3;
  RegistryClient client(server.address(), "app", options);
  auto fetched = client.fetchBlob(digestOf(declared), declared.size(), scratch.blob());
  ASSERT_FALSE(fetched);
  EXPECT_NE(fetched.error().message().find("larger than 1024 bytes"), std::string::npos) << fetched.error().message();
  // The client hung up at the declared size: what the server got out is
  // what the socket buffers took, far from the 64 MiB it meant to send.
  EXPECT_LT(sent.load(), kServed / 2);
  EXPECT_EQ(server.requests().size(), 1u);  // not retried: it would be too long again
  EXPECT_TRUE(scratch.empty());             // no blob, no partial file
}

TEST(RegistryHostile, StalledResponseIsDroppedAfterTheStallTimeout) {
  HostileServer server([](HostileServer& self, const std::string&, int fd) {
    if (HostileServer::send(fd, statusLine(200, "", 1024) + "only ten b")) self.pause(fd, seconds(30));
  });
  Scratch scratch;
  RegistryOptions options;
  options.stall_timeout = seconds(1);
  options.max_attempts = 2;
  RegistryClient client(server.address(), "app", options);
  auto start = steady_clock::now();
  auto fetched = client.fetchBlob(digestOf(std::string(1024, 'x')), 1024, scratch.blob());
  ASSERT_FALSE(fetched);
  EXPECT_NE(fetched.error().message().find("stalled"), std::string::npos) << fetched.error().message();
  EXPECT_LT(secondsSince(start), 10.0);
  EXPECT_EQ(server.requests().size(), 2u);  // a stall is retried like a reset
  EXPECT_TRUE(scratch.empty());
}

TEST(RegistryHostile, TricklingResponseStopsAtThePullDeadline) {
  // One byte every 100 ms never stalls, and would take 29 hours.
  HostileServer server([](HostileServer& self, const std::string&, int fd) {
    if (!HostileServer::send(fd, statusLine(200, "", 10u << 20))) return;
    while (!self.stopping() && HostileServer::send(fd, "x")) self.pause(fd, milliseconds(100));
  });
  Scratch scratch;
  RegistryOptions options;
  options.stall_timeout = seconds(1);
  options.pull_timeout = seconds(2);
  RegistryClient client(server.address(), "app", options);
  auto start = steady_clock::now();
  auto fetched = client.fetchBlob(digestOf(std::string(10u << 20, 'x')), 10u << 20, scratch.blob());
  ASSERT_FALSE(fetched);
  EXPECT_EQ(fetched.error().code(), ErrorCode::kTimeout) << fetched.error().message();
  EXPECT_NE(fetched.error().message().find("longer than its limit of 2 s"), std::string::npos)
      << fetched.error().message();
  EXPECT_GT(secondsSince(start), 1.5);
  EXPECT_LT(secondsSince(start), 8.0);
  EXPECT_TRUE(scratch.empty());
}

TEST(RegistryHostile, RetriesEndAtThePullDeadline) {
  HostileServer server([](HostileServer&, const std::string&, int fd) {
    (void)HostileServer::send(fd, statusLine(503, "", 0));
  });
  RegistryOptions options;
  options.max_attempts = 100;  // 200 ms doubling: minutes of backoff without the deadline
  options.pull_timeout = seconds(2);
  RegistryClient client(server.address(), "app", options);
  auto start = steady_clock::now();
  auto manifest = client.fetchManifest("latest");
  ASSERT_FALSE(manifest);
  EXPECT_LT(secondsSince(start), 4.0);
  EXPECT_LT(server.requests().size(), 10u);
}

// A registry on loopback whose token realm is plain http to a host that is
// not a loopback name. The realm is the IPv4-mapped form of 127.0.0.1: by
// the rule it is not loopback, yet it reaches this test's server, so a client
// that sent the password would be seen doing it without traffic leaving the
// machine.
TEST(RegistryHostile, CredentialsAreNotSentToAPlainHttpRealmOffLoopback) {
  Scratch scratch;
  std::string realm;
  HostileServer server([&](HostileServer&, const std::string& request, int fd) {
    if (request.find("GET /token") == 0) {
      std::string reply = R"({"token":"granted"})";
      (void)HostileServer::send(fd, statusLine(200, "", reply.size()) + reply);
    } else if (request.find("Authorization: Bearer granted") != std::string::npos) {
      std::string manifest = "{}";
      (void)HostileServer::send(fd, statusLine(200, "Content-Type: application/json\r\n", manifest.size()) + manifest);
    } else {
      (void)HostileServer::send(fd, statusLine(401, "WWW-Authenticate: Bearer realm=\"" + realm + "\",service=\"x\"\r\n", 0));
    }
  });
  fs::path config = scratch.dir.path() / "config.json";
  ASSERT_TRUE(saveCredentials(config, server.address(), "alice", "s3cret"));
  RegistryOptions options;
  options.docker_config = config;

  realm = "http://[::ffff:127.0.0.1]:" + std::to_string(server.port()) + "/token";
  auto refused = RegistryClient(server.address(), "app", options).fetchManifest("latest");
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("refusing to send them without https"), std::string::npos)
      << refused.error().message();
  for (const auto& request : server.requests()) {
    EXPECT_EQ(request.find("GET /token"), std::string::npos) << request;
    EXPECT_EQ(request.find("Authorization: Basic"), std::string::npos) << request;
  }

  // The same registry with a loopback realm gets its token, as the e2e
  // tests' registries and most local setups need.
  realm = "http://127.0.0.1:" + std::to_string(server.port()) + "/token";
  auto granted = RegistryClient(server.address(), "app", options).fetchManifest("latest");
  ASSERT_TRUE(granted) << granted.error().message();
  bool sent_basic = false;
  for (const auto& request : server.requests()) {
    sent_basic = sent_basic || (request.find("GET /token") == 0 && request.find("Authorization: Basic") != std::string::npos);
  }
  EXPECT_TRUE(sent_basic);
}

}  // namespace
}  // namespace microvm
