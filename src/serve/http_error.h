// HttpError — a request problem with its HTTP status and a short reason label (counted in
// /metrics as gad_rejected_requests_total{reason}); the server answers {"error": what()}.
#pragma once

#include <stdexcept>
#include <string>

#include <gad/gad.hpp>

namespace gad::serve {

struct HttpError : std::runtime_error {
  int status;
  std::string reason;  // e.g. "too_many_pixels", "queue_full", "bad_image"
  HttpError(int s, const std::string& reason_label, const std::string& message)
      : std::runtime_error(message), status(s), reason(reason_label) {}
};

// The HTTP status of a gad::Error by its kind: the client's fault (400, 404, 413, 415) or ours (500).
inline int http_status(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::NotFound: return 404;
    case ErrorKind::ResourceLimit: return 413;
    case ErrorKind::Unsupported: return 415;
    case ErrorKind::Io: return 500;
    case ErrorKind::InvalidArgument:
    case ErrorKind::CorruptFile: break;
  }
  return 400;
}

}  // namespace gad::serve
