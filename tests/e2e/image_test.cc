// Images end to end: a real registry (Debian's docker-registry) on loopback,
// images built by tests/e2e/oci_images.py and pushed with skopeo, pulled and
// booted by the real CLI; and a hostile one (tests/e2e/hostile_registry.py)
// that the real CLI must survive.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "harness.h"

namespace microvm::e2e {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string readText(const fs::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

// Two registries for the whole suite: an open one and one behind htpasswd.
class Registries : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new fs::path(home().parent_path() / "registries");
    fs::create_directories(*root_);
    layout_ = new fs::path(*root_ / "layout");
    ASSERT_EQ(shell("python3 " MICROVM_SOURCE_DIR "/tests/e2e/oci_images.py " + layout_->string() + " " +
                    rootfs().string()),
              0);
    open_port_ = freePort();
    open_ = start("open", open_port_, "");
    ASSERT_EQ(shell("htpasswd -Bbn alice s3cret > " + (*root_ / "htpasswd").string()), 0);
    auth_port_ = freePort();
    auth_ = start("auth", auth_port_, (*root_ / "htpasswd").string());
    for (const char* tag : {"busybox", "whiteout", "evil-traversal", "evil-symlink", "evil-hardlink", "corrupt"}) {
      std::string source = std::string(tag) == "corrupt" ? "busybox" : tag;
      ASSERT_EQ(push(source, open_port_, std::string("test/") + tag, ""), 0) << tag;
    }
    ASSERT_EQ(push("multi", open_port_, "test/multi", ""), 0);
    ASSERT_EQ(push("busybox", auth_port_, "private/busybox", "alice:s3cret"), 0);
  }

  static void TearDownTestSuite() {
    delete open_;
    delete auth_;
    fs::remove_all(*root_);
  }

  static Background* start(const std::string& name, int port, const std::string& htpasswd) {
    fs::path dir = *root_ / name;
    fs::create_directories(dir);
    std::ofstream config(dir / "config.yml");
    config << "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: " << (dir / "data").string()
           << "\nhttp:\n  addr: 127.0.0.1:" << port << "\n";
    if (!htpasswd.empty()) config << "auth:\n  htpasswd:\n    realm: microvm-test\n    path: " << htpasswd << "\n";
    config.close();
    auto* registry = new Background({"docker-registry", "serve", (dir / "config.yml").string()}, dir / "log");
    EXPECT_TRUE(waitForPort(port, std::chrono::seconds(20))) << readText(dir / "log");
    return registry;
  }

  static int push(const std::string& tag, int port, const std::string& repository, const std::string& creds) {
    return shell("skopeo copy -q --all --dest-tls-verify=false " + (creds.empty() ? "" : "--dest-creds " + creds + " ") +
                 "oci:" + layout_->string() + ":" + tag + " docker://127.0.0.1:" + std::to_string(port) + "/" +
                 repository + ":latest");
  }

  static std::string image(const std::string& repository) {
    return "127.0.0.1:" + std::to_string(open_port_) + "/" + repository;
  }

  static fs::path* root_;
  static fs::path* layout_;
  static Background* open_;
  static Background* auth_;
  static int open_port_;
  static int auth_port_;
};

fs::path* Registries::root_ = nullptr;
fs::path* Registries::layout_ = nullptr;
Background* Registries::open_ = nullptr;
Background* Registries::auth_ = nullptr;
int Registries::open_port_ = 0;
int Registries::auth_port_ = 0;

TEST_F(Registries, RunPullsAndHonorsEntrypointCmdEnvWorkdirUser) {
  auto result = microvm({"run", "--rm", image("test/busybox")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "hello from image in /srv as app\n");

  auto overridden = microvm({"run", "--rm", "-e", "GREETING=cli", "-w", "/tmp", "-u", "root", image("test/busybox"),
                             "echo $GREETING $(pwd) $(id -un)"});
  EXPECT_EQ(overridden.exit_code, 0) << overridden.err;
  EXPECT_EQ(overridden.out, "cli /tmp root\n");

  auto entrypoint = microvm({"run", "--rm", "--entrypoint", "/bin/echo", image("test/busybox"), "a", "b"});
  EXPECT_EQ(entrypoint.out, "a b\n");
}

TEST_F(Registries, WhiteoutsDeleteAndOpaqueDirectoriesHide) {
  auto result = microvm({"run", "--rm", image("test/whiteout")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "ls: /etc/deleted-me: No such file or directory\nnew-c\nnew\n");
}

TEST_F(Registries, MultiArchIndexPicksThePlatform) {
  auto result = microvm({"run", "--rm", image("test/multi")});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "hello from image in /srv as app\n");
  auto missing = microvm({"pull", "--platform", "linux/s390x", image("test/multi")});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("linux/arm64"), std::string::npos) << missing.err;  // says what there is
}

