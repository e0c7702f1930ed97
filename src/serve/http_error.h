// HttpError — a request problem with its HTTP status and a short reason label (counted in
// /metrics as gad_rejected_requests_total{reason}); the server answers {"error": what()}.
#pragma once

#include <stdexcept>
#include <string>

namespace gad::serve {

struct HttpError : std::runtime_error {
  int status;
  std::string reason;  // e.g. "too_many_pixels", "queue_full", "bad_image"
  HttpError(int s, const std::string& reason_label, const std::string& message)
      : std::runtime_error(message), status(s), reason(reason_label) {}
};

}  // namespace gad::serve
