// EventLoop: the single-threaded epoll loop that a runner's subsystems share.
//
// Each subsystem (the guest control channel, the vsock backend, the network
// stack) registers its fds and one-shot timers here; nothing else blocks.
//
//   auto loop = EventLoop::create();
//   loop->add(fd, EPOLLIN, [&](uint32_t events) { ... });
//   auto timer = loop->addTimer(std::chrono::milliseconds(50), [&] { ... });
//   while (!done) loop->runOnce();
//
// Handlers may add, modify or remove any registration, including their own,
// while they run: a removed fd's pending events are dropped.
//
// A library with a poll-style API (libslirp: fill a poll set, sleep, then
// report what is ready) hooks in with addBeforeWait: the hook runs before
// every wait and bounds how long the loop may sleep.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <unordered_map>

#include "base/unique_fd.h"
#include "microvm/result.h"

namespace microvm {

class EventLoop {
 public:
  using Handler = std::function<void(uint32_t events)>;
  using TimerId = uint64_t;
  using Clock = std::chrono::steady_clock;

  static Result<EventLoop> create();

  EventLoop(EventLoop&&) = default;
  EventLoop& operator=(EventLoop&&) = default;

  // Watches `fd` (owned by the caller) for `events` (EPOLLIN, EPOLLOUT, ...).
  Result<void> add(int fd, uint32_t events, Handler handler);
  Result<void> modify(int fd, uint32_t events);
  // Stops watching `fd`; a no-op if it is not watched. Call before closing it.
  void remove(int fd);
  bool watching(int fd) const { return handlers_.contains(fd); }

  // Runs `callback` once, `delay` from now. Returns an id for cancelTimer.
  TimerId addTimer(std::chrono::milliseconds delay, std::function<void()> callback);
  TimerId addTimerAt(Clock::time_point deadline, std::function<void()> callback);
  void cancelTimer(TimerId id);

  // Runs `hook` at the start of every runOnce, before the wait. It returns the
  // longest the loop may then sleep (negative: no limit of its own).
  using BeforeWait = std::function<std::chrono::milliseconds()>;
  using HookId = uint64_t;
  HookId addBeforeWait(BeforeWait hook);
  void removeBeforeWait(HookId id);

  // Waits for at most `max_wait` (forever if negative) or the next timer, then
  // dispatches what is ready. EINTR is not an error.
  Result<void> runOnce(std::chrono::milliseconds max_wait = std::chrono::milliseconds(-1));

 private:
  EventLoop() = default;
  struct Registration {
    uint64_t token;
    Handler handler;
  };
  struct Timer {
    TimerId id;
    std::function<void()> callback;
  };

  UniqueFd epoll_;
  uint64_t next_token_ = 1;
  std::unordered_map<int, Registration> handlers_;
  std::unordered_map<uint64_t, int> token_fds_;
  std::multimap<Clock::time_point, Timer> timers_;
  std::unordered_map<TimerId, Clock::time_point> timer_deadlines_;
  std::map<HookId, BeforeWait> before_wait_;
};

}  // namespace microvm
