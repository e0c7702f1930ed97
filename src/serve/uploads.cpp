#include "serve/uploads.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

#include "image/header.h"
#include "image/image.h"
#include "serve/http.h"
#include "serve/http_error.h"
#include "util/base64.h"

namespace gad::serve {
namespace {

using json = nlohmann::ordered_json;

// Media type of the request without parameters, lower case.
std::string media_type(const httplib::Request& req) {
  std::string ct = req.get_header_value("Content-Type");
  std::transform(ct.begin(), ct.end(), ct.begin(), [](unsigned char c) { return std::tolower(c); });
  auto semi = ct.find(';');
  if (semi != std::string::npos) ct = ct.substr(0, semi);
  while (!ct.empty() && ct.back() == ' ') ct.pop_back();
  return ct;
}

// No valid body nests deeper than 3 levels; refusing more as it is parsed keeps a "[[[[..." body
// from building millions of levels (a 15 MB one took 950 MB before failing at its end).
constexpr int kMaxJsonDepth = 8;

json parse_json_body(const httplib::Request& req) {
  try {
    return json::parse(req.body, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxJsonDepth)
        throw HttpError(400, "malformed_json", "JSON body nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
      return true;
    });
  } catch (const HttpError&) {
    throw;
  } catch (const std::exception& e) {
    throw HttpError(400, "malformed_json", std::string("malformed JSON body: ") + e.what());
  }
}

void read_json_uploads(const httplib::Request& req, Uploads& u) {
  const json body = parse_json_body(req);
  if (!body.is_object()) throw HttpError(400, "malformed_json", "JSON body must be an object");
  if (body.contains("class")) {
    if (!body["class"].is_string()) throw HttpError(400, "malformed_json", "JSON body: \"class\" must be a string");
    u.class_name = body["class"].get<std::string>();
  }
  if (body.contains("far")) {
    if (!body["far"].is_number()) throw HttpError(400, "malformed_json", "JSON body: \"far\" must be a number");
    u.far = body["far"].dump();
  }
  if (!body.contains("images"))
    throw HttpError(400, "malformed_json", "JSON body: missing \"images\" (array of base64 strings)");
  const auto& arr = body["images"];
  if (!arr.is_array())
    throw HttpError(400, "malformed_json", "JSON body: \"images\" must be an array of base64 strings");
  for (size_t i = 0; i < arr.size(); ++i) {
    const json* data = &arr[i];
    std::string name;
    const std::string where = "JSON body: images[" + std::to_string(i) + "]";
    if (arr[i].is_object()) {  // {"name": ..., "data": base64}
      if (!arr[i].contains("data") || !arr[i]["data"].is_string())
        throw HttpError(400, "malformed_json", where + " needs a base64 \"data\" string");
      data = &arr[i]["data"];
      if (arr[i].contains("name") && arr[i]["name"].is_string()) name = arr[i]["name"].get<std::string>();
    } else if (!arr[i].is_string()) {
      throw HttpError(400, "malformed_json", where + " is not a base64 string");
    }
    auto bytes = base64_decode(data->get<std::string>());
    if (!bytes) throw HttpError(400, "malformed_json", where + " is not valid base64");
    u.owned.push_back(std::move(*bytes));
    u.images.push_back({name, u.owned.back()});
  }
}

void read_multipart_uploads(const httplib::Request& req, Uploads& u) {
  for (const auto& [field, file] : req.files) {
    if (field == "class")
      u.class_name = file.content;
    else if (field == "far")
      u.far = file.content;
    else if (field == "images" || field == "image" || !file.filename.empty())
      u.images.push_back({file.filename, file.content});
    // other text fields are ignored
  }
}

}  // namespace

Uploads read_uploads(const httplib::Request& req, Route route) {
  Uploads u;
  const std::string mt = media_type(req);
  if (req.is_multipart_form_data())
    read_multipart_uploads(req, u);
  else if (mt == "application/json")
    read_json_uploads(req, u);
  else if (route == Route::Score && (mt.rfind("image/", 0) == 0 || mt == "application/octet-stream"))
    u.images.push_back({"", req.body});
  else
    throw HttpError(415, "unsupported_media_type",
                    "unsupported Content-Type '" + req.get_header_value("Content-Type").substr(0, 100) + "': use " +
                        (route == Route::Score ? "image/*, application/octet-stream, " : "") +
                        "multipart/form-data (field images" + (route == Route::Register ? ", class" : "") +
                        (route == Route::Calibrate ? ", far" : "") + ") or application/json");
  return u;
}

const std::string& read_refset_upload(const httplib::Request& req) {
  const std::string* file = &req.body;
  if (req.is_multipart_form_data()) {
    const auto it = req.files.find("file");
    if (it == req.files.end())
      throw HttpError(400, "no_file", "multipart body without a \"file\" field (the .gadref to import)");
    file = &it->second.content;
  } else if (media_type(req) != "application/octet-stream") {
    throw HttpError(415, "unsupported_media_type",
                    "unsupported Content-Type '" + req.get_header_value("Content-Type").substr(0, 100) +
                        "': send the .gadref as application/octet-stream or multipart/form-data (field file)");
  }
  if (file->empty()) throw HttpError(400, "bad_refset", "uploaded .gadref: empty file");
  return *file;
}

std::string image_name(size_t i, const Upload& u) {
  return "image " + std::to_string(i) + (u.name.empty() ? "" : " ('" + u.name.substr(0, 200) + "')");
}

void check_images(const Uploads& u, int most, const char* what, int64_t max_pixels) {
  if (u.images.empty()) throw HttpError(400, "no_images", std::string("no ") + what + " (give at least one image)");
  if (static_cast<int>(u.images.size()) > most)
    throw HttpError(400, "too_many_images",
                    "too many " + std::string(what) + ": " + std::to_string(u.images.size()) + ", at most " +
                        std::to_string(most) + " per request");
  for (size_t i = 0; i < u.images.size(); ++i) {
    const auto& bytes = u.images[i].bytes;
    const std::string name = image_name(i, u.images[i]);
    if (bytes.empty()) throw HttpError(400, "bad_image", name + ": empty");
    auto h = probe_image_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    if (!h)
      throw HttpError(
          400, "bad_image",
          name + ": not a readable image (unknown format or header cut short; gad reads " + probed_formats() + ")");
    if (h->width <= 0 || h->height <= 0) throw HttpError(400, "bad_image", name + ": image has zero width or height");
    const std::string too_big = pixel_limit_problem(h->width, h->height, max_pixels);
    if (!too_big.empty()) throw HttpError(413, "too_many_pixels", name + " (" + h->format + "): " + too_big);
  }
}

double parse_far(const std::string& text) {
  double far = 0;
  size_t used = 0;
  try {
    far = std::stod(text, &used);
  } catch (...) {
    used = 0;
  }
  if (used == 0 || used != text.size() || !(far > 0 && far < 1))
    throw HttpError(400, "bad_far",
                    "far: the false-alarm rate must be a number in (0, 1) (got '" + text.substr(0, 50) + "')");
  return far;
}

}  // namespace gad::serve
