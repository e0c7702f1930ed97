// Standard base64 (RFC 4648, with padding) for JSON bodies of `gad serve`.
#pragma once

#include <optional>
#include <string>

namespace gad::serve {

std::string base64_encode(const std::string& bytes);
// Strict decode: ignores ASCII whitespace; nullopt on any other non-alphabet byte or bad padding.
std::optional<std::string> base64_decode(const std::string& text);

}  // namespace gad::serve
