#include "base/clock.h"

#include <cstdio>
#include <ctime>

namespace microvm {

std::string nowRfc3339() {
  timespec now{};
  ::clock_gettime(CLOCK_REALTIME, &now);
  tm utc{};
  ::gmtime_r(&now.tv_sec, &utc);
  char buffer[64];
  size_t n = std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(buffer + n, sizeof buffer - n, ".%09ldZ", now.tv_nsec);
  return buffer;
}

}  // namespace microvm
