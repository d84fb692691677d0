#include "base/event_loop.h"

#include <gtest/gtest.h>
#include <sys/socket.h>

namespace microvm {
namespace {

using std::chrono::milliseconds;

TEST(EventLoop, DispatchesReadableFd) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  UniqueFd a(pair[0]), b(pair[1]);
  int calls = 0;
  ASSERT_TRUE(loop->add(a.get(), EPOLLIN, [&](uint32_t events) {
    ++calls;
    EXPECT_TRUE(events & EPOLLIN);
    char c;
    EXPECT_EQ(::read(a.get(), &c, 1), 1);
  }));
  ASSERT_EQ(::write(b.get(), "x", 1), 1);
  ASSERT_TRUE(loop->runOnce(milliseconds(1000)));
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(loop->add(a.get(), EPOLLIN, [](uint32_t) {}));  // twice is refused
}

TEST(EventLoop, HandlerMayRemoveAnotherPendingFd) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int p1[2], p2[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, p1), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, p2), 0);
  UniqueFd a1(p1[0]), b1(p1[1]), a2(p2[0]), b2(p2[1]);
  int calls = 0;
  auto remove_other = [&](int other) { return [&, other](uint32_t) { ++calls; loop->remove(other); }; };
  ASSERT_TRUE(loop->add(a1.get(), EPOLLIN, remove_other(a2.get())));
  ASSERT_TRUE(loop->add(a2.get(), EPOLLIN, remove_other(a1.get())));
  ASSERT_EQ(::write(b1.get(), "x", 1), 1);
  ASSERT_EQ(::write(b2.get(), "x", 1), 1);
  ASSERT_TRUE(loop->runOnce(milliseconds(1000)));
  EXPECT_EQ(calls, 1);
}

TEST(EventLoop, TimersFireInOrderAndCanBeCancelled) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  std::string order;
  loop->addTimer(milliseconds(20), [&] { order += "b"; });
  loop->addTimer(milliseconds(0), [&] { order += "a"; });
  auto cancelled = loop->addTimer(milliseconds(10), [&] { order += "x"; });
  loop->cancelTimer(cancelled);
  for (int i = 0; i < 10 && order.size() < 2; ++i) ASSERT_TRUE(loop->runOnce(milliseconds(100)));
  EXPECT_EQ(order, "ab");
}

TEST(EventLoop, TimerCallbackMayCancelAnotherDueTimer) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int fired = 0;
  EventLoop::TimerId second = 0;
  loop->addTimer(milliseconds(0), [&] { ++fired; loop->cancelTimer(second); });
  second = loop->addTimer(milliseconds(0), [&] { ++fired; });
  ASSERT_TRUE(loop->runOnce(milliseconds(100)));
  ASSERT_TRUE(loop->runOnce(milliseconds(10)));
  EXPECT_EQ(fired, 1);
}

TEST(EventLoop, BeforeWaitHookRunsEachRoundAndBoundsTheWait) {
  auto loop = EventLoop::create();
  ASSERT_TRUE(loop);
  int calls = 0;
  auto id = loop->addBeforeWait([&] {
    ++calls;
    return milliseconds(10);
  });
  auto start = EventLoop::Clock::now();
  ASSERT_TRUE(loop->runOnce());  // no fds, no timers: only the hook's 10 ms bound ends the wait
  ASSERT_TRUE(loop->runOnce(milliseconds(5000)));
  EXPECT_EQ(calls, 2);
  EXPECT_LT(EventLoop::Clock::now() - start, milliseconds(2000));
  loop->removeBeforeWait(id);
  ASSERT_TRUE(loop->runOnce(milliseconds(1)));
  EXPECT_EQ(calls, 2);
}

}  // namespace
}  // namespace microvm
