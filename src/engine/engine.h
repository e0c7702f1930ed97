// The engine behind gad::Detector (<gad/gad.hpp>): image -> preprocess -> backbone -> features ->
// scorer (InCTRL or AnomalyDINO) -> ScoreRecord. This header adds what gad's own tools need
// beyond the public API — the server keeps only the preprocessed network input of each upload
// (a few hundred KB instead of the full-resolution pixels), `gad inspect` dumps tensors — and
// stays torch-free like the public header.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gad/gad.hpp>

#include "image/image.h"
#include "image/preprocess.h"

namespace gad {

struct ImageSource {
  std::string name, sha256;  // recorded in the set's metadata only; never opened
};

struct InspectRecord {
  std::string path;
  int width = 0, height = 0;
  double global_norm = 0, ms = 0;
};

// The input transform of one image for scoring against `refs` (its scorer's request).
PixelTensor preprocess(const Detector& detector, const References& refs, const Image& image);
// The preprocessed views of reference image `index` (1; 8 with ModelOptions::rotate; SubspaceAD's
// augmented copies).
std::vector<PixelTensor> reference_views(const Detector& detector, const Image& image, size_t index);
// A set from the views of its references (reference_views of each, in order).
References build_references(Detector& detector, const std::vector<PixelTensor>& views,
                            const std::vector<ImageSource>& sources, const std::string& class_name);
// Scores preprocessed images against `refs` in batches of `batch`; records in input order.
std::vector<ScoreRecord> score_pixels(Detector& detector, const References& refs,
                                      const std::vector<PixelTensor>& pixels, int batch);

// Encodes each image alone; with `dump_path` writes the tensors documented in `gad inspect
// --help` to one safetensors file (with `refs`, an InCTRL set, also the score chain).
std::vector<InspectRecord> inspect(Detector& detector, const std::vector<std::string>& paths,
                                   const std::string& dump_path, const References* refs = nullptr);

// A saved set read without a model (`gad refs show`): checksum and banks verified, the model it
// was made with not checked. Description of that model in `model` when given.
References peek_references(const std::string& path, std::string* model = nullptr);

// Zero-shot over n images that `load(i)` decodes one at a time (the server's uploads); see
// Detector::score_zero_shot.
std::vector<ScoreRecord> score_zero_shot(Detector& detector, size_t n, const std::function<std::string(size_t)>& name_of,
                                         const std::function<Image(size_t)>& load, const ScoreOptions& options);

struct ReferenceSet;
// The internal set behind `refs` (its banks and scorer state; tests and `gad inspect` read it).
const ReferenceSet& reference_set(const References& refs);

int64_t image_encodes(const Detector& detector);  // backbone image encodes so far (tests use it)
int64_t text_encodes(const Detector& detector);

}  // namespace gad
