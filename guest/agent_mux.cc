// The agent over the microvm.agent virtio-serial port: the guest's end of
// the stream multiplexer (agent/stream_mux.h). Each stream the host opens to
// kAgentPort becomes one socketpair, whose far end a forked process serves
// exactly as it would serve an accepted vsock connection
// (serveAgentConnection); this process only moves bytes between the port
// and the socketpairs, within the mux's windows.
//
// The port is the host's to close: while the runner is gone (it died, or the
// VM is being restored by a new one) the port reports a hang-up, and every
// session of the old runner is ended; a restored guest learns the same from
// the new runner's HELLO (a new generation).
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <map>
#include <string>
#include <vector>

#include "agent/stream_mux.h"
#include "base/eintr.h"
#include "guest/agent.h"
#include "guest/agent_operations.h"
#include "guest/support.h"

namespace microvm::guest {
namespace {

using agent::StreamMuxEndpoint;
using Kind = agent::StreamMuxEvent::Kind;

constexpr size_t kReadChunk = 64 * 1024;
// How often a port whose host side is closed is looked at again.
constexpr int kHostDownPollMs = 100;

struct Session {
  UniqueFd local;              // our end of the socketpair
  std::string to_local;        // from the host, not yet written
  bool host_eof = false;       // the host shut down its side
  bool local_eof = false;      // the session's process shut down its side
  bool shut_local = false;     // shutdown(SHUT_WR) done
};

class MuxServer {
 public:
  MuxServer(int port, const AgentOptions& options)
      : port_(port), options_(options), mux_(StreamMuxEndpoint::Role::kGuest, 0) {}

  Error run(int child_signals) {
    for (;;) {
      std::vector<pollfd> watch;
      std::vector<uint32_t> ids;
      watch.push_back({child_signals, POLLIN, 0});
      if (!host_down_) {
        short events = POLLIN;
        if (!mux_.pendingOutput().empty()) events |= POLLOUT;
        watch.push_back({port_, events, 0});
      }
      for (auto& [id, session] : sessions_) {
        short events = 0;
        if (!session.local_eof && mux_.sendRoom(id) > 0) events |= POLLIN;
        if (!session.to_local.empty()) events |= POLLOUT;
        watch.push_back({session.local.get(), events, 0});
        ids.push_back(id);
      }
      int timeout = host_down_ ? kHostDownPollMs : -1;
      if (retryOnEintr([&] { return ::poll(watch.data(), watch.size(), timeout); }) < 0) {
        return systemError("poll");
      }
      if (watch[0].revents != 0) reap(child_signals);
      size_t first_session = 1;
      if (host_down_) {
        checkHostBack();
      } else {
        first_session = 2;
        onPort(watch[1].revents);
      }
      for (size_t i = 0; i < ids.size(); ++i) {
        if (watch[first_session + i].revents != 0) onLocal(ids[i], watch[first_session + i].revents);
      }
      handleEvents(child_signals);
      flushPort();
    }
  }