TEST_F(Registries, HostileLayersAreRefusedAndWriteNothingOutside) {
  std::string hostname_before = readText("/etc/hostname");
  for (const char* evil : {"test/evil-traversal", "test/evil-symlink", "test/evil-hardlink"}) {
    auto result = microvm({"pull", image(evil)});
    EXPECT_NE(result.exit_code, 0) << evil;
    EXPECT_NE(result.err.find("layer"), std::string::npos) << evil << ": " << result.err;
  }
  EXPECT_FALSE(fs::exists("/tmp/microvm-evil-traversal"));
  EXPECT_FALSE(fs::exists("/tmp/microvm-evil-symlink"));
  EXPECT_EQ(readText("/etc/hostname"), hostname_before);
  EXPECT_TRUE(listDir(home() / "images" / "tmp").empty());
  auto images = microvm({"images", "-q"});
  EXPECT_EQ(images.out.find("evil"), std::string::npos) << images.out;
}

TEST_F(Registries, CorruptBlobIsRejectedByDigest) {
  // Flip the content of the layer blob in the registry's own storage.
  auto manifest = json::parse(readText(*layout_ / "blobs" / "sha256" /
                                       json::parse(readText(*layout_ / "index.json"))["manifests"][0]["digest"]
                                           .get<std::string>()
                                           .substr(7)));
  std::string layer = manifest["layers"][0]["digest"].get<std::string>().substr(7);
  fs::path data = *root_ / "open" / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / layer.substr(0, 2) /
                  layer / "data";
  ASSERT_TRUE(fs::exists(data));
  // The corrupt repository shares the blob with test/busybox: pull that one
  // first so the good copy is cached, then check a fresh store refuses it.
  std::string original = readText(data);
  std::string corrupted = original;
  corrupted[corrupted.size() / 2] ^= 0x55;
  std::ofstream(data, std::ios::binary) << corrupted;
  auto result = microvm({"pull", image("test/corrupt")}, {"MICROVM_HOME=" + (home().parent_path() / "fresh").string()});
  std::ofstream(data, std::ios::binary) << original;
  EXPECT_NE(result.exit_code, 0);
  EXPECT_NE(result.err.find("digest"), std::string::npos) << result.err;
}

TEST_F(Registries, AuthenticationIsRequiredAndLoginWorks) {
  std::string private_image = "127.0.0.1:" + std::to_string(auth_port_) + "/private/busybox";
  std::string docker_config = "DOCKER_CONFIG=" + (home().parent_path() / "docker").string();
  auto denied = microvm({"pull", private_image}, {docker_config});
  EXPECT_NE(denied.exit_code, 0);
  EXPECT_NE(denied.err.find("microvm login"), std::string::npos) << denied.err;

  auto wrong = microvm({"login", "-u", "alice", "127.0.0.1:" + std::to_string(auth_port_)},
                       {docker_config, "MICROVM_PASSWORD=wrong"});
  EXPECT_EQ(wrong.exit_code, 0);  // stored; checked on use, as Docker's credential store is
  auto still_denied = microvm({"pull", private_image}, {docker_config});
  EXPECT_NE(still_denied.exit_code, 0);

  auto login = microvm({"login", "-u", "alice", "127.0.0.1:" + std::to_string(auth_port_)},
                       {docker_config, "MICROVM_PASSWORD=s3cret"});
  EXPECT_EQ(login.exit_code, 0) << login.err;
  auto run = microvm({"run", "--rm", private_image}, {docker_config});
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "hello from image in /srv as app\n");
}

