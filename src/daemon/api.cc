#include "api.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace microvm::daemon {

namespace fs = std::filesystem;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string dumpJson(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

HttpResponse jsonOk(int status, const json& j) {
  HttpResponse response;
  response.status = status;
  response.body = dumpJson(j);
  return response;
}

std::string rfc3339(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

int64_t unixNow() {
  return static_cast<int64_t>(std::time(nullptr));
}

std::vector<std::string> splitPath(const std::string& path) {
  std::vector<std::string> parts;
  std::stringstream stream(path);
  std::string part;
  while (std::getline(stream, part, '/')) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

// Runner processes we started are our children: reap those that ended
// (never anything else, which the library waits for itself). Cheap when no
// child has ended; else a scan of /proc for our zombie runners.
void reapRunners() {
  siginfo_t info{};
  if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) return;
  pid_t self = ::getpid();
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    std::string name = entry.path().filename().string();
    if (name.empty() || !std::isdigit(static_cast<unsigned char>(name[0]))) continue;
    std::ifstream in(entry.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    // "pid (comm) S ppid ...": comm may hold spaces, so split at the last ')'.
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close + 4 > stat.size()) continue;
    std::string comm = stat.substr(open + 1, close - open - 1);
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    long ppid = 0;
    rest >> state >> ppid;
    if (comm != "microvm-runner" || state != 'Z' || ppid != self) continue;
    int status = 0;
    ::waitpid(static_cast<pid_t>(std::stol(name)), &status, WNOHANG);
  }
}

}  // namespace

HttpResponse jsonError(int status, const std::string& message) {
  HttpResponse response;
  response.status = status;
  response.body = dumpJson(json{{"error", message}});
  return response;
}

int statusFor(const Error& error) {
  switch (error.code()) {
    case ErrorCode::kInvalidArgument: return 400;
    case ErrorCode::kNotFound: return 404;
    case ErrorCode::kAlreadyExists: return 409;
    case ErrorCode::kUnsupported: return 501;
    case ErrorCode::kTimeout: return 504;
    case ErrorCode::kUnavailable: return 503;
    default: return 500;
  }
}

Api::Api(Runtime runtime, SandboxBook book, EventBus& events, Metrics& metrics, ApiLimits limits, fs::path work_dir)
    : runtime_(std::move(runtime)),
      book_(std::move(book)),
      events_(events),
      metrics_(metrics),
      limits_(limits),
      work_dir_(std::move(work_dir)) {
  // What exists now is known: events report changes from here on.
  if (auto vms = runtime_.list(true)) {
    for (const auto& vm : *vms) known_[vm.id] = vm.status;
  }
}

Api::~Api() {
  stopHousekeeping();
}

bool Api::isQuick(const HttpRequest& request) {
  return request.method == "GET" && (request.path == "/v1/healthz" || request.path == "/healthz");
}

HttpResponse Api::handle(const HttpRequest& request) {
  HttpResponse response = route(request);
  return response;
}

HttpResponse Api::route(const HttpRequest& request) {
  const std::string& method = request.method;
  if (request.path == "/metrics") {
    if (method != "GET") return jsonError(405, "use GET /metrics");
    return metrics();
  }
  auto parts = splitPath(request.path);
  if (parts.empty() || parts[0] != "v1")
    return jsonError(404, "no such resource: " + request.path + " (the API is under /v1; see docs/API.md)");
  if (parts.size() == 2 && parts[1] == "healthz") return jsonOk(200, json{{"status", "ok"}});
  if (parts.size() < 2 || parts[1] != "sandboxes")
    return jsonError(404, "no such resource: " + request.path + " (see docs/API.md)");
  if (parts.size() == 2) {
    if (method == "POST") return createSandbox(request);
    if (method == "GET") return listSandboxes(request);
    return jsonError(405, "use GET or POST on /v1/sandboxes");
  }
  const std::string& id = parts[2];
  if (parts.size() == 3) {
    if (method == "GET") return getSandbox(id);
    if (method == "DELETE") return deleteSandbox(id);
    return jsonError(405, "use GET or DELETE on /v1/sandboxes/{id}");
  }
  if (parts.size() == 4) {
    const std::string& action = parts[3];
    if (action == "exec") {
      if (method != "POST") return jsonError(405, "use POST on /v1/sandboxes/{id}/exec");
      return exec(id, request);
    }
    if (action == "files") {
      if (method == "PUT") return putFile(id, request);
      if (method == "GET") return getFile(id, request);
      return jsonError(405, "use PUT or GET on /v1/sandboxes/{id}/files?path=P");
    }
    if (action == "pause" || action == "resume" || action == "suspend" || action == "snapshot" || action == "fork") {
      if (method != "POST") return jsonError(405, "use POST on /v1/sandboxes/{id}/" + action);
      return lifecycle(id, action, request);
    }
  }
  return jsonError(404, "no such resource: " + request.path + " (see docs/API.md)");
}

