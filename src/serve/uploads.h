// Request decoding for `gad serve`: the uploads (images still encoded, class, far) of a request,
// from its body, Content-Type and the multipart parts httplib parsed, and their checks before
// anything is decoded. No socket and no model here, so the fuzz target drives the same code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace httplib {
struct Request;
}

namespace gad::serve {

// Uploaded images (still encoded) and the text fields that came with them. `bytes` views the
// request body or `owned` (base64-decoded JSON images; a deque never moves its strings).
struct Upload {
  std::string name;
  std::string_view bytes;
};
struct Uploads {
  std::vector<Upload> images;
  std::deque<std::string> owned;
  std::string class_name;
  std::optional<std::string> far;
};

enum class Route { Register, Score, Calibrate };

// The uploads of a request, by Content-Type: multipart/form-data and application/json everywhere,
// a raw image body (image/*, application/octet-stream) for scoring. HttpError 400 for a malformed
// body, 415 for any other Content-Type. The uploads view `req`, which must outlive them.
Uploads read_uploads(const httplib::Request& req, Route route);

// The .gadref file of an import request: the raw body (application/octet-stream) or the
// multipart field "file". 415 for another Content-Type, 400 when the file is missing or empty.
// The result is part of `req`.
const std::string& read_refset_upload(const httplib::Request& req);

// "image I ('NAME')", for messages.
std::string image_name(size_t i, const Upload& u);

// The count and every image header, before anything is decoded: 400 for a wrong count or bytes
// that are not an image, 413 for an image above `max_pixels`. Callers that admit a request as one
// unit cap `most` at the queue capacity (a larger one could never be admitted); calibration,
// which scores in chunks, does not.
void check_images(const Uploads& u, int most, const char* what, int64_t max_pixels);

// The false-alarm rate of a calibrate request: a number in (0, 1), else HttpError 400.
double parse_far(const std::string& text);

}  // namespace gad::serve
