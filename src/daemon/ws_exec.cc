#include "ws_exec.h"

#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace microvm::daemon {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using nlohmann::json;

bool isWebSocketExec(const std::string& path) {
  // /v1/sandboxes/{id}/exec/ws
  const std::string prefix = "/v1/sandboxes/";
  const std::string suffix = "/exec/ws";
  if (!path.starts_with(prefix) || !path.ends_with(suffix)) return false;
  std::string id = path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
  return !id.empty() && id.find('/') == std::string::npos;
}

namespace {

constexpr size_t kMaxQueuedOutput = size_t{4} << 20;  // bytes of frames not yet sent, with their cost
// What a queued frame costs beyond its bytes (its string, its place in the
// queue, the handler that posts it): a command writing a byte at a time
// fills the queue at this cost, not at one byte a frame.
constexpr size_t kFrameCost = 256;

size_t queuedCost(const std::string& frame) { return frame.size() + kFrameCost; }
constexpr size_t kMaxQueuedInput = size_t{1} << 20;   // stdin not yet written to the command
constexpr size_t kMaxMessage = size_t{1} << 20;
// Text frames (control replies) not yet sent: the client's messages are not
// read beyond this, so one that sends without reading cannot fill our memory.
constexpr size_t kMaxQueuedReplies = 64;
// How long a killed command may take to end before the exec stops waiting.
constexpr std::chrono::seconds kKillGrace{10};

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// A signalfd record for the library's exec loop (see runCapturedExec).
void sendSignal(int fd, int signal) {
  signalfd_siginfo record{};
  record.ssi_signo = static_cast<uint32_t>(signal);
  (void)!::write(fd, &record, sizeof record);
}

template <class Stream>
class WsExec : public std::enable_shared_from_this<WsExec<Stream>> {
 public:
  WsExec(Api& api, asio::thread_pool& workers, Stream&& stream, std::string id, std::shared_ptr<void> slot)
      : api_(api),
        workers_(workers),
        ws_(std::move(stream)),
        id_(std::move(id)),
        timer_(ws_.get_executor()),
        grace_timer_(ws_.get_executor()),
        slot_(std::move(slot)) {}

  ~WsExec() {
    for (int* fd : {&stdin_read_, &stdin_write_, &signal_read_, &signal_write_, &pty_master_, &pty_slave_})
      closeFd(*fd);
  }

  void start(WsRequest request) {
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.read_message_max(kMaxMessage);
    ws_.async_accept(request, [self = this->shared_from_this()](beast::error_code ec) {
      if (ec) return;
      self->readRequest();
    });
  }

 private:
  // The first message: the exec request as JSON.
  void readRequest() {
    ws_.async_read(in_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return;
      std::string text = beast::buffers_to_string(self->in_.data());
      self->in_.consume(self->in_.size());
      auto parsed = parseExecRequest(text, true);
      if (!parsed) return self->fail(parsed.error().message());
      self->request_ = std::move(*parsed);
      json j = json::parse(text, nullptr, false);
      if (j.is_object()) {
        if (j.contains("rows") && j["rows"].is_number_unsigned()) self->rows_ = j["rows"].template get<unsigned>();
        if (j.contains("cols") && j["cols"].is_number_unsigned()) self->cols_ = j["cols"].template get<unsigned>();
      }
      asio::post(self->workers_, [self] { self->run(); });
    });
  }

  void fail(const std::string& message) {
    queue(false, json{{"type", "error"}, {"error", message}}.dump());
    finishing_ = true;
  }