namespace {

json sandboxObject(const VmInfo& info, const std::optional<SandboxNote>& note) {
  json j = {{"id", info.id},
            {"name", info.name},
            {"status", info.status},
            {"created_at", info.created_at},
            {"cpus", info.cpus},
            {"memory_mib", info.memory_mib},
            {"cmd", info.command},
            {"ports", info.ports},
            {"labels", json::object()},
            {"source", nullptr},
            {"expires_at", nullptr}};
  if (!info.started_at.empty()) j["started_at"] = info.started_at;
  if (!info.finished_at.empty()) j["finished_at"] = info.finished_at;
  if (info.has_exit_code) j["exit_code"] = info.exit_code;
  if (!info.error.empty()) j["error_detail"] = info.error;
  if (note) {
    j["labels"] = note->labels;
    if (!note->source.empty()) j["source"] = note->source;
    if (note->expires_at > 0) j["expires_at"] = rfc3339(note->expires_at);
  }
  return j;
}

}  // namespace

void Api::noteStatus(const std::string& id, const std::string& status, const std::string& type,
                     const std::string& detail) {
  {
    std::lock_guard lock(known_mutex_);
    auto it = known_.find(id);
    if (type == "removed" || type == "expired") {
      if (it == known_.end()) return;
      known_.erase(it);
    } else {
      if (it != known_.end() && it->second == status) return;
      known_[id] = status;
    }
  }
  events_.publish(type, id, status, detail);
}

HttpResponse Api::createSandbox(const HttpRequest& request) {
  auto started = Clock::now();
  auto parsed = parseCreateRequest(request.body);
  if (!parsed) return jsonError(400, parsed.error().message());
  CreateRequest& create = *parsed;

  // Admission: running sandboxes plus those booting stay under the cap.
  static std::atomic<size_t> booting{0};
  {
    std::lock_guard lock(create_mutex_);
    auto vms = runtime_.list(false);
    size_t running = vms ? vms->size() : 0;
    if (running + booting >= limits_.max_sandboxes) {
      return jsonError(429, "at most " + std::to_string(limits_.max_sandboxes) +
                                " sandboxes run at once (microvmd --max-sandboxes); delete one first");
    }
    ++booting;
  }
  struct Release {
    ~Release() { --booting; }
  } release;

  Result<VmHandle> vm =
      create.snapshot.empty() ? runtime_.run(create.run) : runtime_.restore(create.snapshot, create.run);
  if (!vm) {
    int status = statusFor(vm.error());
    return jsonError(status == 500 ? 500 : status, "create: " + vm.error().message());
  }
  std::string id = vm->id();
  SandboxNote note;
  note.id = id;
  note.labels = create.labels;
  note.source = create.source;
  if (create.ttl_seconds > 0) note.expires_at = unixNow() + create.ttl_seconds;
  if (auto saved = book_.put(note); !saved) {
    (void)runtime_.remove(id, true);
    return jsonError(500, "create: record the sandbox: " + saved.error().message());
  }
  // 201 means exec works: the agent's ping retries while the guest boots.
  if (auto up = runtime_.ping(id); !up) {
    (void)runtime_.remove(id, true);
    book_.remove(id);
    return jsonError(up.error().code() == ErrorCode::kTimeout ? 504 : 500,
                     "create: the sandbox did not answer exec: " + up.error().message());
  }
  double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  metrics_.create_seconds.observe(seconds);
  auto info = runtime_.inspect(id);
  if (!info) return jsonError(500, "create: " + info.error().message());
  noteStatus(id, info->status, "created");
  json j = sandboxObject(*info, note);
  j["create_ms"] = seconds * 1000.0;
  HttpResponse response = jsonOk(201, j);
  response.headers.emplace_back("Location", "/v1/sandboxes/" + id);
  return response;
}

HttpResponse Api::listSandboxes(const HttpRequest& request) {
  auto filters_text = queryValues(request.query, "label");
  if (!filters_text) return jsonError(400, filters_text.error().message());
  std::vector<LabelFilter> filters;
  for (const auto& text : *filters_text) {
    auto filter = parseLabelFilter(text);
    if (!filter) return jsonError(400, filter.error().message());
    filters.push_back(*filter);
  }
  auto vms = runtime_.list(true);
  if (!vms) return jsonError(500, "list: " + vms.error().message());
  json items = json::array();
  for (const auto& vm : *vms) {
    auto note = book_.get(vm.id);
    bool match = true;
    for (const auto& filter : filters) {
      if (!note) {
        match = false;
        break;
      }
      auto it = note->labels.find(filter.key);
      if (it == note->labels.end() || (filter.value && it->second != *filter.value)) {
        match = false;
        break;
      }
    }
    if (match) items.push_back(sandboxObject(vm, note));
  }
  return jsonOk(200, json{{"sandboxes", items}});
}

