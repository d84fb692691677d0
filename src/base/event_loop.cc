#include "base/event_loop.h"

#include <cerrno>
#include <climits>
#include <vector>

namespace microvm {

Result<EventLoop> EventLoop::create() {
  EventLoop loop;
  loop.epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!loop.epoll_.valid()) return Error::fromErrno("epoll_create1");
  return loop;
}

Result<void> EventLoop::add(int fd, uint32_t events, Handler handler) {
  if (handlers_.contains(fd)) return Error(ErrorCode::kInvalidArgument, "fd " + std::to_string(fd) + " is watched already");
  uint64_t token = next_token_++;
  epoll_event event{};
  event.events = events;
  event.data.u64 = token;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &event) != 0) return Error::fromErrno("epoll_ctl add");
  handlers_.emplace(fd, Registration{token, std::move(handler)});
  token_fds_.emplace(token, fd);
  return success();
}

Result<void> EventLoop::modify(int fd, uint32_t events) {
  auto it = handlers_.find(fd);
  if (it == handlers_.end()) return Error(ErrorCode::kInvalidArgument, "fd " + std::to_string(fd) + " is not watched");
  epoll_event event{};
  event.events = events;
  event.data.u64 = it->second.token;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, fd, &event) != 0) return Error::fromErrno("epoll_ctl mod");
  return success();
}

void EventLoop::remove(int fd) {
  auto it = handlers_.find(fd);
  if (it == handlers_.end()) return;
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  token_fds_.erase(it->second.token);
  handlers_.erase(it);
}

EventLoop::TimerId EventLoop::addTimer(std::chrono::milliseconds delay, std::function<void()> callback) {
  return addTimerAt(Clock::now() + delay, std::move(callback));
}

EventLoop::TimerId EventLoop::addTimerAt(Clock::time_point deadline, std::function<void()> callback) {
  TimerId id = next_token_++;
  timers_.emplace(deadline, Timer{id, std::move(callback)});
  timer_deadlines_.emplace(id, deadline);
  return id;
}

void EventLoop::cancelTimer(TimerId id) {
  auto deadline = timer_deadlines_.find(id);
  if (deadline == timer_deadlines_.end()) return;
  auto [first, last] = timers_.equal_range(deadline->second);
  for (auto it = first; it != last; ++it) {
    if (it->second.id == id) {
      timers_.erase(it);
      break;
    }
  }
  timer_deadlines_.erase(deadline);
}

EventLoop::HookId EventLoop::addBeforeWait(BeforeWait hook) {
  HookId id = next_token_++;
  before_wait_.emplace(id, std::move(hook));
  return id;
}

void EventLoop::removeBeforeWait(HookId id) { before_wait_.erase(id); }

Result<void> EventLoop::runOnce(std::chrono::milliseconds max_wait) {
  int timeout = max_wait.count() < 0 ? -1 : static_cast<int>(max_wait.count());
  // Iterated over a snapshot of the ids: a hook may remove itself or another.
  std::vector<HookId> hooks;
  for (const auto& entry : before_wait_) hooks.push_back(entry.first);
  for (HookId id : hooks) {
    auto hook = before_wait_.find(id);
    if (hook == before_wait_.end()) continue;
    BeforeWait copy = hook->second;
    auto limit = copy().count();
    if (limit >= 0 && (timeout < 0 || limit < timeout)) timeout = static_cast<int>(std::min<long long>(limit, INT32_MAX));
  }
  if (!timers_.empty()) {
    auto until = std::chrono::ceil<std::chrono::milliseconds>(timers_.begin()->first - Clock::now()).count();
    if (until < 0) until = 0;
    if (timeout < 0 || until < timeout) timeout = static_cast<int>(until);
  }
  epoll_event events[64];
  int ready = ::epoll_wait(epoll_.get(), events, 64, timeout);
  if (ready < 0 && errno != EINTR) return Error::fromErrno("epoll_wait");
  for (int i = 0; i < ready; ++i) {
    // Looked up per event: an earlier handler may have removed this one.
    auto fd = token_fds_.find(events[i].data.u64);
    if (fd == token_fds_.end()) continue;
    Handler handler = handlers_.at(fd->second).handler;  // a copy survives self-removal
    handler(events[i].events);
  }
  // Timers due now run once each, one at a time so that a callback can cancel
  // another; timers added by callbacks wait for the next round.
  auto now = Clock::now();
  TimerId first_new = next_token_;
  while (!timers_.empty() && timers_.begin()->first <= now && timers_.begin()->second.id < first_new) {
    Timer timer = std::move(timers_.begin()->second);
    timers_.erase(timers_.begin());
    timer_deadlines_.erase(timer.id);
    timer.callback();
  }
  return success();
}

}  // namespace microvm
