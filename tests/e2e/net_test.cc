// Guest networking end to end: real VMs on the runner's libslirp stack, real
// TCP between the guest and servers/clients on the host's loopback.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

using std::chrono::seconds;
namespace fs = std::filesystem;

// A detached VM running busybox httpd on guest port 8080, serving `token`.
std::string startGuestServer(const std::vector<std::string>& flags, const std::string& token) {
  std::vector<std::string> args = {"run", "-d", "--rootfs", rootfs().string()};
  args.insert(args.end(), flags.begin(), flags.end());
  args.insert(args.end(), {"--", "/bin/sh", "-c",
                           "mkdir -p /www && echo " + token + " > /www/index.html && exec httpd -f -p 8080 -h /www"});
  auto result = microvm(args);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::string id = result.out.substr(0, result.out.find('\n'));
  return id;
}

TEST(NetTest, GuestFetchesFromAHostServerThroughTheGateway) {
  fs::path www = home() / "net-www";
  fs::create_directories(www);
  std::ofstream(www / "token.txt") << "host-says-hello\n";
  // Bulk data crosses the link in 64 KiB frames (the guest's MTU): it must
  // arrive intact, so the guest checks it against the host's checksum.
  std::string blob(size_t{4} << 20, '\0');
  uint32_t state = 12345;
  for (char& byte : blob) byte = static_cast<char>((state = state * 1664525 + 1013904223) >> 24);
  std::ofstream(www / "blob.bin", std::ios::binary) << blob;
  ASSERT_EQ(shell("sha256sum < '" + (www / "blob.bin").string() + "' | cut -d' ' -f1 > '" +
                  (www / "blob.sha256").string() + "'"),
            0);
  std::string blob_sum;
  std::ifstream(www / "blob.sha256") >> blob_sum;
  int port = freePort();
  Background server({"/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:" + std::to_string(port), "-h", www.string()},
                    home() / "net-httpd.log");
  // The sink hashes what the first connection that sends anything uploads
  // (waitForPort's probe sends nothing).
  int sink_port = freePort();
  fs::path uploaded = home() / "net-upload.sha256";
  Background sink({"python3", "-c",
                   "import hashlib, socket, sys\n"
                   "s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(1)\n"
                   "size = 0\n"
                   "while size == 0:\n"
                   "    c, _ = s.accept(); h = hashlib.sha256()\n"
                   "    while chunk := c.recv(1 << 16): h.update(chunk); size += len(chunk)\n"
                   "open(sys.argv[2], 'w').write(h.hexdigest())\n",
                   std::to_string(sink_port), uploaded.string()},
                  home() / "net-sink.log");
  ASSERT_TRUE(waitForPort(port, seconds(10)));
  ASSERT_TRUE(waitForPort(sink_port, seconds(10)));
  std::string base = "http://10.0.2.2:" + std::to_string(port);
  auto result = microvm(runArgs(
      {}, {"/bin/sh", "-c",
           "wget -q -O - " + base + "/token.txt; wget -q -O /tmp/blob " + base +
               "/blob.bin && sha256sum < /tmp/blob | cut -d' ' -f1; nc 10.0.2.2 " + std::to_string(sink_port) +
               " < /tmp/blob; cat /sys/class/net/eth0/mtu"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "host-says-hello\n" + blob_sum + "\n65520\n");
  std::string upload_sum;
  for (int i = 0; i < 100 && upload_sum.empty(); ++i) {
    std::ifstream(uploaded) >> upload_sum;
    if (upload_sum.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(upload_sum, blob_sum);
}

// One timed bulk transfer, seen from the host: accept to the peer's close.
struct Transfer {
  double seconds = 0;
  uint64_t bytes = 0;  // what the host received (uploads) or sent (downloads)
  int error = 0;       // errno of the read that ended it, 0 for EOF
};

// A listener on 127.0.0.1 with a kernel-picked port.
int listenLoopback(int& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  // SAFETY: sockaddr_in is the AF_INET sockaddr.
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(fd, 4) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::abort();
  }
  port = ntohs(address.sin_port);
  return fd;
}

// The host end of one transfer on `listener`: sends `bytes` then waits for
// the guest to close (`send`), or reads to EOF. Nothing if no connection
// came before `deadline`; a connection is bounded by a 60 s socket timeout.
std::optional<Transfer> serveTransfer(int listener, bool send, uint64_t bytes,
                                      std::chrono::steady_clock::time_point deadline) {
  std::string block(size_t{1} << 20, 'x');
  std::vector<char> buffer(size_t{1} << 20);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd pfd{listener, POLLIN, 0};
    if (::poll(&pfd, 1, 200) <= 0) continue;
    int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    timeval limit{60, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    auto start = std::chrono::steady_clock::now();
    Transfer transfer;
    while (send && transfer.bytes < bytes) {
      ssize_t wrote = ::send(fd, block.data(), std::min<uint64_t>(block.size(), bytes - transfer.bytes), MSG_NOSIGNAL);
      if (wrote <= 0) break;
      transfer.bytes += static_cast<uint64_t>(wrote);
    }
    if (send) ::shutdown(fd, SHUT_WR);
    ssize_t got;
    while ((got = ::read(fd, buffer.data(), buffer.size())) > 0) {
      if (!send) transfer.bytes += static_cast<uint64_t>(got);
    }
    if (got < 0) transfer.error = errno;
    transfer.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    ::close(fd);
    return transfer;
  }
  return std::nullopt;
}

// "min/median/max" of the samples, in seconds; sorts them.
std::string describeTimes(std::vector<double>& times) {
  std::sort(times.begin(), times.end());
  char text[96];
  std::snprintf(text, sizeof text, "%.3f/%.3f/%.3f s", times.front(), times[times.size() / 2], times.back());
  return text;
}

// A workload that exits right after close() leaves its last bytes in the
// guest's send queue, and behind a host peer that reads slowly also in the
// network stack. Init waits (at most a second) until the stack has
// acknowledged them before it reports the exit, and the runner lets the
// stack write them out (at most a second) before it closes the sockets, so
// the host gets them all, also from a --rm VM, whose QEMU ends as soon as
// the exit is reported. Without the waits, runs lost up to 2.5 MB of 8.
TEST(NetTest, AWorkloadsLastUploadArrivesWholeWhenItExitsRightAfterClosing) {
  constexpr int kRuns = 4;
  constexpr uint64_t kBytes = uint64_t{8} << 20;
  int port = 0;
  int listener = listenLoopback(port);
  for (int run = 0; run < kRuns; ++run) {
    // A reader slower than the guest's sender, so that the guest's send
    // queue is full when the workload exits.
    uint64_t received = 0;
    std::thread host([&] {
      pollfd pfd{listener, POLLIN, 0};
      if (::poll(&pfd, 1, 60'000) != 1) return;
      int fd = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) return;
      timeval limit{30, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
      std::vector<char> buffer(size_t{64} << 10);
      ssize_t got;
      while ((got = ::read(fd, buffer.data(), buffer.size())) > 0) {
        received += static_cast<uint64_t>(got);
        std::this_thread::sleep_for(std::chrono::milliseconds(4));
      }
      ::close(fd);
    });
    auto result = microvm(runArgs({}, {"tcp_stream", "push", "10.0.2.2", std::to_string(port), std::to_string(kBytes)}));
    host.join();
    EXPECT_EQ(result.exit_code, 0) << result.err;
    EXPECT_EQ(received, kBytes) << "run " << run;
  }
  ::close(listener);
}

// Bulk TCP both ways, repeated in one VM: no run may take more than three
// times the median of its direction. A segment lost between the stack and
// the guest costs a retransmit timeout (a second or more, then doubling),
// which shows up here as one run many times slower than the others.
TEST(NetTest, RepeatedBulkTransfersBothWaysNeverStall) {
  constexpr int kRuns = 20;
  constexpr uint64_t kBytes = uint64_t{64} << 20;
  int down_port = 0;
  int up_port = 0;
  int down_listener = listenLoopback(down_port);
  int up_listener = listenLoopback(up_port);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
  std::vector<Transfer> downloads;
  std::vector<Transfer> uploads;
  // One run at a time: the upload to EOF, then the download. The guest's
  // download waits for the host to have all of the upload, so the last
  // upload is whole before the workload exits and the VM powers off (data
  // still in the guest's send queue then is lost, and the host sees EOF).
  std::thread host([&] {
    for (int i = 0; i < kRuns; ++i) {
      auto upload = serveTransfer(up_listener, false, kBytes, deadline);
      if (!upload) return;
      uploads.push_back(*upload);
      auto download = serveTransfer(down_listener, true, kBytes, deadline);
      if (!download) return;
      downloads.push_back(*download);
    }
  });
  Cli cli(runArgs({}, {"/bin/sh", "-c",
                       "for i in $(seq " + std::to_string(kRuns) + "); do tcp_stream push 10.0.2.2 " +
                           std::to_string(up_port) + " " + std::to_string(kBytes) + " || exit 1; tcp_stream pull 10.0.2.2 " +
                           std::to_string(down_port) + " || exit 1; done; grep TcpExt: /proc/net/netstat"}));
  auto result = cli.finish(std::chrono::seconds(600));
  host.join();
  ::close(down_listener);
  ::close(up_listener);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  std::string counts;
  for (int i = 0; i < kRuns; ++i) counts += std::to_string(kBytes) + "\n";
  // Every download arrived whole, as the guest counted it.
  ASSERT_EQ(result.out.substr(0, counts.size()), counts) << result.out;
  // The guest's TCP counters (two lines: names, values). The guest reads as
  // fast as it can and its receive buffer holds many 64 KiB windows, so it
  // must never have advertised a zero window: with the default buffer one
  // unread segment closed it, and libslirp then waited for its persist
  // timer (5 s or more) before sending again.
  std::istringstream netstat(result.out.substr(counts.size()));
  std::string names_line;
  std::string values_line;
  std::getline(netstat, names_line);
  std::getline(netstat, values_line);
  std::istringstream names(names_line);
  std::istringstream values(values_line);
  std::string counter_name;
  std::string counter_value;
  std::optional<long> zero_windows;
  while (names >> counter_name && values >> counter_value) {
    if (counter_name == "TCPToZeroWindowAdv") zero_windows = std::stol(counter_value);
  }
  ASSERT_TRUE(zero_windows.has_value()) << result.out;
  EXPECT_EQ(*zero_windows, 0) << "the guest advertised a zero window";
  ASSERT_EQ(downloads.size(), size_t{kRuns});
  ASSERT_EQ(uploads.size(), size_t{kRuns});
  for (const auto& [name, transfers] : {std::pair{"host->guest", &downloads}, std::pair{"guest->host", &uploads}}) {
    std::vector<double> times;
    for (const auto& transfer : *transfers) {
      EXPECT_EQ(transfer.bytes, kBytes) << name << ", ended by " << (transfer.error ? std::strerror(transfer.error) : "EOF");
      times.push_back(transfer.seconds);
    }
    std::string summary = describeTimes(times);
    std::cout << name << " " << kRuns << " x 64 MiB, min/median/max " << summary << "\n";
    RecordProperty(std::string(name) == "host->guest" ? "host_to_guest" : "guest_to_host", summary);
    EXPECT_LE(times.back(), 3 * times[times.size() / 2]) << name << " stalled: min/median/max " << summary;
  }
}

TEST(NetTest, GuestAddressingResolvConfHostsAndHostname) {
  auto result = microvm(runArgs({"-h", "web1", "--add-host", "db.test:10.9.8.7"},
                                {"/bin/sh", "-c",
                                 "hostname; cat /etc/resolv.conf; grep -c web1 /etc/hosts; grep db.test /etc/hosts; "
                                 "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip -6 addr show eth0 | grep -o 'inet6 fd00::15/64'; "
                                 "ip route | grep default; ip -6 route | grep -c 'default via fd00::2'"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out,
            "web1\nnameserver 10.0.2.3\n1\n10.9.8.7\tdb.test\ninet 10.0.2.15/24\ninet6 fd00::15/64\n"
            "default via 10.0.2.2 dev eth0 \n1\n");
}

// An image that has /etc/hosts and /etc/resolv.conf gets ours bind-mounted
// over them (as Docker does); its own files stay as they were on its disk.
TEST(NetTest, EtcFilesOfTheImageAreCoveredNotRewritten) {
  fs::path image = home() / "rootfs-with-etc";
  if (!fs::exists(image)) {
    fs::copy(rootfs(), image, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    std::ofstream(image / "etc" / "hosts") << "10.1.1.1 from-the-image\n";
    std::ofstream(image / "etc" / "resolv.conf") << "nameserver 10.1.1.53\n";
  }
  auto result = microvm({"run", "--rm", "--privileged", "--add-host", "db.test:10.9.8.7", "--rootfs", image.string(),
                         "--", "/bin/sh", "-c",
                         "grep -c db.test /etc/hosts; cat /etc/resolv.conf; grep -c ' /etc/hosts ' /proc/mounts; "
                         "umount /etc/hosts /etc/resolv.conf && cat /etc/hosts /etc/resolv.conf"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "1\nnameserver 10.0.2.3\n1\n10.1.1.1 from-the-image\nnameserver 10.1.1.53\n");

  // `cp` onto a covered file rewrites it in place (it cannot be renamed over).
  auto started = microvm({"run", "-d", "--rootfs", image.string(), "--", "sleep", "600"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  std::string id = started.out.substr(0, started.out.find('\n'));
  fs::path hosts = home() / "hosts-to-copy";
  std::ofstream(hosts) << "10.2.2.2 copied-in\n";
  auto copied = microvm({"cp", hosts.string(), id + ":/etc/hosts"});
  EXPECT_EQ(copied.exit_code, 0) << copied.err;
  auto shown = microvm({"exec", id, "cat", "/etc/hosts"});
  EXPECT_EQ(shown.out, "10.2.2.2 copied-in\n") << shown.err;
  microvm({"rm", "-f", id});
}

TEST(NetTest, NetworkNoneHasOnlyLoopback) {
  auto result = microvm(runArgs({"--network", "none"},
                                // sit0 is the kernel's IPv6-in-IPv4 tunnel device, always present and down.
                                {"/bin/sh", "-c", "ls /sys/class/net | grep -v '^sit0$'; ping -c1 -W1 127.0.0.1 >/dev/null && echo lo-up"}));
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "lo\nlo-up\n");
}

TEST(NetTest, PublishedPortReachesTheGuestAndPortAddRmChangeItAtRuntime) {
  int host_port = freePort();
  std::string id = startGuestServer({"-p", std::to_string(host_port) + ":8080"}, "guest-token-1");
  ASSERT_FALSE(id.empty());
  EXPECT_TRUE(eventuallyServes(host_port, "guest-token-1", seconds(90)));

  auto listed = microvm({"port", id});
  EXPECT_EQ(listed.exit_code, 0) << listed.err;
  EXPECT_EQ(listed.out, "8080/tcp -> 127.0.0.1:" + std::to_string(host_port) + "\n");
  auto inspected = microvm({"inspect", id});
  ASSERT_EQ(inspected.exit_code, 0) << inspected.err;
  auto record = nlohmann::json::parse(inspected.out)[0];
  EXPECT_EQ(record["network"]["ports"][0], "8080/tcp -> 127.0.0.1:" + std::to_string(host_port));
  auto ps = microvm({"ps"});
  EXPECT_NE(ps.out.find("127.0.0.1:" + std::to_string(host_port) + "->8080/tcp"), std::string::npos) << ps.out;

  // A second forward at runtime, then its removal: refused afterwards.
  int extra_port = freePort();
  std::string extra = "127.0.0.1:" + std::to_string(extra_port) + ":8080";
  auto added = microvm({"port", id, "add", extra});
  EXPECT_EQ(added.exit_code, 0) << added.err;
  EXPECT_EQ(added.out, "8080/tcp -> 127.0.0.1:" + std::to_string(extra_port) + "\n");
  EXPECT_NE(httpGet(extra_port).find("guest-token-1"), std::string::npos);
  auto removed = microvm({"port", id, "rm", extra});
  EXPECT_EQ(removed.exit_code, 0) << removed.err;
  EXPECT_EQ(httpGet(extra_port, "/", seconds(3)), "");
  EXPECT_NE(httpGet(host_port).find("guest-token-1"), std::string::npos);  // the first one is untouched
  listed = microvm({"port", id});
  EXPECT_EQ(listed.out, "8080/tcp -> 127.0.0.1:" + std::to_string(host_port) + "\n");

  // A guest port alone picks a free host port.
  auto picked = microvm({"port", id, "add", "8080"});
  EXPECT_EQ(picked.exit_code, 0) << picked.err;
  size_t colon = picked.out.rfind(':');
  ASSERT_NE(colon, std::string::npos) << picked.out;
  int picked_port = std::stoi(picked.out.substr(colon + 1));
  EXPECT_NE(httpGet(picked_port).find("guest-token-1"), std::string::npos);

  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
  EXPECT_EQ(httpGet(host_port, "/", seconds(3)), "");  // the VM is gone, and so is its forward
}

TEST(NetTest, Ipv6HostAddressForwardsToTheGuestsIpv6Address) {
  int host_port = freePort();
  std::string id = startGuestServer({"-p", "[::1]:" + std::to_string(host_port) + ":8080"}, "guest-token-v6");
  ASSERT_FALSE(id.empty());
  auto deadline = std::chrono::steady_clock::now() + seconds(90);
  std::string page;
  while (std::chrono::steady_clock::now() < deadline && page.find("guest-token-v6") == std::string::npos) {
    page = httpGet(host_port, "/", seconds(5), /*ipv6=*/true);
    if (page.find("guest-token-v6") == std::string::npos) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  EXPECT_NE(page.find("guest-token-v6"), std::string::npos);
  auto listed = microvm({"port", id});
  EXPECT_EQ(listed.out, "8080/tcp -> [::1]:" + std::to_string(host_port) + "\n");
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
}

// The README's example, with an image: `run -d -p 8080:80 IMAGE httpd -f -p 80`
// serves a page to a host client (any free host port stands for 8080).
TEST(NetTest, ReadmeHttpdImageServesThroughPublishedPort) {
  fs::path layout = home() / "net-oci";
  ASSERT_EQ(shell("python3 " MICROVM_SOURCE_DIR "/tests/e2e/oci_images.py " + layout.string() + " " +
                  rootfs().string() + " >/dev/null"),
            0);
  int host_port = freePort();
  auto started = microvm({"run", "-d", "-p", std::to_string(host_port) + ":80", "oci:" + layout.string() + ":busybox-plain",
                          "httpd", "-f", "-p", "80"});
  ASSERT_EQ(started.exit_code, 0) << started.err;
  std::string id = started.out.substr(0, started.out.find('\n'));
  auto deadline = std::chrono::steady_clock::now() + seconds(90);
  std::string page;
  while (std::chrono::steady_clock::now() < deadline && page.find("root:x:0:0") == std::string::npos) {
    page = httpGet(host_port, "/etc/passwd", seconds(5));
    if (page.find("root:x:0:0") == std::string::npos) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  EXPECT_NE(page.find("200 OK"), std::string::npos) << page;
  EXPECT_NE(page.find("root:x:0:0"), std::string::npos) << page;
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);
}

TEST(NetTest, BusyHostPortFailsBeforeBootNamingThePort) {
  int port = freePort();
  int busy = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // SAFETY: sockaddr_in is the AF_INET sockaddr.
  ASSERT_EQ(::bind(busy, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
  ASSERT_EQ(::listen(busy, 1), 0);
  auto before = listDir(home() / "vms");
  auto result = microvm(runArgs({"-p", std::to_string(port) + ":80"}, {"/bin/true"}));
  ::close(busy);
  EXPECT_EQ(result.exit_code, 125);
  EXPECT_NE(result.err.find(std::to_string(port)), std::string::npos) << result.err;
  EXPECT_NE(result.err.find("in use"), std::string::npos) << result.err;
  EXPECT_EQ(listDir(home() / "vms"), before);  // nothing was created, nothing booted
}

}  // namespace
}  // namespace microvm::e2e
