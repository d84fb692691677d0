// microvmd's HTTP server: Boost.Beast over a unix socket (always) and TCP
// (optional, with a bearer token, and TLS when given a certificate). A few
// I/O threads run every connection asynchronously, each read and write with
// a deadline; requests that block (boots, execs, copies) run on a worker
// pool, so one slow request never holds up another. Everything a client can
// send is bounded: header and body sizes, the number of connections, the
// events each stream may queue.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>

#include "api.h"
#include "events.h"
#include "microvm/result.h"

namespace microvm::daemon {

struct ServerOptions {
  std::filesystem::path socket_path;  // the unix socket (mode 0600)
  std::string listen;                 // "ADDR:PORT" for TCP; empty: none
  std::string token;                  // required on TCP (Authorization: Bearer)
  std::filesystem::path tls_cert;     // both: TCP speaks TLS
  std::filesystem::path tls_key;
  size_t max_body = size_t{64} << 20;  // request bodies (uploads included)
  size_t max_header = 16 << 10;
  size_t max_connections = 256;
  size_t max_event_queue = 1024;  // events queued on one slow /v1/events stream
  int io_threads = 2;
  int workers = 64;                        // requests that block, at once
  std::chrono::seconds read_timeout{60};   // a whole request, or an idle keep-alive
  std::chrono::seconds write_timeout{60};  // a whole response
};

class Server {
 public:
  Server(Api& api, Metrics& metrics, ServerOptions options);
  ~Server();
  // Binds the sockets; the unix socket is refused if another daemon answers on it.
  Result<void> start();
  // Serves until SIGINT/SIGTERM.
  void run();

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Constant-time comparison of a presented token with the expected one.
bool tokenMatches(const std::string& presented, const std::string& expected);

}  // namespace microvm::daemon
