// microvmd's REST resources (docs/API.md, docs/openapi.yaml) over the
// library: a request in, a response out, independent of the HTTP server
// (server.h), which calls handle() on a worker thread because most of these
// block (a boot takes seconds under TCG, an exec as long as its command).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "events.h"
#include "microvm/runtime.h"
#include "requests.h"
#include "sandbox_book.h"

namespace microvm::daemon {

struct HttpRequest {
  std::string method;
  std::string path;   // without the query
  std::string query;  // after '?', undecoded
  std::string body;
  std::string content_type;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct ApiLimits {
  size_t max_exec_output = size_t{4} << 20;  // per stream, for the JSON exec
  size_t max_download = size_t{64} << 20;    // GET files
  size_t max_sandboxes = 64;                 // running at once (creates beyond: 429)
  std::chrono::seconds boot_timeout{120};    // until a new sandbox answers exec
};

HttpResponse jsonError(int status, const std::string& message);
// The HTTP status for a library error.
int statusFor(const Error& error);

// Output of an exec run through pipes, each stream capped.
struct ExecOutcome {
  int exit_code = -1;
  std::string stdout_data;
  std::string stderr_data;
  bool truncated = false;
  bool timed_out = false;
};

class Api {
 public:
  Api(Runtime runtime, SandboxBook book, EventBus& events, Metrics& metrics, ApiLimits limits,
      std::filesystem::path work_dir);
  ~Api();

  HttpResponse handle(const HttpRequest& request);
  // Requests answered without blocking (healthz, metrics), so the server may
  // answer them on its own thread.
  static bool isQuick(const HttpRequest& request);

  // Every second: TTL expiry, lifecycle events for changes made elsewhere
  // (the CLI, a workload exiting), reaping runners we started.
  void startHousekeeping();
  void stopHousekeeping();

  Runtime& runtime() { return runtime_; }
  EventBus& events() { return events_; }
  // An exec with its streams captured, each up to max_exec_output; the
  // command is killed (SIGKILL) when its timeout passes.
  Result<ExecOutcome> runCapturedExec(const std::string& id, const ExecRequest& request);
  // The sandbox must exist and be running: else an error response.
  std::optional<HttpResponse> requireRunning(const std::string& id);
  void noteExecSeconds(double seconds) { metrics_.exec_seconds.observe(seconds); }

 private:
  HttpResponse route(const HttpRequest& request);
  HttpResponse createSandbox(const HttpRequest& request);
  HttpResponse listSandboxes(const HttpRequest& request);
  HttpResponse getSandbox(const std::string& id);
  HttpResponse deleteSandbox(const std::string& id);
  HttpResponse lifecycle(const std::string& id, const std::string& action, const HttpRequest& request);
  HttpResponse fork(const VmInfo& parent, const HttpRequest& request);
  HttpResponse exec(const std::string& id, const HttpRequest& request);
  HttpResponse putFile(const std::string& id, const HttpRequest& request);
  HttpResponse getFile(const std::string& id, const HttpRequest& request);
  HttpResponse metrics();

  // Records a status and publishes an event when it changed.
  void noteStatus(const std::string& id, const std::string& status, const std::string& type,
                  const std::string& detail = "");
  void housekeep();
  std::filesystem::path scratchDir();

  Runtime runtime_;
  SandboxBook book_;
  EventBus& events_;
  Metrics& metrics_;
  ApiLimits limits_;
  std::filesystem::path work_dir_;
  std::atomic<uint64_t> scratch_counter_{0};
  std::mutex create_mutex_;  // the sandbox count check and the boot it admits

  std::mutex known_mutex_;
  std::map<std::string, std::string> known_;  // id → last status published

  std::mutex housekeeping_mutex_;
  std::condition_variable housekeeping_wake_;
  bool housekeeping_stop_ = false;
  std::thread housekeeping_;
};

}  // namespace microvm::daemon
