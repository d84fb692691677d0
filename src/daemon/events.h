// Lifecycle events for GET /v1/events (server-sent events) and the daemon's
// metrics (GET /metrics, Prometheus text). Subscribers are callbacks that
// must not block: the server's hand the event to the connection's own queue,
// which is bounded.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace microvm::daemon {

class EventBus {
 public:
  using Subscriber = std::function<void(const std::string& json_line)>;
  uint64_t subscribe(Subscriber subscriber);
  void unsubscribe(uint64_t id);
  // {"type": TYPE, "id": ID, "status": STATUS, "time": RFC3339, ...extra}
  void publish(const std::string& type, const std::string& id, const std::string& status,
               const std::string& detail = "");
  size_t subscribers() const;

 private:
  mutable std::mutex mutex_;
  uint64_t next_ = 1;
  std::map<uint64_t, Subscriber> subscribers_;
};

// A Prometheus histogram of seconds.
class Histogram {
 public:
  static constexpr std::array<double, 12> kBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  void observe(double seconds);
  std::string render(const std::string& name, const std::string& help) const;

 private:
  mutable std::mutex mutex_;
  std::array<uint64_t, kBuckets.size()> counts_{};
  uint64_t count_ = 0;
  double sum_ = 0;
};

class Metrics {
 public:
  Histogram create_seconds;
  Histogram exec_seconds;
  void countRequest(const std::string& method, int code);
  // The counters' lines (requests); the caller adds the gauges it computes.
  std::string render() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> requests_;
};

}  // namespace microvm::daemon
