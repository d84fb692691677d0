// Api: exec with captured output, and files in and out of a sandbox.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "api.h"

namespace microvm::daemon {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// How long an exec past its timeout may take to end once killed.
constexpr std::chrono::seconds kKillGrace{10};

// An fd closed on scope exit.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~Fd() { reset(); }
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

Result<std::pair<Fd, Fd>> makePipe(int flags = 0) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | flags) != 0) return Error::fromErrno("pipe");
  return std::make_pair(Fd(fds[0]), Fd(fds[1]));
}

// Reads `fd` to EOF, keeping at most `cap` bytes (the rest is drained so the
// writer never blocks on us).
void drain(int fd, size_t cap, std::string& out, std::atomic<bool>& truncated) {
  char buffer[65536];
  for (;;) {
    ssize_t got = ::read(fd, buffer, sizeof buffer);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return;
    size_t room = cap > out.size() ? cap - out.size() : 0;
    size_t keep = std::min(room, static_cast<size_t>(got));
    out.append(buffer, keep);
    if (keep < static_cast<size_t>(got)) truncated = true;
  }
}

json streamField(const std::string& data, const char* name, json& j) {
  if (isUtf8(data)) {
    j[name] = data;
    j[std::string(name) + "_encoding"] = "utf-8";
  } else {
    j[name] = base64Encode(data);
    j[std::string(name) + "_encoding"] = "base64";
  }
  return j;
}

constexpr size_t kMaxGuestPathBytes = 4095;

Result<std::string> pathParam(const HttpRequest& request) {
  auto values = queryValues(request.query, "path");
  if (!values) return std::move(values).error();
  if (values->size() != 1 || values->front().empty() || values->front()[0] != '/') {
    return Error(ErrorCode::kInvalidArgument, "give exactly one absolute guest path: ?path=/some/file");
  }
  if (values->front().find('\0') != std::string::npos) return Error(ErrorCode::kInvalidArgument, "path has a NUL byte");
  // The guest's PATH_MAX: a longer path would fail in the guest as a 500.
  if (values->front().size() > kMaxGuestPathBytes) {
    return Error(ErrorCode::kInvalidArgument, "path is longer than " + std::to_string(kMaxGuestPathBytes) + " bytes");
  }
  return values->front();
}

Result<std::string> readSmallFile(const fs::path& path, size_t cap) {
  std::error_code ec;
  auto size = fs::file_size(path, ec);
  if (ec) return Error(ErrorCode::kIo, path.string() + ": " + ec.message());
  if (size > cap) {
    return Error(ErrorCode::kInvalidArgument, "the file has " + std::to_string(size) + " bytes, more than the " +
                                                  std::to_string(cap) + " microvmd serves (--max-download)");
  }
  std::ifstream in(path, std::ios::binary);
  std::string data(size, '\0');
  in.read(data.data(), static_cast<std::streamsize>(size));
  if (!in) return Error(ErrorCode::kIo, "read " + path.string());
  return data;
}

struct TarSink {
  std::string data;
  size_t cap = 0;
  bool over = false;
};

la_ssize_t tarWrite(struct archive*, void* client, const void* buffer, size_t length) {
  auto* sink = static_cast<TarSink*>(client);
  if (sink->data.size() + length > sink->cap) {
    sink->over = true;
    return -1;
  }
  sink->data.append(static_cast<const char*>(buffer), length);
  return static_cast<la_ssize_t>(length);
}

