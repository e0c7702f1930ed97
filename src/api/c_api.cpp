// The C API (include/gad/gad.h): a thin, exception-free wrapper over gad::Detector.
#include <gad/gad.h>

#include <cstddef>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <optional>
#include <exception>
#include <new>
#include <string>
#include <vector>

#include <gad/gad.hpp>

#include "util/image_list.h"

struct gad_detector {
  gad::Detector detector;
};
struct gad_references {
  gad::References refs;
};

namespace {

thread_local std::string last_error;

gad_status status_of(gad::ErrorKind kind) {
  switch (kind) {
    case gad::ErrorKind::InvalidArgument: return GAD_ERR_INVALID_ARGUMENT;
    case gad::ErrorKind::NotFound: return GAD_ERR_NOT_FOUND;
    case gad::ErrorKind::CorruptFile: return GAD_ERR_CORRUPT_FILE;
    case gad::ErrorKind::Unsupported: return GAD_ERR_UNSUPPORTED;
    case gad::ErrorKind::Io: return GAD_ERR_IO;
    case gad::ErrorKind::ResourceLimit: return GAD_ERR_RESOURCE_LIMIT;
  }
  return GAD_ERR_INTERNAL;
}

gad_status fail(gad_status s, const std::string& message) {
  last_error = message;
  return s;
}

// Runs `body`, turning every exception into a status and a message: nothing crosses into C.
template <typename F>
gad_status guarded(F&& body) {
  try {
    body();
    last_error.clear();
    return GAD_OK;
  } catch (const gad::Error& e) {
    return fail(status_of(e.kind()), e.what());
  } catch (const std::bad_alloc&) {
    return fail(GAD_ERR_RESOURCE_LIMIT, "out of memory");
  } catch (const std::exception& e) {
    std::string m = e.what();
    return fail(GAD_ERR_INTERNAL, "internal error: " + m.substr(0, m.find('\n')));
  } catch (...) {
    return fail(GAD_ERR_INTERNAL, "internal error: unknown exception");
  }
}

#define GAD_REQUIRE(cond, what)                                                   \
  do {                                                                            \
    if (!(cond)) return fail(GAD_ERR_INVALID_ARGUMENT, std::string(__func__) + ": " what); \
  } while (0)

std::vector<std::string> strings(const char* const* items, size_t n) {
  std::vector<std::string> out;
  for (size_t i = 0; i < n; ++i) {
    if (!items[i]) throw gad::Error("path " + std::to_string(i) + " is NULL");
    out.emplace_back(items[i]);
  }
  return out;
}

gad::ImageView view(const void* pixels, int width, int height, int channels, int bits, size_t row_bytes, size_t index) {
  gad::ImageView v;
  v.data = pixels;
  v.width = width;
  v.height = height;
  v.channels = channels;
  v.bits = bits;
  v.row_bytes = row_bytes;
  v.name = "image " + std::to_string(index);
  return v;
}

gad::MapKind map_kind(gad_map_kind k) {
  if (k == GAD_MAP_NONE) return gad::MapKind::None;
  if (k == GAD_MAP_PATCH) return gad::MapKind::Patch;
  if (k == GAD_MAP_HOLISTIC) return gad::MapKind::Holistic;
  throw gad::Error("maps: unknown map kind " + std::to_string(static_cast<int>(k)));
}

// Fills `out` (maps malloc'ed, so gad_result_free can free them without C++).
void fill(const gad::ScoreRecord& r, gad_result* out) {
  gad_result g{};
  g.score = r.score;
  g.s_patch = r.s_patch;
  g.s_img = r.s_img;
  g.s_text = r.s_text;
  g.s_hol = r.s_hol;
  g.has_text = r.has_text;
  g.has_heads = r.has_heads;
  g.status = GAD_OK;
  if (!r.ok()) {  // no score, no verdict
    g = gad_result{};
    g.anomalous = -1;
    g.status = status_of(r.error_kind);
    std::snprintf(g.error, sizeof g.error, "%s", r.error.c_str());
    *out = g;
    return;
  }
  const std::optional<bool> verdict = r.anomalous();
  g.anomalous = verdict ? *verdict : -1;
  g.threshold = r.threshold.value_or(0.0);
  if (!r.map.values.empty()) {
    g.map = static_cast<float*>(std::malloc(r.map.values.size() * sizeof(float)));
    if (!g.map) throw std::bad_alloc();
    std::memcpy(g.map, r.map.values.data(), r.map.values.size() * sizeof(float));
    g.map_width = r.map.width;
    g.map_height = r.map.height;
  }
  *out = g;
}

gad_status calibrate(gad_detector* detector, gad_references** refs, const char* const* normals, size_t n_normals,
                     double far, bool allow_few) {
  GAD_REQUIRE(detector && refs && *refs, "detector and refs must not be NULL");
  GAD_REQUIRE(normals || n_normals == 0, "normals is NULL");
  return guarded([&] {
    auto files = n_normals ? gad::expand_image_args(strings(normals, n_normals), "normals") : std::vector<std::string>{};
    (*refs)->refs = detector->detector.calibrate((*refs)->refs, files, gad::CalibrationOptions{far, allow_few});
  });
}

std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> out;
  for (size_t start = 0;;) {
    const size_t comma = list.find(',', start);
    out.push_back(list.substr(start, comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

}  // namespace

extern "C" {

const char* gad_version(void) { return gad::version(); }
const char* gad_last_error(void) { return last_error.c_str(); }

const char* gad_status_name(gad_status s) {
  switch (s) {
    case GAD_OK: return "ok";
    case GAD_ERR_INVALID_ARGUMENT: return "invalid argument";
    case GAD_ERR_NOT_FOUND: return "not found";
    case GAD_ERR_CORRUPT_FILE: return "corrupt file";
    case GAD_ERR_UNSUPPORTED: return "unsupported";
    case GAD_ERR_IO: return "I/O error";
    case GAD_ERR_RESOURCE_LIMIT: return "resource limit";
    case GAD_ERR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

gad_status gad_set_threads(int threads) {
  return guarded([&] { gad::set_threads(threads); });
}

gad_model_params gad_model_default_params(void) {
  gad_model_params p{};
  p.size = sizeof(gad_model_params);
  p.precision = GAD_PRECISION_AUTO;
  p.scorer = GAD_SCORER_AUTO;
  p.max_pixels = gad::ModelOptions().max_pixels;
  return p;
}

gad_status gad_detector_open(const gad_model_params* params, gad_detector** out) {
  GAD_REQUIRE(params && out, "params and out must not be NULL");
  // Fields are only ever appended: a program built against an older header passes a smaller size.
  GAD_REQUIRE(params->size == sizeof(gad_model_params) || params->size == offsetof(gad_model_params, scorer_options),
              "params->size does not match this library (use gad_model_default_params)");
  GAD_REQUIRE(params->precision >= GAD_PRECISION_AUTO && params->precision <= GAD_PRECISION_BF16, "unknown precision");
  GAD_REQUIRE(params->scorer >= GAD_SCORER_AUTO && params->scorer <= GAD_SCORER_WINCLIP, "unknown scorer");
  return guarded([&] {
    gad::ModelOptions o;
    if (params->model) o.model = params->model;
    if (params->heads) o.heads = params->heads;
    if (params->config) o.config = params->config;
    o.precision = params->precision == GAD_PRECISION_FP32   ? gad::Precision::FP32
                  : params->precision == GAD_PRECISION_BF16 ? gad::Precision::BF16
                                                            : gad::Precision::Auto;
    const gad::Scorer scorers[] = {gad::Scorer::Auto, gad::Scorer::InCTRL, gad::Scorer::AnomalyDINO, gad::Scorer::SubspaceAD,
                                   gad::Scorer::MuSc, gad::Scorer::PatchKNN, gad::Scorer::ImageKNN, gad::Scorer::WinCLIP};
    o.scorer = scorers[params->scorer];
    if (params->size == sizeof(gad_model_params) && params->scorer_options) o.scorer_options = params->scorer_options;
    o.rotate = params->rotate != 0;
    o.max_pixels = params->max_pixels;
    if (params->lite_taps) o.lite_taps = split_commas(params->lite_taps);
    *out = new gad_detector{gad::Detector(o)};
  });
}

void gad_detector_free(gad_detector* detector) { delete detector; }

gad_status gad_detector_describe(const gad_detector* detector, char* buf, size_t size) {
  GAD_REQUIRE(detector && buf && size > 0, "detector and buf must not be NULL, size > 0");
  return guarded([&] {
    const std::string d = detector->detector.describe();
    const size_t n = d.size() < size - 1 ? d.size() : size - 1;
    std::memcpy(buf, d.data(), n);
    buf[n] = '\0';
  });
}

gad_status gad_references_build(gad_detector* detector, const char* const* paths, size_t n_paths,
                                const char* class_name, gad_references** out) {
  GAD_REQUIRE(detector && out, "detector and out must not be NULL");
  GAD_REQUIRE(paths || n_paths == 0, "paths is NULL");
  return guarded([&] {
    auto files = gad::expand_image_args(strings(paths, n_paths), "reference images");
    *out = new gad_references{detector->detector.build_references(files, class_name ? class_name : "")};
  });
}

gad_status gad_references_build_pixels(gad_detector* detector, const void* const* pixels, size_t n, int width,
                                       int height, int channels, int bits, size_t row_bytes, const char* class_name,
                                       gad_references** out) {
  GAD_REQUIRE(detector && out, "detector and out must not be NULL");
  GAD_REQUIRE(pixels || n == 0, "pixels is NULL");
  return guarded([&] {
    std::vector<gad::ImageView> views;
    for (size_t i = 0; i < n; ++i) views.push_back(view(pixels[i], width, height, channels, bits, row_bytes, i));
    *out = new gad_references{detector->detector.build_references(views, class_name ? class_name : "")};
  });
}

gad_status gad_references_load(gad_detector* detector, const char* path, gad_references** out) {
  GAD_REQUIRE(detector && path && out, "detector, path and out must not be NULL");
  return guarded([&] { *out = new gad_references{detector->detector.load_references(path)}; });
}

gad_status gad_references_save(const gad_references* refs, const char* path) {
  GAD_REQUIRE(refs && path, "refs and path must not be NULL");
  return guarded([&] { refs->refs.save(path); });
}


gad_status gad_references_calibrate(gad_detector* detector, gad_references** refs, const char* const* normals,
                                    size_t n_normals, double far) {
  return calibrate(detector, refs, normals, n_normals, far, false);
}

gad_status gad_references_calibrate_allow_few(gad_detector* detector, gad_references** refs, const char* const* normals,
                                              size_t n_normals, double far) {
  return calibrate(detector, refs, normals, n_normals, far, true);
}

int64_t gad_references_k(const gad_references* refs) { return refs ? refs->refs.k() : 0; }
void gad_references_free(gad_references* refs) { delete refs; }

namespace {

// Every record into `results`, or none (a failure part-way frees what was filled).
void fill_all(const std::vector<gad::ScoreRecord>& records, gad_result* results) {
  const size_t n = records.size();
  std::vector<gad_result> filled(n);
  size_t done = 0;
  try {
    for (; done < n; ++done) fill(records[done], &filled[done]);
  } catch (...) {
    for (size_t i = 0; i < done; ++i) gad_result_free(&filled[i]);
    throw;
  }
  std::copy(filled.begin(), filled.end(), results);  // all or nothing
}

}  // namespace

gad_status gad_score_paths(gad_detector* detector, const gad_references* refs, const char* const* paths, size_t n,
                           gad_map_kind maps, gad_result* results) {
  GAD_REQUIRE(detector && refs, "detector and refs must not be NULL");
  GAD_REQUIRE((paths && results) || n == 0, "paths and results must not be NULL");
  return guarded([&] {
    gad::ScoreOptions o;
    o.map = map_kind(maps);
    fill_all(detector->detector.score(refs->refs, strings(paths, n), o), results);
  });
}

gad_status gad_score_zero_shot(gad_detector* detector, const char* const* paths, size_t n, gad_map_kind maps,
                               gad_result* results) {
  GAD_REQUIRE(detector, "detector must not be NULL");
  GAD_REQUIRE((paths && results) || n == 0, "paths and results must not be NULL");
  return guarded([&] {
    gad::ScoreOptions o;
    o.map = map_kind(maps);
    fill_all(detector->detector.score_zero_shot(strings(paths, n), o), results);
  });
}

gad_status gad_score_path(gad_detector* detector, const gad_references* refs, const char* path, double* score,
                          gad_result* result) {
  GAD_REQUIRE(path, "path must not be NULL");
  GAD_REQUIRE(score || result, "give score or result");
  gad_result r{};
  gad_status s = gad_score_paths(detector, refs, &path, 1, GAD_MAP_NONE, &r);
  if (s != GAD_OK) return s;
  if (r.status != GAD_OK) return fail(r.status, r.error);
  if (score) *score = r.score;
  if (result) *result = r;
  return GAD_OK;
}

gad_status gad_score_pixels(gad_detector* detector, const gad_references* refs, const void* pixels, int width,
                            int height, int channels, int bits, size_t row_bytes, gad_map_kind maps,
                            gad_result* result) {
  GAD_REQUIRE(detector && refs && result, "detector, refs and result must not be NULL");
  return guarded([&] {
    gad::ScoreOptions o;
    o.map = map_kind(maps);
    auto records = detector->detector.score(refs->refs, {view(pixels, width, height, channels, bits, row_bytes, 0)}, o);
    if (!records.at(0).ok()) throw gad::Error(records[0].error, records[0].error_kind);  // the call's error
    fill(records.at(0), result);
  });
}

void gad_result_free(gad_result* result) {
  if (!result) return;
  std::free(result->map);
  result->map = nullptr;
  result->map_width = result->map_height = 0;
}

}  // extern "C"