TEST_F(Registries, LocalOciLayoutAndDockerArchiveRun) {
  auto result = microvm({"run", "--rm", "oci:" + layout_->string() + ":busybox", "echo from $(pwd)"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "from /srv\n");

  fs::path archive = *root_ / "busybox.tar";
  ASSERT_EQ(shell("skopeo copy -q oci:" + layout_->string() + ":whiteout docker-archive:" + archive.string() +
                  ":test/whiteout:latest"),
            0);
  auto saved = microvm({"run", "--rm", "docker-archive:" + archive.string()});
  EXPECT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_EQ(saved.out, "ls: /etc/deleted-me: No such file or directory\nnew-c\nnew\n");
  EXPECT_TRUE(listDir(home() / "images" / "tmp").empty());
}

TEST_F(Registries, ImagesListRmiAndPrune) {
  ASSERT_EQ(microvm({"pull", image("test/busybox")}).exit_code, 0);
  auto listed = json::parse(microvm({"images", "--format", "json"}).out);
  bool found = false;
  for (const auto& entry : listed) {
    if (entry["reference"] == image("test/busybox") + ":latest") {
      found = true;
      EXPECT_EQ(entry["working_dir"], "/srv");
      EXPECT_EQ(entry["exposed_ports"], json::array({"80/tcp"}));
      EXPECT_GT(entry["size"].get<uint64_t>(), 500000u);
    }
  }
  EXPECT_TRUE(found) << listed.dump();

  std::string id = microvm({"run", "-d", image("test/busybox"), "sleep 600"}).out.substr(0, 64);
  auto in_use = microvm({"rmi", image("test/busybox")});
  EXPECT_EQ(in_use.exit_code, 1);
  EXPECT_NE(in_use.err.find("used by VM"), std::string::npos) << in_use.err;
  EXPECT_EQ(microvm({"rm", "-f", id}).exit_code, 0);

  for (const char* repository : {"test/busybox", "test/multi", "test/whiteout", "test/corrupt"}) {
    microvm({"rmi", image(repository)});
  }
  auto pruned = microvm({"image", "prune"});
  EXPECT_EQ(pruned.exit_code, 0) << pruned.err;
  EXPECT_EQ(microvm({"images", "-q"}).out.find(image("test/busybox")), std::string::npos);
}

TEST_F(Registries, ConcurrentPullsDownloadOnce) {
  std::string fresh = "MICROVM_HOME=" + (home().parent_path() / "concurrent").string();
  fs::path log = *root_ / "open" / "log";
  size_t before = readText(log).size();
  Cli first({"pull", image("test/whiteout")}, {fresh});
  Cli second({"pull", image("test/whiteout")}, {fresh});
  EXPECT_EQ(first.finish().exit_code, 0);
  EXPECT_EQ(second.finish().exit_code, 0);
  // Each distinct blob was fetched by one GET only.
  std::string requests = readText(log).substr(before);
  std::map<std::string, int> gets;
  std::istringstream lines(requests);
  for (std::string line; std::getline(lines, line);) {
    size_t at = line.find("\"GET /v2/test/whiteout/blobs/");
    if (at != std::string::npos && line.find("\" 200 ") != std::string::npos) {
      ++gets[line.substr(at, line.find(' ', at + 5) - at)];
    }
  }
  EXPECT_FALSE(gets.empty()) << requests;
  for (const auto& [blob, count] : gets) EXPECT_EQ(count, 1) << blob;
}

TEST_F(Registries, ImagePruneNeverDeletesWhatAConcurrentPullIsMaking) {
  // Each round: a pull into an empty store while `image prune` runs again
  // and again. Until its ref is written, nothing but the store's lock tells
  // prune that the blobs and the build are the pull's. A quick pull may end
  // before a prune starts, so rounds go on (at most 20) until prunes have
  // run during pulls ten times.
  int prunes = 0;
  std::string fresh;
  for (int round = 0; round < 20 && prunes < 10; ++round) {
    fresh = "MICROVM_HOME=" + (home().parent_path() / ("prune-race-" + std::to_string(round))).string();
    Cli pull({"pull", "oci:" + layout_->string() + ":busybox"}, {fresh});
    auto exited = [&] {
      siginfo_t info{};
      return ::waitid(P_PID, static_cast<id_t>(pull.pid()), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
             info.si_pid == pull.pid();
    };
    for (int i = 0; i < 300 && !exited(); ++i) {
      auto pruned = microvm({"image", "prune"}, {fresh});
      EXPECT_EQ(pruned.exit_code, 0) << pruned.err;
      if (!exited()) ++prunes;  // it ran (at least in part) while the pull did
    }
    auto pulled = pull.finish();
    EXPECT_EQ(pulled.exit_code, 0) << "round " << round << ": " << pulled.err;
    // Pulled and tagged: prune keeps it.
    EXPECT_EQ(microvm({"image", "prune"}, {fresh}).exit_code, 0);
  }
  EXPECT_GT(prunes, 0) << "prune never ran while a pull did";
  auto ran = microvm({"run", "--rm", "oci:" + layout_->string() + ":busybox", "echo booted"}, {fresh});
  EXPECT_EQ(ran.exit_code, 0) << ran.err;
  EXPECT_EQ(ran.out, "booted\n");
}

// A hostile registry in one of its modes, on 127.0.0.1, for one test; each
// test pulls into a fresh data dir of its own.
class HostileRegistry : public ::testing::Test {
 protected:
  void start(const std::string& mode) {
    dir_ = home().parent_path() / ("hostile-" + mode);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    port_ = freePort();
    server_ = std::make_unique<Background>(
        std::vector<std::string>{"python3", MICROVM_SOURCE_DIR "/tests/e2e/hostile_registry.py", std::to_string(port_),
                                 mode, (dir_ / "requests").string()},
        dir_ / "log");
    ASSERT_TRUE(waitForPort(port_, std::chrono::seconds(20))) << readText(dir_ / "log");
  }

  std::string registry() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string image() const { return registry() + "/hostile/app"; }
  std::vector<std::string> env() const {
    return {"MICROVM_HOME=" + (dir_ / "home").string(), "DOCKER_CONFIG=" + (dir_ / "docker").string()};
  }

  // Runs `command` (pull or run) with `flags` on the hostile image.
  Outcome fetch(const std::string& command, std::vector<std::string> flags, double* elapsed = nullptr) {
    std::vector<std::string> args{command};
    if (command == "run") args.push_back("--rm");
    args.insert(args.end(), flags.begin(), flags.end());
    args.push_back(image());
    auto start = std::chrono::steady_clock::now();
    Outcome outcome = microvm(args, env());
    if (elapsed) *elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return outcome;
  }

  std::string requests() const { return readText(dir_ / "requests"); }

  fs::path dir_;
  int port_ = 0;
  std::unique_ptr<Background> server_;
};

TEST_F(HostileRegistry, BlobLongerThanDeclaredIsCutOffAtItsSize) {
  start("long-blob");
  auto pulled = fetch("pull", {});
  EXPECT_NE(pulled.exit_code, 0);
  EXPECT_NE(pulled.err.find("larger than 1024 bytes"), std::string::npos) << pulled.err;
  // The server logs what it got out once the client hangs up on it.
  std::string log;
  for (int i = 0; i < 100 && (log = requests()).find("sent ") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  size_t at = log.find("sent ");
  ASSERT_NE(at, std::string::npos) << log;
  uint64_t sent = std::stoull(log.substr(at + 5));
  EXPECT_LT(sent, 32u << 20) << "the client read on past the declared 1024 bytes";
  EXPECT_TRUE(listDir(dir_ / "home" / "images" / "tmp").empty());
}

TEST_F(HostileRegistry, StalledRegistryIsDroppedAfterTheStallTimeout) {
  start("stall");
  for (const char* command : {"pull", "run"}) {
    double elapsed = 0;
    auto outcome = fetch(command, {"--pull-stall-timeout", "1"}, &elapsed);
    EXPECT_NE(outcome.exit_code, 0) << command;
    EXPECT_NE(outcome.err.find("stalled, no data for 1 s"), std::string::npos) << command << ": " << outcome.err;
    EXPECT_LT(elapsed, 30.0) << command;  // 4 tries of 1 s and their backoff, not 4 minutes
  }
}

TEST_F(HostileRegistry, TricklingRegistryStopsAtThePullTimeout) {
  // One byte every 200 ms never stalls; the 1024-byte layer would take 3.5
  // minutes.
  start("trickle");
  double elapsed = 0;
  auto pulled = fetch("pull", {"--pull-timeout", "3", "--pull-stall-timeout", "2"}, &elapsed);
  EXPECT_NE(pulled.exit_code, 0);
  EXPECT_NE(pulled.err.find("took longer than its limit of 3 s"), std::string::npos) << pulled.err;
  EXPECT_GT(elapsed, 2.5);
  EXPECT_LT(elapsed, 30.0);
}

TEST_F(HostileRegistry, OversizedConfigIsNeverDownloaded) {
  start("big-config");
  auto pulled = fetch("pull", {});
  EXPECT_NE(pulled.exit_code, 0);
  EXPECT_NE(pulled.err.find("declares 67108864 bytes, more than the limit of 33554432"), std::string::npos)
      << pulled.err;
  EXPECT_NE(requests().find("/manifests/latest"), std::string::npos) << requests();
  EXPECT_EQ(requests().find("/blobs/"), std::string::npos) << requests();
}

TEST_F(HostileRegistry, CredentialsAreNotSentToAPlainHttpTokenRealm) {
  start("realm");
  std::vector<std::string> login_env = env();
  login_env.push_back("MICROVM_PASSWORD=s3cret");
  ASSERT_EQ(microvm({"login", "-u", "alice", registry()}, login_env).exit_code, 0);
  auto pulled = fetch("pull", {});
  EXPECT_NE(pulled.exit_code, 0);
  EXPECT_NE(pulled.err.find("refusing to send them without https"), std::string::npos) << pulled.err;
  EXPECT_NE(requests().find("GET /v2/"), std::string::npos) << requests();
  EXPECT_EQ(requests().find("/token"), std::string::npos) << requests();
  EXPECT_EQ(requests().find("auth=Basic"), std::string::npos) << requests();
}

}  // namespace
}  // namespace microvm::e2e
