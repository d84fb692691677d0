#include "events.h"

#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

namespace microvm::daemon {

namespace {

std::string nowRfc3339() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&now, &tm);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

}  // namespace

uint64_t EventBus::subscribe(Subscriber subscriber) {
  std::lock_guard lock(mutex_);
  uint64_t id = next_++;
  subscribers_[id] = std::move(subscriber);
  return id;
}

void EventBus::unsubscribe(uint64_t id) {
  std::lock_guard lock(mutex_);
  subscribers_.erase(id);
}

size_t EventBus::subscribers() const {
  std::lock_guard lock(mutex_);
  return subscribers_.size();
}

void EventBus::publish(const std::string& type, const std::string& id, const std::string& status,
                       const std::string& detail) {
  nlohmann::json j = {{"type", type}, {"id", id}, {"status", status}, {"time", nowRfc3339()}};
  if (!detail.empty()) j["detail"] = detail;
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::lock_guard lock(mutex_);
  for (auto& [key, subscriber] : subscribers_) subscriber(line);
}

void Histogram::observe(double seconds) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    if (seconds <= kBuckets[i]) ++counts_[i];
  }
  ++count_;
  sum_ += seconds;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard lock(mutex_);
  std::ostringstream out;
  out << "# HELP " << name << " " << help << "\n# TYPE " << name << " histogram\n";
  for (size_t i = 0; i < kBuckets.size(); ++i) {
    out << name << "_bucket{le=\"" << kBuckets[i] << "\"} " << counts_[i] << "\n";
  }
  out << name << "_bucket{le=\"+Inf\"} " << count_ << "\n";
  out << name << "_sum " << sum_ << "\n" << name << "_count " << count_ << "\n";
  return out.str();
}

void Metrics::countRequest(const std::string& method, int code) {
  std::lock_guard lock(mutex_);
  ++requests_[{method, code}];
}

std::string Metrics::render() const {
  std::ostringstream out;
  out << create_seconds.render("microvmd_create_seconds", "Time from POST /v1/sandboxes to a sandbox answering exec.");
  out << exec_seconds.render("microvmd_exec_seconds", "Time of POST /v1/sandboxes/{id}/exec, command included.");
  out << "# HELP microvmd_http_requests_total API requests by method and status code.\n"
         "# TYPE microvmd_http_requests_total counter\n";
  std::lock_guard lock(mutex_);
  for (const auto& [key, count] : requests_) {
    out << "microvmd_http_requests_total{method=\"" << key.first << "\",code=\"" << key.second << "\"} " << count
        << "\n";
  }
  return out.str();
}

}  // namespace microvm::daemon
