// Helpers the agent's host-side tests share (guest/agent_test.cc,
// guest/agent_mux_test.cc).
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

namespace microvm::guest {

// A whole file's bytes ("" if it cannot be read).
inline std::string readAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// `size` pseudo-random bytes, the same for the same seed.
inline std::string randomBytes(size_t size, unsigned seed) {
  std::mt19937_64 generator(seed);
  std::string data(size, '\0');
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t word = generator();
    std::memcpy(&data[i], &word, 8);
  }
  return data;
}

}  // namespace microvm::guest
