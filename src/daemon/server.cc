#include "server.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <deque>
#include <iostream>
#include <thread>
#include <vector>

#include "ws_exec.h"

namespace microvm::daemon {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = boost::asio::ssl;
using Unix = asio::local::stream_protocol;
using UnixStream = beast::basic_stream<Unix>;
using TcpStream = beast::tcp_stream;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;

bool tokenMatches(const std::string& presented, const std::string& expected) {
  // Digests first: equal lengths, so the comparison time says nothing of either.
  unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(presented.data()), presented.size(), a);
  SHA256(reinterpret_cast<const unsigned char*>(expected.data()), expected.size(), b);
  return !expected.empty() && CRYPTO_memcmp(a, b, sizeof a) == 0;
}

struct Server::Impl {
  Api& api;
  Metrics& metrics;
  ServerOptions options;
  asio::io_context ioc;
  asio::thread_pool workers;
  std::optional<Unix::acceptor> unix_acceptor;
  std::optional<asio::ip::tcp::acceptor> tcp_acceptor;
  std::optional<ssl::context> tls;
  std::atomic<size_t> connections{0};

  Impl(Api& a, Metrics& m, ServerOptions o)
      : api(a),
        metrics(m),
        options(std::move(o)),
        ioc(options.io_threads),
        workers(static_cast<size_t>(options.workers)) {}

  void acceptUnix();
  void acceptTcp();
};

namespace {

// One connection's place under max_connections.
class Slot {
 public:
  explicit Slot(std::atomic<size_t>& count, size_t max) : count_(&count) { over_ = ++count > max; }
  Slot(const Slot&) = delete;
  Slot& operator=(const Slot&) = delete;
  ~Slot() { --*count_; }
  bool over() const { return over_; }

 private:
  std::atomic<size_t>* count_;
  bool over_ = false;
};

template <class Stream>
auto& lowest(Stream& stream) {
  return beast::get_lowest_layer(stream);
}

template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  template <class... Args>
  Session(Server::Impl& server, bool needs_token, Args&&... args)
      : server_(server),
        stream_(std::forward<Args>(args)...),
        needs_token_(needs_token),
        slot_(std::make_shared<Slot>(server.connections, server.options.max_connections)) {}

