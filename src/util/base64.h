// Standard base64 (RFC 4648, with padding): JSON bodies of `gad serve`, images inlined in HTML reports.
#pragma once

#include <optional>
#include <string>

namespace gad {

std::string base64_encode(const std::string& bytes);
// Strict decode: ignores ASCII whitespace; nullopt on any other non-alphabet byte or bad padding.
std::optional<std::string> base64_decode(const std::string& text);

}  // namespace gad
