// `gad serve` request decoding without a socket: a request's Content-Type and body (JSON with
// base64 images, a raw image body, or multipart parts as httplib hands them over) become uploads
// (serve/uploads.h), then the count and every image header are checked against the limits and
// the false-alarm rate is parsed, exactly as the register / score / calibrate handlers do.
//
// Input: one selector byte (route, body kind), then parts cut at kPartSeparator:
//   JSON:      the body;
//   raw:       the Content-Type value, the body;
//   multipart: per field "NAME\nFILENAME\nCONTENT" (httplib's own multipart parser is not gad's code).
#include "fuzz_support.h"
#include "serve/http.h"
#include "serve/http_error.h"
#include "serve/uploads.h"

namespace {

using gad::serve::Route;

constexpr int kMostImages = 8;
constexpr int64_t kMaxPixels = 4'000'000;

httplib::Request make_request(uint8_t kind, const std::vector<std::string>& parts) {
  httplib::Request req;
  req.method = "POST";
  if (kind == 0) {
    req.headers.emplace("Content-Type", "application/json");
    req.body = parts[0];
  } else if (kind == 1) {
    req.headers.emplace("Content-Type", "multipart/form-data; boundary=gad");
    for (const auto& p : parts) {
      const size_t a = p.find('\n'), b = a == std::string::npos ? a : p.find('\n', a + 1);
      httplib::MultipartFormData f;
      f.name = p.substr(0, a);
      if (b != std::string::npos) {
        f.filename = p.substr(a + 1, b - a - 1);
        f.content = p.substr(b + 1);
      }
      req.files.emplace(f.name, f);
    }
  } else {
    req.headers.emplace("Content-Type", parts[0]);
    if (parts.size() > 1) req.body = parts[1];
  }
  return req;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const Route route = static_cast<Route>(data[0] % 3);
  const uint8_t kind = static_cast<uint8_t>((data[0] / 3) % 3);
  const httplib::Request req = make_request(kind, gad::fuzz::split_parts(data + 1, size - 1, 2 * kMostImages));
  try {
    gad::serve::Uploads u = gad::serve::read_uploads(req, route);
    if (u.far) (void)gad::serve::parse_far(*u.far);
    gad::serve::check_images(u, kMostImages, "images", kMaxPixels);
  } catch (const gad::serve::HttpError& e) {
    gad::fuzz::note(e);
    if (e.status < 400 || e.status > 499) std::abort();  // a bad request is the client's fault
  }
  return 0;
}