  void start() {
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      lowest(stream_).expires_after(server_.options.read_timeout);
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return;
        self->afterHandshake();
      });
    } else {
      afterHandshake();
    }
  }

 private:
  void afterHandshake() {
    if (slot_->over()) {
      respond(jsonError(503, "microvmd serves at most " + std::to_string(server_.options.max_connections) +
                                 " connections at once (--max-connections); retry later"),
              11, false, "");
      return;
    }
    read();
  }

  void read() {
    parser_.emplace();
    parser_->body_limit(server_.options.max_body);
    parser_->header_limit(static_cast<std::uint32_t>(server_.options.max_header));
    lowest(stream_).expires_after(server_.options.read_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = this->shared_from_this()](beast::error_code ec, size_t) { self->onRead(ec); });
  }

  void onRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == asio::error::eof || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      return close();
    }
    if (ec == http::error::body_limit) {
      linger_ = true;  // the client is still sending: read it away before closing
      return respond(jsonError(413, "the request body is larger than " + std::to_string(server_.options.max_body) +
                                        " bytes (microvmd --max-body)"),
                     11, false, "");
    }
    if (ec == http::error::header_limit) {
      return respond(jsonError(431, "the request's headers are larger than " +
                                        std::to_string(server_.options.max_header) + " bytes"),
                     11, false, "");
    }
    if (ec) return respond(jsonError(400, "malformed HTTP request: " + ec.message()), 11, false, "");

    auto& req = parser_->get();
    unsigned version = req.version();
    bool keep_alive = req.keep_alive();
    std::string method(req.method_string());
    if (needs_token_) {
      std::string header(req[http::field::authorization]);
      const std::string prefix = "Bearer ";
      if (!header.starts_with(prefix) || !tokenMatches(header.substr(prefix.size()), server_.options.token)) {
        HttpResponse denied = jsonError(
            401, header.empty() ? "this listener needs Authorization: Bearer TOKEN (the --token-file's content)"
                                : "the bearer token is not the one microvmd was given");
        denied.headers.emplace_back("WWW-Authenticate", "Bearer");
        return respond(std::move(denied), version, false, method);
      }
    }
    HttpRequest request;
    request.method = method;
    std::string target(req.target());
    size_t question = target.find('?');
    request.path = target.substr(0, question);
    if (question != std::string::npos) request.query = target.substr(question + 1);
    request.content_type = std::string(req[http::field::content_type]);

    if (request.method == "GET" && request.path == "/v1/events") return startEvents(version);
    if (isWebSocketExec(request.path)) {
      if (!beast::websocket::is_upgrade(req)) {
        return respond(jsonError(400, "this is a WebSocket endpoint: connect with a WebSocket client"), version, false,
                       method);
      }
      server_.metrics.countRequest(method, 101);
      auto upgrade = parser_->release();
      lowest(stream_).expires_never();
      return startWebSocketExec(server_.api, server_.workers, std::move(stream_), std::move(upgrade), request.path,
                                slot_);
    }
    request.body = std::move(req.body());
    if (Api::isQuick(request)) return respond(server_.api.handle(request), version, keep_alive, method);
    asio::post(server_.workers,
               [self = this->shared_from_this(), request = std::move(request), version, keep_alive]() mutable {
                 HttpResponse response = self->server_.api.handle(request);
                 asio::post(self->stream_.get_executor(), [self, response = std::move(response), version, keep_alive,
                                                           method = request.method]() mutable {
                   self->respond(std::move(response), version, keep_alive, method);
                 });
               });
  }

  void respond(HttpResponse response, unsigned version, bool keep_alive, const std::string& method) {
    server_.metrics.countRequest(method.empty() ? "-" : method, response.status);
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(response.status), version);
    res->set(http::field::server, "microvmd");
    res->set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) res->set(name, value);
    res->body() = std::move(response.body);
    res->keep_alive(keep_alive);
    res->prepare_payload();
    lowest(stream_).expires_after(server_.options.write_timeout);
    http::async_write(stream_, *res, [self = this->shared_from_this(), res](beast::error_code ec, size_t) {
      if (!ec && self->linger_) return self->lingerClose();
      if (ec || !res->keep_alive()) return self->close();
      self->read();
    });
  }

  // After an early error answer (413): a client still sending its body would
  // get a reset instead of the answer if we closed now, so what it sends is
  // read and dropped, up to a bound in bytes and time, before closing.
  void lingerClose() {
    beast::error_code ignored;
    if constexpr (!std::is_same_v<Stream, TlsStream>)
      stream_.socket().shutdown(asio::socket_base::shutdown_send, ignored);
    lowest(stream_).expires_after(std::chrono::seconds(10));
    stream_.async_read_some(asio::buffer(discard_), [self = this->shared_from_this()](beast::error_code ec, size_t n) {
      self->lingered_ += n;
      if (ec || self->lingered_ > 2 * self->server_.options.max_body + (size_t{1} << 20)) return self->close();
      self->lingerClose();
    });
  }

  // GET /v1/events: a text/event-stream that lasts until the client goes.
  void startEvents(unsigned version) {
    server_.metrics.countRequest("GET", 200);
    auto res = std::make_shared<http::response<http::empty_body>>(http::status::ok, version);
    res->set(http::field::server, "microvmd");
    res->set(http::field::content_type, "text/event-stream");
    res->set(http::field::cache_control, "no-cache");
    res->keep_alive(false);
    auto serializer = std::make_shared<http::response_serializer<http::empty_body>>(*res);
    lowest(stream_).expires_after(server_.options.write_timeout);
    http::async_write_header(
        stream_, *serializer, [self = this->shared_from_this(), res, serializer](beast::error_code ec, size_t) {
          if (ec) return self->close();
          std::weak_ptr<Session> weak = self;
          auto executor = self->stream_.get_executor();
          self->subscription_ = self->server_.api.events().subscribe([weak, executor](const std::string& line) {
            asio::post(executor, [weak, line] {
              if (auto session = weak.lock()) session->queueEvent("data: " + line + "\n\n");
            });
          });
          self->queueEvent(": subscribed\n\n");
          self->keepAlive();
          self->watchPeer();
        });
  }

  void queueEvent(std::string text) {
    if (closed_) return;
    if (events_.size() >= server_.options.max_event_queue) return close();  // a reader this slow is dropped
    events_.push_back(std::move(text));
    if (events_.size() == 1) writeEvent();
  }

  void writeEvent() {
    lowest(stream_).expires_after(server_.options.write_timeout);
    asio::async_write(stream_, asio::buffer(events_.front()),
                      [self = this->shared_from_this()](beast::error_code ec, size_t) {
                        if (ec) return self->close();
                        self->events_.pop_front();
                        if (!self->events_.empty()) self->writeEvent();
                      });
  }

  void keepAlive() {
    timer_ = std::make_shared<asio::steady_timer>(stream_.get_executor());
    timer_->expires_after(std::chrono::seconds(15));
    timer_->async_wait([self = this->shared_from_this()](beast::error_code ec) {
      if (ec || self->closed_) return;
      self->queueEvent(": keep-alive\n\n");
      self->keepAlive();
    });
  }

  // An event stream's client sends nothing more: a read ends when it goes.
  void watchPeer() {
    stream_.async_read_some(asio::buffer(discard_), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->close();
      self->watchPeer();
    });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    if (subscription_) server_.api.events().unsubscribe(subscription_);
    subscription_ = 0;
    if (timer_) timer_->cancel();
    beast::error_code ec;
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      lowest(stream_).socket().shutdown(asio::socket_base::shutdown_both, ec);
    } else {
      stream_.socket().shutdown(asio::socket_base::shutdown_both, ec);
    }
    lowest(stream_).close();
  }

  Server::Impl& server_;
  Stream stream_;
  bool needs_token_;
  std::shared_ptr<Slot> slot_;  // shared with a WebSocket this connection becomes
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  uint64_t subscription_ = 0;
  std::deque<std::string> events_;
  std::shared_ptr<asio::steady_timer> timer_;
  char discard_[16384];
  bool linger_ = false;
  size_t lingered_ = 0;
  bool closed_ = false;
};

}  // namespace