HttpResponse Api::getSandbox(const std::string& id) {
  auto info = runtime_.inspect(id);
  if (!info) {
    if (info.error().code() == ErrorCode::kNotFound)
      return jsonError(404, "no sandbox " + id + " (GET /v1/sandboxes lists them)");
    return jsonError(statusFor(info.error()), info.error().message());
  }
  return jsonOk(200, sandboxObject(*info, book_.get(info->id)));
}

HttpResponse Api::deleteSandbox(const std::string& id) {
  auto info = runtime_.inspect(id);
  if (!info) {
    if (info.error().code() == ErrorCode::kNotFound)
      return jsonError(404, "no sandbox " + id + " (GET /v1/sandboxes lists them)");
    return jsonError(statusFor(info.error()), info.error().message());
  }
  if (auto removed = runtime_.remove(info->id, true); !removed) {
    return jsonError(statusFor(removed.error()), "delete: " + removed.error().message());
  }
  book_.remove(info->id);
  noteStatus(info->id, "removed", "removed");
  return jsonOk(200, json{{"id", info->id}, {"deleted", true}});
}

std::optional<HttpResponse> Api::requireRunning(const std::string& id) {
  auto info = runtime_.inspect(id);
  if (!info) {
    if (info.error().code() == ErrorCode::kNotFound)
      return jsonError(404, "no sandbox " + id + " (GET /v1/sandboxes lists them)");
    return jsonError(statusFor(info.error()), info.error().message());
  }
  if (info->status == "paused") {
    return jsonError(409, "sandbox " + id + " is paused: POST /v1/sandboxes/" + id + "/resume first");
  }
  if (info->status == "suspended") {
    return jsonError(409, "sandbox " + id + " is suspended: POST /v1/sandboxes/" + id + "/resume first");
  }
  if (info->status != "running") {
    return jsonError(409,
                     "sandbox " + id + " is " + info->status + ", not running (its command ended; create a new one)");
  }
  return std::nullopt;
}

// Running copies of a running sandbox from this instant; each child is a
// sandbox of its own with the parent's labels and expiry.
HttpResponse Api::fork(const VmInfo& parent, const HttpRequest& request) {
  auto count = parseForkCount(request.body);
  if (!count) return jsonError(400, count.error().message());
  if (parent.status != "running") {
    return jsonError(409, "fork: sandbox " + parent.id + " is " + parent.status + ", not running");
  }
  auto children = runtime_.fork(parent.id, *count);
  if (!children) {
    int status = statusFor(children.error());
    return jsonError(status == 400 ? 409 : status, "fork: " + children.error().message());
  }
  auto parent_note = book_.get(parent.id);
  json items = json::array();
  for (const auto& child : *children) {
    SandboxNote note;
    note.id = child.id();
    note.source = "fork:" + parent.id;
    if (parent_note) {
      note.labels = parent_note->labels;
      note.expires_at = parent_note->expires_at;  // the parent's deadline
    }
    if (auto saved = book_.put(note); !saved) return jsonError(500, "fork: record a child: " + saved.error().message());
    auto info = runtime_.inspect(note.id);
    if (!info) return jsonError(500, "fork: " + info.error().message());
    noteStatus(note.id, info->status, "created");
    items.push_back(sandboxObject(*info, note));
  }
  return jsonOk(201, json{{"id", parent.id}, {"children", items}});
}

HttpResponse Api::lifecycle(const std::string& id, const std::string& action, const HttpRequest& request) {
  auto info = runtime_.inspect(id);
  if (!info) {
    if (info.error().code() == ErrorCode::kNotFound)
      return jsonError(404, "no sandbox " + id + " (GET /v1/sandboxes lists them)");
    return jsonError(statusFor(info.error()), info.error().message());
  }
  const std::string& full = info->id;
  if (action == "fork") return fork(*info, request);
  if (action == "snapshot") {
    auto name = parseSnapshotName(request.body);
    if (!name) return jsonError(400, name.error().message());
    if (auto saved = runtime_.snapshot(full, *name); !saved) {
      int status = statusFor(saved.error());
      return jsonError(status == 400 ? 409 : status, "snapshot: " + saved.error().message());
    }
    return jsonOk(201, json{{"id", full}, {"snapshot", *name}});
  }
  Result<void> done = success();
  if (action == "pause") {
    if (info->status == "paused") return jsonOk(200, sandboxObject(*info, book_.get(full)));
    done = runtime_.pause(full);
  } else if (action == "resume") {
    if (info->status == "running") return jsonOk(200, sandboxObject(*info, book_.get(full)));
    done = runtime_.resume(full);
  } else if (action == "suspend") {
    done = runtime_.suspend(full);
  }
  if (!done) {
    int status = statusFor(done.error());
    // The library says kInvalidArgument for "not in a state for this".
    return jsonError(status == 400 ? 409 : status, action + ": " + done.error().message());
  }
  auto now = runtime_.inspect(full);
  if (!now) return jsonError(500, now.error().message());
  noteStatus(full, now->status, "status");
  return jsonOk(200, sandboxObject(*now, book_.get(full)));
}

