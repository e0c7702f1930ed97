/* gad — generalist anomaly detection on CPUs: the C API (C99).
 *
 *   gad_model_params p = gad_model_default_params();            // the installed lite model
 *   gad_detector* d = NULL;
 *   gad_references* r = NULL;
 *   if (gad_detector_open(&p, &d) != GAD_OK) { fprintf(stderr, "%s\n", gad_last_error()); ... }
 *   const char* refs[] = {"good/1.png", "good/2.png"};
 *   gad_references_build(d, refs, 2, "tile", &r);
 *   double score;
 *   gad_score_path(d, r, "query.png", &score, NULL);
 *   gad_references_free(r);
 *   gad_detector_free(d);
 *
 * Rules
 * - Every function returns a gad_status; GAD_OK (0) is success. On failure the outputs are left
 *   untouched and gad_last_error() returns a one-line message naming the file or argument and
 *   the problem. The message is per thread and valid until the next gad call on that thread.
 * - No function aborts or throws across the C boundary, whatever the input (NULL pointers, bad
 *   sizes and broken files return a status).
 * - Objects are opaque and owned by the caller: free them with the matching gad_*_free (NULL is
 *   accepted). Buffers gad allocates (gad_result maps) are freed with gad_result_free.
 * - Thread safety: a gad_detector is used by one thread at a time; gad_references are immutable
 *   and may be shared between threads and detectors of the same model. gad never installs
 *   signal handlers; gad_set_threads is process-wide and meant for the program.
 * - ABI: the C API is stable within a major version (GAD_VERSION_MAJOR). Structs passed in are
 *   versioned by their `size` field: set it with the *_default_params functions, and new fields
 *   are only ever appended. gad_version() reports the library actually loaded.
 */
#ifndef GAD_H
#define GAD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "gad/version.h"

typedef enum {
  GAD_OK = 0,
  GAD_ERR_INVALID_ARGUMENT = 1, /* bad option, size, NULL pointer */
  GAD_ERR_NOT_FOUND = 2,        /* a file or model that does not exist */
  GAD_ERR_CORRUPT_FILE = 3,     /* a file that cannot be parsed */
  GAD_ERR_UNSUPPORTED = 4,      /* valid input gad does not handle */
  GAD_ERR_IO = 5,               /* reading or writing failed */
  GAD_ERR_RESOURCE_LIMIT = 6,   /* over a stated cap (pixels, sizes) */
  GAD_ERR_INTERNAL = 7          /* a bug: please report it with the message */
} gad_status;

typedef enum { GAD_PRECISION_AUTO = 0, GAD_PRECISION_FP32 = 1, GAD_PRECISION_BF16 = 2 } gad_precision;
/* docs/scorers.md. MUSC is zero-shot: gad_score_zero_shot, no reference set. WINCLIP (CLIP
 * models) builds WinCLIP+ sets here; its zero-shot mode needs a class name (C++ and Python APIs). */
typedef enum {
  GAD_SCORER_AUTO = 0,
  GAD_SCORER_INCTRL = 1,
  GAD_SCORER_ANOMALYDINO = 2,
  GAD_SCORER_SUBSPACEAD = 3,
  GAD_SCORER_MUSC = 4,
  GAD_SCORER_PATCH_KNN = 5,
  GAD_SCORER_IMAGE_KNN = 6,
  GAD_SCORER_WINCLIP = 7
} gad_scorer;
typedef enum { GAD_MAP_NONE = 0, GAD_MAP_PATCH = 1, GAD_MAP_HOLISTIC = 2 } gad_map_kind;

typedef struct gad_detector gad_detector;
typedef struct gad_references gad_references;

typedef struct {
  size_t size;        /* sizeof(gad_model_params), set by gad_model_default_params */
  const char* model;  /* weight file or fetched model name; NULL or "lite" = the installed lite model */
  const char* heads;  /* NULL = those in the model file; "none", "lite" or a file */
  const char* config; /* CLIP architecture name or JSON file; NULL = default */
  gad_precision precision;
  gad_scorer scorer;
  int rotate;         /* AnomalyDINO: also every reference rotated by 45..315 degrees */
  int64_t max_pixels; /* largest image accepted, width x height */
  const char* lite_taps; /* lite model patch taps, comma-separated ("block_12_add,block_5_add"); NULL = default */
  const char* scorer_options; /* the scorer's options as a JSON object (docs/scorers.md); NULL = defaults */
} gad_model_params;