void Server::Impl::acceptUnix() {
  unix_acceptor->async_accept(asio::make_strand(ioc), [this](beast::error_code ec, Unix::socket socket) {
    if (!ec) std::make_shared<Session<UnixStream>>(*this, false, std::move(socket))->start();
    if (ec != asio::error::operation_aborted) acceptUnix();
  });
}

void Server::Impl::acceptTcp() {
  tcp_acceptor->async_accept(asio::make_strand(ioc), [this](beast::error_code ec, asio::ip::tcp::socket socket) {
    if (!ec) {
      if (tls) {
        std::make_shared<Session<TlsStream>>(*this, true, std::move(socket), *tls)->start();
      } else {
        std::make_shared<Session<TcpStream>>(*this, true, std::move(socket))->start();
      }
    }
    if (ec != asio::error::operation_aborted) acceptTcp();
  });
}

Server::Server(Api& api, Metrics& metrics, ServerOptions options)
    : impl_(std::make_unique<Impl>(api, metrics, std::move(options))) {}

Server::~Server() = default;

Result<void> Server::start() {
  auto& options = impl_->options;
  // The unix socket: refuse to take over a live daemon's; replace a stale one.
  const auto& path = options.socket_path;
  if (path.string().size() >= sizeof(sockaddr_un{}.sun_path)) {
    return Error(ErrorCode::kInvalidArgument, "socket path " + path.string() + " is too long for a unix socket");
  }
  {
    Unix::socket probe(impl_->ioc);
    beast::error_code ec;
    probe.connect(Unix::endpoint(path.string()), ec);
    if (!ec) return Error(ErrorCode::kAlreadyExists, "another microvmd answers on " + path.string());
    ::unlink(path.c_str());
  }
  std::error_code fs_ec;
  std::filesystem::create_directories(path.parent_path(), fs_ec);
  beast::error_code ec;
  impl_->unix_acceptor.emplace(impl_->ioc);
  impl_->unix_acceptor->open(Unix(), ec);
  // Owner-only from the start: no window in which another user could connect.
  mode_t old = ::umask(0177);
  if (!ec) impl_->unix_acceptor->bind(Unix::endpoint(path.string()), ec);
  ::umask(old);
  if (!ec) impl_->unix_acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return Error(ErrorCode::kIo, "listen on " + path.string() + ": " + ec.message());
  ::chmod(path.c_str(), 0600);

  if (!options.listen.empty()) {
    if (options.token.empty()) {
      return Error(ErrorCode::kInvalidArgument, "--listen needs --token-file: TCP clients must present a bearer token");
    }
    size_t colon = options.listen.rfind(':');
    if (colon == std::string::npos)
      return Error(ErrorCode::kInvalidArgument, "--listen takes ADDR:PORT, e.g. 127.0.0.1:8080");
    std::string host = options.listen.substr(0, colon);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    auto address = asio::ip::make_address(host, ec);
    if (ec) return Error(ErrorCode::kInvalidArgument, "--listen: " + host + " is not an IP address");
    int port = 0;
    try {
      port = std::stoi(options.listen.substr(colon + 1));
    } catch (...) {
      port = -1;
    }
    if (port < 0 || port > 65535) return Error(ErrorCode::kInvalidArgument, "--listen: bad port in " + options.listen);
    if (!options.tls_cert.empty() || !options.tls_key.empty()) {
      if (options.tls_cert.empty() || options.tls_key.empty()) {
        return Error(ErrorCode::kInvalidArgument, "TLS needs both --tls-cert and --tls-key");
      }
      impl_->tls.emplace(ssl::context::tls_server);
      impl_->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                              ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      impl_->tls->use_certificate_chain_file(options.tls_cert.string(), ec);
      if (!ec) impl_->tls->use_private_key_file(options.tls_key.string(), ssl::context::pem, ec);
      if (ec) return Error(ErrorCode::kInvalidArgument, "TLS certificate or key: " + ec.message());
    }
    asio::ip::tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
    impl_->tcp_acceptor.emplace(impl_->ioc);
    impl_->tcp_acceptor->open(endpoint.protocol(), ec);
    if (!ec) impl_->tcp_acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) impl_->tcp_acceptor->bind(endpoint, ec);
    if (!ec) impl_->tcp_acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) return Error(ErrorCode::kIo, "listen on " + options.listen + ": " + ec.message());
  }
  return success();
}

void Server::run() {
  impl_->acceptUnix();
  if (impl_->tcp_acceptor) impl_->acceptTcp();
  asio::signal_set signals(impl_->ioc, SIGINT, SIGTERM);
  signals.async_wait([this](beast::error_code, int) { impl_->ioc.stop(); });
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->options.io_threads; ++i) threads.emplace_back([this] { impl_->ioc.run(); });
  impl_->ioc.run();
  for (auto& thread : threads) thread.join();
  ::unlink(impl_->options.socket_path.c_str());
}

}  // namespace microvm::daemon