HttpResponse Api::metrics() {
  std::ostringstream out;
  out << metrics_.render();
  std::map<std::string, int> by_state{{"created", 0}, {"running", 0}, {"paused", 0}, {"suspended", 0}, {"exited", 0}};
  uint64_t allowed = 0, refused = 0, dropped = 0;
  if (auto vms = runtime_.list(true)) {
    for (const auto& vm : *vms) {
      ++by_state[vm.status];
      auto count = [&](const char* key) {
        auto it = vm.net_counters.find(key);
        return it == vm.net_counters.end() ? uint64_t{0} : it->second;
      };
      allowed += count("egress_connections_allowed");
      refused += count("egress_connections_refused");
      dropped += count("egress_frames_dropped");
    }
  }
  out << "# HELP microvmd_sandboxes Sandboxes (VMs of the data dir) by state.\n# TYPE microvmd_sandboxes gauge\n";
  for (const auto& [state, n] : by_state) out << "microvmd_sandboxes{state=\"" << state << "\"} " << n << "\n";
  out << "# HELP microvmd_egress_decisions Egress filter decisions, summed over the sandboxes that exist now "
         "(each VM's counters, about 1 s old).\n# TYPE microvmd_egress_decisions gauge\n"
      << "microvmd_egress_decisions{decision=\"allowed\"} " << allowed << "\n"
      << "microvmd_egress_decisions{decision=\"refused\"} " << refused << "\n"
      << "microvmd_egress_decisions{decision=\"frames_dropped\"} " << dropped << "\n";
  out << "# HELP microvmd_event_subscribers Open GET /v1/events streams.\n# TYPE microvmd_event_subscribers gauge\n"
      << "microvmd_event_subscribers " << events_.subscribers() << "\n";
  HttpResponse response;
  response.content_type = "text/plain; version=0.0.4";
  response.body = out.str();
  return response;
}

void Api::housekeep() {
  reapRunners();
  int64_t now = unixNow();
  for (const auto& note : book_.all()) {
    if (note.expires_at == 0 || note.expires_at > now) continue;
    auto removed = runtime_.remove(note.id, true);
    if (removed || removed.error().code() == ErrorCode::kNotFound) {
      book_.remove(note.id);
      noteStatus(note.id, "removed", "expired", "ttl_seconds passed");
    }
  }
  auto vms = runtime_.list(true);
  if (!vms) return;
  std::set<std::string> present;
  for (const auto& vm : *vms) {
    present.insert(vm.id);
    bool fresh;
    {
      std::lock_guard lock(known_mutex_);
      fresh = !known_.contains(vm.id);
    }
    noteStatus(vm.id, vm.status, fresh ? "created" : "status");
  }
  std::vector<std::string> gone;
  {
    std::lock_guard lock(known_mutex_);
    for (const auto& [id, status] : known_) {
      if (!present.contains(id)) gone.push_back(id);
    }
  }
  for (const auto& id : gone) noteStatus(id, "removed", "removed");
  // Notes of sandboxes deleted elsewhere (the CLI's rm) go too.
  for (const auto& note : book_.all()) {
    if (!present.contains(note.id)) book_.remove(note.id);
  }
}

void Api::startHousekeeping() {
  housekeeping_ = std::thread([this] {
    std::unique_lock lock(housekeeping_mutex_);
    while (!housekeeping_stop_) {
      lock.unlock();
      housekeep();
      lock.lock();
      // Zombie runners are reaped often (a remove waits for its runner to
      // go); the rest of the housekeeping runs every second.
      for (int i = 0; i < 5 && !housekeeping_stop_; ++i) {
        housekeeping_wake_.wait_for(lock, std::chrono::milliseconds(200), [this] { return housekeeping_stop_; });
        lock.unlock();
        reapRunners();
        lock.lock();
      }
    }
  });
}

void Api::stopHousekeeping() {
  {
    std::lock_guard lock(housekeeping_mutex_);
    housekeeping_stop_ = true;
  }
  housekeeping_wake_.notify_all();
  if (housekeeping_.joinable()) housekeeping_.join();
}

fs::path Api::scratchDir() {
  fs::path dir = work_dir_ / ("scratch-" + std::to_string(::getpid()) + "-" + std::to_string(scratch_counter_++));
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directories(dir, ec);
  fs::permissions(dir, fs::perms::owner_all, ec);
  return dir;
}

}  // namespace microvm::daemon