  // On a worker: the exec itself, with threads relaying its output.
  void run() {
    if (auto refused = api_.requireRunning(id_)) {
      std::string message = json::parse(refused->body, nullptr, false).value("error", std::string("refused"));
      return asio::post(ws_.get_executor(), [self = this->shared_from_this(), message] { self->fail(message); });
    }
    int out[2] = {-1, -1}, err[2] = {-1, -1}, in[2] = {-1, -1}, sig[2] = {-1, -1};
    bool ok = ::pipe2(out, O_CLOEXEC) == 0 && ::pipe2(err, O_CLOEXEC) == 0 && ::pipe2(in, O_CLOEXEC) == 0 &&
              ::pipe2(sig, O_CLOEXEC | O_NONBLOCK) == 0;
    if (ok && request_.tty) {
      winsize size{};
      size.ws_row = static_cast<unsigned short>(rows_ ? rows_ : 24);
      size.ws_col = static_cast<unsigned short>(cols_ ? cols_ : 80);
      ok = ::openpty(&pty_master_, &pty_slave_, nullptr, nullptr, &size) == 0;
    }
    if (!ok) {
      for (int fd : {out[0], out[1], err[0], err[1], in[0], in[1], sig[0], sig[1]}) {
        if (fd >= 0) ::close(fd);
      }
      return asio::post(ws_.get_executor(),
                        [self = this->shared_from_this()] { self->fail("cannot set up the exec's pipes"); });
    }
    {
      std::lock_guard lock(mutex_);
      stdin_read_ = in[0];
      stdin_write_ = in[1];
      signal_read_ = sig[0];
      signal_write_ = sig[1];
      started_ = true;
    }
    asio::post(ws_.get_executor(), [self = this->shared_from_this()] { self->onStarted(); });

    ExecOptions options;
    options.command = request_.command;
    options.env = request_.env;
    options.workdir = request_.cwd;
    options.user = request_.user;
    options.tty = request_.tty;
    options.stdin_fd = in[0];
    options.stdout_fd = out[1];
    options.stderr_fd = err[1];
    options.signal_fd = sig[0];
    options.terminal_fd = request_.tty ? pty_master_ : -1;
    std::thread writer([self = this->shared_from_this()] { self->writeStdin(); });
    std::thread out_reader([self = this->shared_from_this(), fd = out[0]] { self->relay(fd, 1); });
    std::thread err_reader([self = this->shared_from_this(), fd = err[0]] { self->relay(fd, 2); });
    auto started = std::chrono::steady_clock::now();
    auto code = api_.runtime().exec(id_, options);
    api_.noteExecSeconds(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    ::close(out[1]);
    ::close(err[1]);
    out_reader.join();
    err_reader.join();
    {
      std::lock_guard lock(mutex_);
      stdin_done_ = true;
    }
    input_cv_.notify_all();
    writer.join();
    ::close(out[0]);
    ::close(err[0]);
    json result = code ? json{{"type", "exit"}, {"exit_code", *code}}
                       : json{{"type", "error"}, {"error", code.error().message()}};
    asio::post(ws_.get_executor(), [self = this->shared_from_this(), text = result.dump()] {
      self->timer_.cancel();
      self->grace_timer_.cancel();
      self->queue(false, text);
      self->finishing_ = true;
    });
  }

  // On a relay thread: a pipe's output as binary frames [stream byte, data].
  void relay(int fd, char stream) {
    char buffer[32768];
    for (;;) {
      ssize_t got = ::read(fd, buffer + 1, sizeof buffer - 1);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return;
      buffer[0] = stream;
      std::string frame(buffer, static_cast<size_t>(got) + 1);
      {
        // Backpressure: a client that does not read stops the command's output.
        std::unique_lock lock(mutex_);
        output_cv_.wait(lock, [&] { return queued_output_ < kMaxQueuedOutput || gone_; });
        if (gone_) continue;  // drain so the library never blocks
        queued_output_ += queuedCost(frame);
      }
      asio::post(ws_.get_executor(), [self = this->shared_from_this(), frame = std::move(frame)]() mutable {
        self->queue(true, std::move(frame), true);
      });
    }
  }

  // On the writer thread: stdin as it comes, EOF when the client says so.
  void writeStdin() {
    for (;;) {
      std::string chunk;
      {
        std::unique_lock lock(mutex_);
        input_cv_.wait(lock, [&] { return !input_.empty() || input_eof_ || stdin_done_; });
        if (input_.empty()) break;
        chunk = std::move(input_.front());
        input_.pop_front();
        queued_input_ -= chunk.size();
      }
      asio::post(ws_.get_executor(), [self = this->shared_from_this()] { self->maybeRead(); });
      size_t done = 0;
      while (done < chunk.size()) {
        ssize_t n = ::write(stdin_write_, chunk.data() + done, chunk.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        done += static_cast<size_t>(n);
      }
    }
    std::lock_guard lock(mutex_);
    closeFd(stdin_write_);  // the command's stdin ends
  }

  void onStarted() {
    if (request_.timeout_seconds > 0) {
      timer_.expires_after(std::chrono::seconds(request_.timeout_seconds));
      timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
        if (!ec) self->kill();
      });
    }
    maybeRead();
  }