// A tar stream of the tree at `root`, named from `name`.
Result<std::string> tarTree(const fs::path& root, const std::string& name, size_t cap) {
  TarSink sink;
  sink.cap = cap;
  struct archive* writer = archive_write_new();
  archive_write_set_format_pax_restricted(writer);
  archive_write_set_bytes_in_last_block(writer, 1);
  archive_write_open(writer, &sink, nullptr, tarWrite, nullptr);
  struct archive* disk = archive_read_disk_new();
  archive_read_disk_set_standard_lookup(disk);
  archive_read_disk_set_symlink_physical(disk);
  std::string failure;
  if (archive_read_disk_open(disk, root.c_str()) != ARCHIVE_OK) failure = archive_error_string(disk);
  while (failure.empty()) {
    struct archive_entry* entry = archive_entry_new();
    int r = archive_read_next_header2(disk, entry);
    if (r == ARCHIVE_EOF) {
      archive_entry_free(entry);
      break;
    }
    if (r != ARCHIVE_OK) {
      failure = archive_error_string(disk) ? archive_error_string(disk) : "read";
      archive_entry_free(entry);
      break;
    }
    archive_read_disk_descend(disk);
    std::string path = archive_entry_pathname(entry);
    std::string relative = path.size() > root.string().size() ? path.substr(root.string().size()) : "";
    archive_entry_set_pathname(entry, (name + relative).c_str());
    if (archive_write_header(writer, entry) != ARCHIVE_OK) {
      failure = sink.over ? "" : archive_error_string(writer);
      archive_entry_free(entry);
      break;
    }
    if (archive_entry_filetype(entry) == AE_IFREG) {
      std::ifstream in(path, std::ios::binary);
      char buffer[65536];
      while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
        if (archive_write_data(writer, buffer, static_cast<size_t>(in.gcount())) < 0) break;
      }
    }
    archive_entry_free(entry);
    if (sink.over) break;
  }
  archive_read_close(disk);
  archive_read_free(disk);
  archive_write_close(writer);
  archive_write_free(writer);
  if (sink.over) {
    return Error(ErrorCode::kInvalidArgument, "the directory's tar stream is larger than the " + std::to_string(cap) +
                                                  " bytes microvmd serves (--max-download)");
  }
  if (!failure.empty()) return Error(ErrorCode::kIo, "tar: " + failure);
  return sink.data;
}

// Extracts a tar stream into `dir`, refusing absolute paths, "..", and
// writes through symlinks.
Result<void> untar(const std::string& data, const fs::path& dir) {
  struct archive* reader = archive_read_new();
  archive_read_support_format_tar(reader);
  archive_read_support_format_gnutar(reader);
  archive_read_support_filter_none(reader);
  struct archive* writer = archive_write_disk_new();
  archive_write_disk_set_options(writer, ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_SECURE_NODOTDOT |
                                             ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  std::string failure;
  if (archive_read_open_memory(reader, data.data(), data.size()) != ARCHIVE_OK) failure = archive_error_string(reader);
  while (failure.empty()) {
    struct archive_entry* entry = nullptr;
    int r = archive_read_next_header(reader, &entry);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK) {
      failure = archive_error_string(reader);
      break;
    }
    auto type = archive_entry_filetype(entry);
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) continue;  // no devices or fifos
    if (archive_entry_hardlink(entry) != nullptr) {
      failure = "hard links are not accepted";
      break;
    }
    // Relative paths without "..", checked here because the entry is then
    // placed under `dir` by an absolute path.
    std::string name = archive_entry_pathname(entry) ? archive_entry_pathname(entry) : "";
    bool unsafe = name.empty() || name[0] == '/';
    for (const auto& part : fs::path(name)) unsafe = unsafe || part == "..";
    if (unsafe) {
      failure = "entry \"" + name + "\" is absolute or climbs out with \"..\"";
      break;
    }
    std::string target = (dir / name).string();
    archive_entry_set_pathname(entry, target.c_str());
    archive_entry_set_uid(entry, ::getuid());
    archive_entry_set_gid(entry, ::getgid());
    if (archive_write_header(writer, entry) != ARCHIVE_OK) {
      failure = archive_error_string(writer);
      break;
    }
    const void* block;
    size_t size;
    la_int64_t offset;
    while ((r = archive_read_data_block(reader, &block, &size, &offset)) == ARCHIVE_OK) {
      if (archive_write_data_block(writer, block, size, offset) != ARCHIVE_OK) break;
    }
    archive_write_finish_entry(writer);
  }
  archive_read_free(reader);
  archive_write_free(writer);
  if (!failure.empty())
    return Error(ErrorCode::kInvalidArgument, "the body is not a tar stream microvmd accepts: " + failure);
  return success();
}

}  // namespace

