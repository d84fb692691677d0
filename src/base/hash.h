// SHA-256 over byte streams (OpenSSL EVP), hex-encoded.
//
//   Sha256 hasher;
//   hasher.update("abc");
//   std::string hex = hasher.finishHex();
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace microvm {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void update(std::string_view bytes);
  std::string finishHex();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

std::string sha256Hex(std::string_view bytes);

// n random bytes from getrandom(2), hex-encoded (2n characters).
std::string randomHex(size_t bytes);

}  // namespace microvm