  void signal(int signal) {
    std::lock_guard lock(mutex_);
    if (signal_write_ >= 0) sendSignal(signal_write_, signal);
  }

  // SIGKILL, and a bound on how long the worker waits for the guest to act
  // on it: EOF on the signal pipe ends the library's exec.
  void kill() {
    signal(SIGKILL);
    grace_timer_.expires_after(kKillGrace);
    grace_timer_.async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec) return;
      std::lock_guard lock(self->mutex_);
      closeFd(self->signal_write_);
    });
  }

  // The client's messages: binary = stdin; text = {"type": "resize" | "signal" | "eof"}.
  void maybeRead() {
    if (reading_ || gone_ || finishing_ || queued_replies_ >= kMaxQueuedReplies) return;
    {
      std::lock_guard lock(mutex_);
      if (queued_input_ >= kMaxQueuedInput) return;  // the writer posts maybeRead when it drains
    }
    reading_ = true;
    ws_.async_read(in_, [self = this->shared_from_this()](beast::error_code ec, size_t) {
      self->reading_ = false;
      if (ec) return self->clientGone();
      std::string data = beast::buffers_to_string(self->in_.data());
      self->in_.consume(self->in_.size());
      if (self->ws_.got_binary()) {
        std::lock_guard lock(self->mutex_);
        if (!self->input_eof_) {
          self->queued_input_ += data.size();
          self->input_.push_back(std::move(data));
        }
        self->input_cv_.notify_all();
      } else {
        self->control(data);
      }
      self->maybeRead();
    });
  }

  void control(const std::string& text) {
    json j = json::parse(text, nullptr, false);
    std::string type = j.is_object() ? j.value("type", std::string()) : std::string();
    if (type == "eof") {
      std::lock_guard lock(mutex_);
      input_eof_ = true;
      input_cv_.notify_all();
    } else if (type == "resize" && j.contains("rows") && j.contains("cols") && j["rows"].is_number_unsigned() &&
               j["cols"].is_number_unsigned()) {
      if (pty_master_ < 0) return;
      winsize size{};
      size.ws_row = static_cast<unsigned short>(std::min<unsigned>(j["rows"].get<unsigned>(), 65535));
      size.ws_col = static_cast<unsigned short>(std::min<unsigned>(j["cols"].get<unsigned>(), 65535));
      if (::ioctl(pty_master_, TIOCSWINSZ, &size) == 0) signal(SIGWINCH);
    } else if (type == "signal" && j.contains("signal") && j["signal"].is_number_unsigned()) {
      unsigned number = j["signal"].get<unsigned>();
      if (number >= 1 && number <= 64 && number != SIGWINCH) signal(static_cast<int>(number));
    } else {
      queue(false, json{{"type", "error"},
                        {"error", "unknown control message; send {\"type\": \"resize\"|\"signal\"|\"eof\"}"}}
                       .dump());
    }
  }

  // The client went away: the command dies with it.
  void clientGone() {
    if (gone_) return;
    gone_ = true;
    timer_.cancel();
    kill();
    std::lock_guard lock(mutex_);
    input_eof_ = true;
    input_cv_.notify_all();
    output_cv_.notify_all();
  }

  void queue(bool binary, std::string data, bool counted = false) {
    if (gone_) {
      if (counted) release(queuedCost(data));
      return;
    }
    if (!counted) ++queued_replies_;
    outgoing_.push_back({binary, counted, std::move(data)});
    if (!writing_) writeNext();
  }

  void release(size_t bytes) {
    std::lock_guard lock(mutex_);
    queued_output_ -= bytes;
    output_cv_.notify_all();
  }

  void writeNext() {
    if (outgoing_.empty()) {
      if (finishing_ && !gone_) {
        gone_ = true;
        ws_.async_close(websocket::close_code::normal, [self = this->shared_from_this()](beast::error_code) {});
      }
      return;
    }
    writing_ = true;
    ws_.binary(outgoing_.front().binary);
    ws_.async_write(asio::buffer(outgoing_.front().data),
                    [self = this->shared_from_this()](beast::error_code ec, size_t) {
                      self->writing_ = false;
                      auto frame = std::move(self->outgoing_.front());
                      self->outgoing_.pop_front();
                      if (frame.counted) self->release(queuedCost(frame.data));
                      if (!frame.counted) --self->queued_replies_;
                      if (ec) {
                        while (!self->outgoing_.empty()) {
                          if (self->outgoing_.front().counted) self->release(queuedCost(self->outgoing_.front().data));
                          self->outgoing_.pop_front();
                        }
                        return self->clientGone();
                      }
                      self->writeNext();
                      self->maybeRead();  // if it waited for the replies to go
                    });
  }

  struct Frame {
    bool binary;
    bool counted;
    std::string data;
  };

  Api& api_;
  asio::thread_pool& workers_;
  websocket::stream<Stream> ws_;
  std::string id_;
  asio::steady_timer timer_;
  asio::steady_timer grace_timer_;
  std::shared_ptr<void> slot_;  // the connection's place under --max-connections
  beast::flat_buffer in_;
  ExecRequest request_;
  unsigned rows_ = 0, cols_ = 0;
  // Strand-only state.
  std::deque<Frame> outgoing_;
  bool writing_ = false;
  bool reading_ = false;
  bool finishing_ = false;
  size_t queued_replies_ = 0;  // uncounted frames in outgoing_
  std::atomic<bool> gone_{false};
  // Shared with the worker and relay threads.
  std::mutex mutex_;
  std::condition_variable output_cv_;
  std::condition_variable input_cv_;
  size_t queued_output_ = 0;
  size_t queued_input_ = 0;
  std::deque<std::string> input_;
  bool input_eof_ = false;
  bool stdin_done_ = false;
  bool started_ = false;
  int stdin_read_ = -1, stdin_write_ = -1, signal_read_ = -1, signal_write_ = -1;
  int pty_master_ = -1, pty_slave_ = -1;
};