 private:
  void reap(int child_signals) {
    signalfd_siginfo info[8];
    while (::read(child_signals, info, sizeof info) > 0) {
    }
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  void hostGone() {
    agentLog("agent channel: the host disconnected");
    host_down_ = true;
    if (mux_.streamCount() > 0 || mux_.bufferedInput() > 0 || mux_.live()) mux_.reset("the host disconnected");
  }

  void checkHostBack() {
    pollfd watch{port_, POLLIN, 0};
    if (::poll(&watch, 1, 0) >= 0 && (watch.revents & POLLHUP) == 0) host_down_ = false;
  }

  void onPort(short revents) {
    if ((revents & POLLOUT) != 0) flushPort();
    if ((revents & POLLIN) != 0) {
      for (int round = 0; round < 4; ++round) {
        char buffer[kReadChunk];
        ssize_t got = ::read(port_, buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0 && errno == EAGAIN) break;
        if (got <= 0) return hostGone();
        mux_.receive(std::string_view(buffer, static_cast<size_t>(got)));
      }
      return;
    }
    if ((revents & (POLLHUP | POLLERR)) != 0) hostGone();
  }

  void onLocal(uint32_t id, short revents) {
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    Session& session = it->second;
    if ((revents & POLLOUT) != 0 || ((revents & (POLLHUP | POLLERR)) != 0 && !session.to_local.empty())) {
      flushLocal(id, session);
    }
    if ((revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !session.local_eof) {
      size_t room = std::min(mux_.sendRoom(id), kReadChunk);
      if (room == 0) return;
      char buffer[kReadChunk];
      ssize_t got = retryOnEintr([&] { return ::read(session.local.get(), buffer, room); });
      if (got < 0 && errno == EAGAIN) return;
      if (got <= 0) {
        session.local_eof = true;
        (void)mux_.shutdownWrite(id);
        return;
      }
      (void)mux_.send(id, std::string_view(buffer, static_cast<size_t>(got)));
    }
  }

  void flushLocal(uint32_t id, Session& session) {
    size_t written = 0;
    while (written < session.to_local.size()) {
      ssize_t n = ::send(session.local.get(), session.to_local.data() + written, session.to_local.size() - written,
                         MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) break;
      if (n <= 0) {
        // The session's process is gone: the host's bytes have no reader.
        (void)mux_.resetStream(id, "the agent's session ended");
        sessions_.erase(id);
        return;
      }
      written += static_cast<size_t>(n);
    }
    session.to_local.erase(0, written);
    if (written > 0) (void)mux_.consume(id, written);
    if (session.to_local.empty() && session.host_eof && !session.shut_local) {
      session.shut_local = true;
      ::shutdown(session.local.get(), SHUT_WR);
    }
  }

  void open(uint32_t id, uint32_t port, int child_signals) {
    if (port != agent::kAgentPort) {
      (void)mux_.refuse(id, "nothing listens on port " + std::to_string(port));
      return;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      (void)mux_.refuse(id, "socketpair: " + describeErrno(errno));
      return;
    }
    UniqueFd local(pair[0]);
    UniqueFd remote(pair[1]);
    pid_t pid = ::fork();
    if (pid < 0) {
      (void)mux_.refuse(id, "fork: " + describeErrno(errno));
      return;
    }
    if (pid == 0) {
      int code = 0;
      try {
        // Only its own end: another session's end held here would keep that
        // session from ever seeing EOF.
        ::close(port_);
        ::close(child_signals);
        local.reset();
        for (auto& [other, session] : sessions_) session.local.reset();
        serveAgentConnection(std::move(remote), options_);
      } catch (...) {
        code = 1;
      }
      ::_exit(code);
    }
    remote.reset();
    if (!setNonBlocking(local.get()).ok() || !mux_.accept(id).ok()) {
      (void)mux_.resetStream(id, "the agent could not take the stream");
      return;
    }
    sessions_[id].local = std::move(local);
  }

  void handleEvents(int child_signals) {
    for (;;) {
      auto events = mux_.takeEvents();
      if (events.empty()) return;
      for (auto& event : events) {
        auto it = sessions_.find(event.stream);
        switch (event.kind) {
          case Kind::kOpenRequested:
            open(event.stream, event.port, child_signals);
            break;
          case Kind::kData:
            if (it == sessions_.end()) break;
            it->second.to_local += event.text;
            flushLocal(event.stream, it->second);
            break;
          case Kind::kShutdown:
            if (it == sessions_.end()) break;
            it->second.host_eof = true;
            flushLocal(event.stream, it->second);
            break;
          case Kind::kClosed:
          case Kind::kReset:
            // Closing our end ends the session: its process reads EOF or
            // gets EPIPE and exits.
            if (it != sessions_.end()) sessions_.erase(it);
            break;
          case Kind::kFailed:
            agentLog("agent channel: " + event.text);
            break;
          default:
            break;
        }
      }
    }
  }

  void flushPort() {
    if (host_down_) return;
    for (;;) {
      std::string_view pending = mux_.pendingOutput();
      if (pending.empty()) return;
      ssize_t n = ::write(port_, pending.data(), pending.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && errno == EAGAIN) return;
      if (n <= 0) return hostGone();
      mux_.outputWritten(static_cast<size_t>(n));
    }
  }

  int port_;
  const AgentOptions& options_;
  StreamMuxEndpoint mux_;
  std::map<uint32_t, Session> sessions_;
  bool host_down_ = false;
};

}  // namespace

Error serveAgentOverMux(int port_fd, const AgentOptions& options) {
  ::signal(SIGPIPE, SIG_IGN);
  auto child_signals = blockChildSignals();
  if (!child_signals.ok()) return child_signals.error();
  // A host that is live already (this agent restarted) fails on the resync
  // header this padding ends in, and greets us again; a host still waiting
  // for its HELLO's answer skips it.
  std::string padding(agent::kMuxResyncPadding, '\0');
  for (std::string_view rest = padding; !rest.empty();) {
    ssize_t n = ::write(port_fd, rest.data(), rest.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      pollfd watch{port_fd, POLLOUT, 0};
      if (::poll(&watch, 1, 1000) <= 0 || (watch.revents & POLLOUT) == 0) break;  // the host is not there
      continue;
    }
    if (n <= 0) break;
    rest.remove_prefix(static_cast<size_t>(n));
  }
  MuxServer server(port_fd, options);
  return server.run(child_signals->get());
}

}  // namespace microvm::guest