/* One image: scored when status is GAD_OK; otherwise it was not scored (error says why, the
 * score fields are 0 and anomalous is -1: never read a verdict from a result that failed).
 * Maps (when asked for) are allocated by gad: free with gad_result_free. */
typedef struct {
  double score, s_patch, s_img, s_text, s_hol;
  int has_text, has_heads;
  int anomalous;       /* 1 / 0 when the reference set is calibrated, else -1 */
  double threshold;    /* the set's threshold (valid when anomalous >= 0) */
  float* map;          /* map_width x map_height floats, row-major, in image pixels; NULL if not asked */
  int map_width, map_height;
  gad_status status;   /* GAD_OK: scored; else why this image has no score */
  char error[256];     /* the one-line reason when status != GAD_OK (truncated), else "" */
} gad_result;

const char* gad_version(void);
const char* gad_last_error(void);
const char* gad_status_name(gad_status status);
gad_status gad_set_threads(int threads); /* 0 = every core; process-wide */

gad_model_params gad_model_default_params(void);
gad_status gad_detector_open(const gad_model_params* params, gad_detector** out);
void gad_detector_free(gad_detector* detector);
/* Copies a description of the model into buf (truncated to size, always NUL-terminated). */
gad_status gad_detector_describe(const gad_detector* detector, char* buf, size_t size);

/* K >= 1 normal images (files or directories, listed recursively); class_name may be NULL for
 * scorers without a text prior. */
gad_status gad_references_build(gad_detector* detector, const char* const* paths, size_t n_paths,
                                const char* class_name, gad_references** out);
/* From pixels in memory: n images of width x height x channels (1, 3 or 4) samples of `bits`
 * (8 or 16) each, rows `row_bytes` apart (0 = packed); pixels[i] points at image i. */
gad_status gad_references_build_pixels(gad_detector* detector, const void* const* pixels, size_t n, int width,
                                       int height, int channels, int bits, size_t row_bytes, const char* class_name,
                                       gad_references** out);
gad_status gad_references_load(gad_detector* detector, const char* path, gad_references** out);
gad_status gad_references_save(const gad_references* refs, const char* path);
/* Replaces *refs by a calibrated copy (normals: held-out normal files, never the references;
 * NULL/0 = leave-one-out). Fewer normals than `far` needs (ceil(1/far) - 1) is an error;
 * gad_references_calibrate_allow_few takes them (largest normal score plus a margin). */
gad_status gad_references_calibrate(gad_detector* detector, gad_references** refs, const char* const* normals,
                                    size_t n_normals, double far);
gad_status gad_references_calibrate_allow_few(gad_detector* detector, gad_references** refs, const char* const* normals,
                                              size_t n_normals, double far);
int64_t gad_references_k(const gad_references* refs);
void gad_references_free(gad_references* refs);

/* Score one image; `result` may be NULL when only the score is wanted. An image that cannot be
 * scored is the call's error status (its result is not written). */
gad_status gad_score_path(gad_detector* detector, const gad_references* refs, const char* path, double* score,
                          gad_result* result);
/* Score n files in batches; results[i] for paths[i]; `maps` = gad_map_kind. GAD_OK when the call
 * ran: each results[i].status then says whether that image was scored (one bad file does not
 * stop the others). */
gad_status gad_score_paths(gad_detector* detector, const gad_references* refs, const char* const* paths, size_t n,
                           gad_map_kind maps, gad_result* results);
/* Score one in-memory image (see gad_references_build_pixels for the layout). */
gad_status gad_score_pixels(gad_detector* detector, const gad_references* refs, const void* pixels, int width,
                            int height, int channels, int bits, size_t row_bytes, gad_map_kind maps,
                            gad_result* result);
/* Zero-shot (MuSc): the n images score each other, no reference set (at least 5 with the default
 * options). results[i] for paths[i]; an unreadable image gets its own error status and the rest
 * are scored without it. anomalous/threshold carry the collection's robust-z verdict (z > 3.5). */
gad_status gad_score_zero_shot(gad_detector* detector, const char* const* paths, size_t n, gad_map_kind maps,
                               gad_result* results);
void gad_result_free(gad_result* result); /* frees the map; the struct itself is the caller's */

#ifdef __cplusplus
}
#endif

#endif /* GAD_H */