std::string idOf(const std::string& path) {
  const std::string prefix = "/v1/sandboxes/";
  const std::string suffix = "/exec/ws";
  return path.substr(prefix.size(), path.size() - prefix.size() - suffix.size());
}

template <class Stream>
void startOn(Api& api, asio::thread_pool& workers, Stream&& stream, WsRequest&& request, const std::string& path,
             std::shared_ptr<void> slot) {
  auto session = std::make_shared<WsExec<Stream>>(api, workers, std::move(stream), idOf(path), std::move(slot));
  session->start(std::move(request));
}

}  // namespace

void startWebSocketExec(Api& api, asio::thread_pool& workers,
                        beast::basic_stream<asio::local::stream_protocol>&& stream, WsRequest&& request,
                        const std::string& path, std::shared_ptr<void> slot) {
  startOn(api, workers, std::move(stream), std::move(request), path, std::move(slot));
}
void startWebSocketExec(Api& api, asio::thread_pool& workers, beast::tcp_stream&& stream, WsRequest&& request,
                        const std::string& path, std::shared_ptr<void> slot) {
  startOn(api, workers, std::move(stream), std::move(request), path, std::move(slot));
}
void startWebSocketExec(Api& api, asio::thread_pool& workers, beast::ssl_stream<beast::tcp_stream>&& stream,
                        WsRequest&& request, const std::string& path, std::shared_ptr<void> slot) {
  startOn(api, workers, std::move(stream), std::move(request), path, std::move(slot));
}

}  // namespace microvm::daemon