Result<ExecOutcome> Api::runCapturedExec(const std::string& id, const ExecRequest& request) {
  ExecOptions options;
  options.command = request.command;
  options.env = request.env;
  options.workdir = request.cwd;
  options.user = request.user;
  Fd input;
  if (!request.stdin_data.empty()) {
    // The whole input is in hand: a memfd the library reads to EOF.
    input = Fd(::memfd_create("microvmd-stdin", MFD_CLOEXEC));
    if (input.get() < 0) return Error::fromErrno("memfd_create");
    size_t done = 0;
    while (done < request.stdin_data.size()) {
      ssize_t n = ::write(input.get(), request.stdin_data.data() + done, request.stdin_data.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return Error::fromErrno("write stdin");
      done += static_cast<size_t>(n);
    }
    ::lseek(input.get(), 0, SEEK_SET);
    options.stdin_fd = input.get();
  }
  auto out = makePipe();
  if (!out) return std::move(out).error();
  auto err = makePipe();
  if (!err) return std::move(err).error();
  // The library reads signalfd records from signal_fd: a pipe we write a
  // SIGKILL record into when the timeout passes.
  // Non-blocking, as a signalfd would be: the library reads until EAGAIN.
  auto signals = makePipe(O_NONBLOCK);
  if (!signals) return std::move(signals).error();
  options.stdout_fd = out->second.get();
  options.stderr_fd = err->second.get();
  options.signal_fd = signals->first.get();

  ExecOutcome outcome;
  std::atomic<bool> truncated{false};
  size_t cap = limits_.max_exec_output;
  std::thread out_reader([&] { drain(out->first.get(), cap, outcome.stdout_data, truncated); });
  std::thread err_reader([&] { drain(err->first.get(), cap, outcome.stderr_data, truncated); });
  std::mutex mutex;
  std::condition_variable done_cv;
  bool done = false;
  std::atomic<bool> timed_out{false};
  std::thread timer([&] {
    std::unique_lock lock(mutex);
    if (done_cv.wait_for(lock, std::chrono::seconds(request.timeout_seconds), [&] { return done; })) return;
    timed_out = true;
    signalfd_siginfo record{};
    record.ssi_signo = SIGKILL;
    (void)!::write(signals->second.get(), &record, sizeof record);
    // A guest that does not end the command (its agent stopped, or lying)
    // must not hold this worker: EOF on the signal pipe ends the exec.
    if (done_cv.wait_for(lock, kKillGrace, [&] { return done; })) return;
    signals->second.reset();
  });
  auto code = runtime_.exec(id, options);
  {
    std::lock_guard lock(mutex);
    done = true;
  }
  done_cv.notify_all();
  timer.join();
  out->second.reset();
  err->second.reset();
  out_reader.join();
  err_reader.join();
  if (!code) return std::move(code).error();
  outcome.exit_code = *code;
  outcome.truncated = truncated;
  outcome.timed_out = timed_out;
  return outcome;
}

namespace {

// A scratch directory of one request, removed with everything in it when
// the request is answered.
struct RemovedAtExit {
  fs::path dir;
  ~RemovedAtExit() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

}  // namespace

HttpResponse Api::exec(const std::string& id, const HttpRequest& request) {
  auto started = Clock::now();
  auto parsed = parseExecRequest(request.body);
  if (!parsed) return jsonError(400, parsed.error().message());
  if (auto refused = requireRunning(id)) return *refused;
  auto outcome = runCapturedExec(id, *parsed);
  if (!outcome) {
    int status = statusFor(outcome.error());
    return jsonError(status == 400 ? 409 : status, "exec: " + outcome.error().message());
  }
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  metrics_.exec_seconds.observe(seconds);
  json j = {{"exit_code", outcome->exit_code},
            {"truncated", outcome->truncated},
            {"timed_out", outcome->timed_out},
            {"duration_ms", seconds * 1000.0}};
  streamField(outcome->stdout_data, "stdout", j);
  streamField(outcome->stderr_data, "stderr", j);
  if (outcome->truncated) {
    j["truncated_reason"] =
        "output beyond " + std::to_string(limits_.max_exec_output) +
        " bytes per stream was dropped (microvmd --max-exec-output; use the WebSocket exec to stream)";
  }
  HttpResponse response;
  response.body = j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  return response;
}

HttpResponse Api::putFile(const std::string& id, const HttpRequest& request) {
  auto path = pathParam(request);
  if (!path) return jsonError(400, path.error().message());
  int mode = 0644;
  auto modes = queryValues(request.query, "mode");
  if (modes && !modes->empty()) {
    char* end = nullptr;
    long parsed = std::strtol(modes->front().c_str(), &end, 8);
    if (modes->front().empty() || *end != '\0' || parsed < 0 || parsed > 07777) {
      return jsonError(400, "mode must be octal, e.g. mode=0755");
    }
    mode = static_cast<int>(parsed);
  }
  if (auto refused = requireRunning(id)) return *refused;
  fs::path scratch = scratchDir();
  RemovedAtExit cleanup{scratch};
  bool tar = request.content_type.starts_with("application/x-tar");
  Result<void> copied = success();
  if (tar) {
    fs::path tree = scratch / "tree";
    fs::create_directories(tree);
    if (auto unpacked = untar(request.body, tree); !unpacked) return jsonError(400, unpacked.error().message());
    copied = runtime_.copyTo(id, tree.string() + "/.", *path);
  } else {
    fs::path guest(*path);
    std::string name = guest.filename().string();
    if (name.empty() || name == "." || name == "..")
      return jsonError(400, "path must name a file, e.g. ?path=/tmp/data.txt");
    fs::path local = scratch / name;
    {
      std::ofstream file(local, std::ios::binary | std::ios::trunc);
      file.write(request.body.data(), static_cast<std::streamsize>(request.body.size()));
      if (!file) return jsonError(500, "write the upload to " + local.string());
    }
    ::chmod(local.c_str(), static_cast<mode_t>(mode));
    std::string parent = guest.parent_path().string();
    copied = runtime_.copyTo(id, local.string(), parent.empty() ? "/" : parent);
  }
  if (!copied) {
    int status = statusFor(copied.error());
    return jsonError(status, "files: " + copied.error().message());
  }
  HttpResponse response;
  response.status = 200;
  response.body = json{{"path", *path}, {"bytes", request.body.size()}}.dump() + "\n";
  return response;
}

HttpResponse Api::getFile(const std::string& id, const HttpRequest& request) {
  auto path = pathParam(request);
  if (!path) return jsonError(400, path.error().message());
  if (auto refused = requireRunning(id)) return *refused;
  fs::path scratch = scratchDir();
  RemovedAtExit cleanup{scratch};
  fs::path local = scratch / "out";
  // The guest decides what the scratch copy holds: it stops at the limit, so
  // the host's disk never takes more than what would be served.
  if (auto copied = runtime_.copyFrom(id, *path, local.string(), limits_.max_download); !copied) {
    if (copied.error().sysErrno() == EFBIG) {
      return jsonError(413, *path + " is larger than the " + std::to_string(limits_.max_download) +
                                " bytes microvmd serves (--max-download; a directory counts 512 bytes per entry): " +
                                copied.error().message());
    }
    return jsonError(statusFor(copied.error()), "files: " + copied.error().message());
  }
  std::error_code ec;
  auto status = fs::symlink_status(local, ec);
  HttpResponse response;
  if (fs::is_directory(status)) {
    std::string name = fs::path(*path).filename().string();
    if (name.empty()) name = ".";
    auto tar = tarTree(local, name, limits_.max_download);
    if (!tar) return jsonError(statusFor(tar.error()) == 400 ? 413 : 500, tar.error().message());
    response.content_type = "application/x-tar";
    response.body = std::move(*tar);
  } else if (fs::is_regular_file(status)) {
    auto data = readSmallFile(local, limits_.max_download);
    if (!data) return jsonError(statusFor(data.error()) == 400 ? 413 : 500, data.error().message());
    response.content_type = "application/octet-stream";
    response.body = std::move(*data);
  } else {
    return jsonError(400, *path + " is not a regular file or a directory");
  }
  return response;
}

}  // namespace microvm::daemon
