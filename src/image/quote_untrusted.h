// quoteUntrusted(): untrusted text (a tar entry name, a reference typed by a user, a
// field from a registry) made safe to put in an error message: in double
// quotes, control and non-ASCII bytes as \xNN, long text cut short, so that a
// hostile name cannot forge log lines or drown the message.
//
//   return Error(ErrorCode::kProtocol, "entry " + quoteUntrusted(name) + ": ...");
#pragma once

#include <string>
#include <string_view>

namespace microvm {

inline std::string quoteUntrusted(std::string_view text, size_t max_length = 200) {
  std::string out = "\"";
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == max_length) {
      out += "...";
      break;
    }
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      constexpr std::string_view kHexDigits = "0123456789abcdef";
      out += "\\x";
      out += kHexDigits[c >> 4];
      out += kHexDigits[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace microvm
