// The current time as text, for records that people and programs read back.
#pragma once

#include <string>

namespace gad {

// UTC, ISO 8601 with milliseconds: 2026-12-07T19:20:22.845Z.
std::string utc_now_iso_ms();

}  // namespace gad
