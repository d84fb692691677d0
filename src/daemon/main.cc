// microvmd: the sandbox host daemon. Serves the REST API of docs/API.md on a
// unix socket (and optionally TCP) and drives VMs through the library; the
// VMs live in the same data dir as the CLI's.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <sstream>

#include "api.h"
#include "events.h"
#include "microvm/runtime.h"
#include "sandbox_book.h"
#include "server.h"

using namespace microvm;
using namespace microvm::daemon;

namespace {

int fail(const std::string& message) {
  std::cerr << "microvmd: " << message << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"microvmd: the microvm sandbox daemon (REST API over a unix socket; docs/API.md)"};
  std::string data_dir, socket, listen, token_file, tls_cert, tls_key;
  size_t max_body_mib = 64, max_download_mib = 64, max_exec_output_kib = 4096;
  size_t max_connections = 256, max_sandboxes = 64;
  int workers = 64;
  app.add_option("--data-dir", data_dir, "The VMs' data dir (default: $MICROVM_HOME, as the CLI)");
  app.add_option("--socket", socket, "Unix socket to serve on (default: <data dir>/microvmd.sock; mode 0600)");
  app.add_option("--listen", listen, "Also serve on TCP ADDR:PORT (needs --token-file)");
  app.add_option("--token-file", token_file, "File holding the bearer token TCP clients must present");
  app.add_option("--tls-cert", tls_cert, "PEM certificate chain: TCP speaks TLS");
  app.add_option("--tls-key", tls_key, "PEM private key for --tls-cert");
  app.add_option("--max-body", max_body_mib, "Largest request body, MiB (uploads included)")->capture_default_str();
  app.add_option("--max-download", max_download_mib, "Largest file or tar stream GET files serves, MiB")
      ->capture_default_str();
  app.add_option("--max-exec-output", max_exec_output_kib, "Output kept per stream of a JSON exec, KiB")
      ->capture_default_str();
  app.add_option("--max-connections", max_connections, "Connections served at once")->capture_default_str();
  app.add_option("--max-sandboxes", max_sandboxes, "Sandboxes running at once")->capture_default_str();
  app.add_option("--workers", workers, "Requests that block (boot, exec, copy) served at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  CLI11_PARSE(app, argc, argv);

  // Clients that go away must not kill us with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  RuntimeOptions runtime_options;
  if (!data_dir.empty()) runtime_options.data_dir = data_dir;
  auto runtime = Runtime::open(runtime_options);
  if (!runtime) return fail(runtime.error().message());
  auto info = runtime->info();
  if (!info) return fail(info.error().message());
  std::filesystem::path work_dir = info->data_dir / "microvmd";
  auto book = SandboxBook::open(work_dir / "sandboxes");
  if (!book) return fail(book.error().message());
  std::error_code ec;
  std::filesystem::create_directories(work_dir / "tmp", ec);
  std::filesystem::permissions(work_dir, std::filesystem::perms::owner_all, ec);
  // Scratch copies of a daemon that was killed are of no use.
  for (const auto& entry : std::filesystem::directory_iterator(work_dir / "tmp", ec)) {
    std::filesystem::remove_all(entry.path(), ec);
  }

  ServerOptions server_options;
  server_options.socket_path = socket.empty() ? info->data_dir / "microvmd.sock" : std::filesystem::path(socket);
  server_options.listen = listen;
  server_options.tls_cert = tls_cert;
  server_options.tls_key = tls_key;
  server_options.max_body = max_body_mib << 20;
  server_options.max_connections = max_connections;
  server_options.workers = workers;
  if (!token_file.empty()) {
    std::ifstream in(token_file);
    if (!in) return fail("cannot read --token-file " + token_file);
    std::stringstream text;
    text << in.rdbuf();
    std::string token = text.str();
    while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
    if (token.size() < 16) return fail("the token in " + token_file + " is shorter than 16 characters");
    server_options.token = token;
  }

  ApiLimits limits;
  limits.max_download = max_download_mib << 20;
  limits.max_exec_output = max_exec_output_kib << 10;
  limits.max_sandboxes = max_sandboxes;
  EventBus events;
  Metrics metrics;
  Api api(std::move(*runtime), std::move(*book), events, metrics, limits, work_dir / "tmp");
  Server server(api, metrics, server_options);
  if (auto started = server.start(); !started) return fail(started.error().message());
  api.startHousekeeping();
  std::cerr << "microvmd: serving on " << server_options.socket_path.string()
            << (listen.empty() ? "" : " and " + listen + (tls_cert.empty() ? " (tcp)" : " (tls)")) << "\n";
  server.run();
  api.stopHousekeeping();
  std::cerr << "microvmd: stopped (sandboxes keep running)\n";
  // Requests still blocked in the library (an exec) are not waited for.
  std::_Exit(0);
}
