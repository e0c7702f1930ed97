// Scorer — one way of turning encoded images into anomaly scores, behind one interface.
//
// A scorer says what it needs (the backbone request, the text prior, heads), makes the views of
// each reference image, builds a set's state from them (patch banks by default; SubspaceAD a PCA
// subspace) and scores a batch of encoded queries into one ScoreRecord each (score, sub-scores,
// patch map). It is chosen once, by name, when a set or detector is made; a saved set records the
// name and the resolved options, so it is scored the same way wherever it is loaded.
//
// Adding a scorer: one file with a class deriving from Scorer, one line in make_scorer
// (scorer.cpp), one value of the public gad::Scorer enum.
//
// `gad score`, `gad serve` and `gad bench` all go through the helpers at the end of this header:
// reference_views + Scorer::build make a set, encode_batches + Scorer::score score queries.
//
// Zero-shot scoring has no references, so it is not a Scorer: MuSc is a function over a whole
// collection (scorers/musc.h), zero-shot WinCLIP a function of one image and its text prompts
// (scorers/winclip.h).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <gad/gad.hpp>

#include "backbone/backbone.h"
#include "inctrl/heads.h"
#include "scorers/reference_set.h"

namespace gad::scorers {

class Scorer {
 public:
  virtual ~Scorer() = default;
  virtual std::string name() const = 0;
  // The resolved options (defaults filled in): logged, stored in the set, compared on load.
  virtual nlohmann::json options() const { return nlohmann::json::object(); }
  virtual FeatureRequest features() const { return {}; }
  virtual bool uses_text_prior() const { return false; }
  virtual bool uses_heads() const { return false; }
  virtual bool uses_banks() const { return true; }
  virtual bool has_map() const { return true; }  // records carry a patch map (image-knn's do not)
  // The images one reference contributes (itself; rotations; augmented copies). `index` is the
  // reference's position, so random augmentations do not depend on what else is in the set.
  virtual std::vector<Image> reference_views(const Image& image, size_t index) const { return {image}; }
  // A set from the preprocessed views of its references (reference_views of each, in order).
  virtual ReferenceSet build(const Backbone& backbone, const std::vector<PixelTensor>& views,
                             const std::vector<ReferenceSource>& sources, const std::string& class_name) const;
  // One record per query of the batch (score, sub-scores, grid map; path and geometry are the
  // caller's).
  virtual std::vector<ScoreRecord> score(const ReferenceSet& set, const Features& queries) const = 0;
  // Throws naming `name` (a file) when a loaded set lacks what this scorer reads.
  virtual void check(const ReferenceSet& set, const std::string& name) const;
};

// The scorer `name` with its options (a JSON object; unknown keys and values out of range are
// refused naming the key). `context` prefixes errors ("--scorer-options", a set's file name).
std::unique_ptr<Scorer> make_scorer(const std::string& name, const Backbone& backbone,
                                    const std::optional<InctrlHeads>& heads, const nlohmann::json& options,
                                    const std::string& context = "scorer options");

// The name of the public enum value ("inctrl", ...); Auto resolves by the backbone.
std::string scorer_name(gad::Scorer s, const Backbone& backbone);

// Option reading shared by the scorers: every key of `options` must be in `known`.
void check_known_keys(const nlohmann::json& options, const std::vector<std::string>& known, const std::string& context);

// The names make_scorer knows, plus "musc" (zero-shot only).
std::vector<std::string> scorer_names();

// ---- The one path from images to records ----

// The preprocessed views of reference image `index` (scorer.reference_views, each preprocessed
// for the scorer's request).
std::vector<PixelTensor> reference_views(const Backbone& backbone, const Scorer& scorer, const Image& image, size_t index);

// Encodes preprocessed images for `request`: one forward pass for a fixed grid or a square input;
// one pass per image when the grid follows each image's shape (DINOv2). Batching same-size DINOv2
// images was measured and does not pay here (2-3x slower per image, twice the memory), and single
// passes keep every score independent of its batch, bit for bit. `use` gets each pass with the
// indices into `pixels` of the images it holds, row by row.
using PassImages = std::vector<size_t>;
void encode_batches(const Backbone& backbone, const FeatureRequest& request, const std::vector<PixelTensor>& pixels,
                    const std::function<void(const PassImages& images, const Features& features)>& use);

// One record per row of a pass: scorer.score, with each image's grid and geometry filled in.
std::vector<ScoreRecord> records_of(const Scorer& scorer, const ReferenceSet& set, const Features& features,
                                    const std::vector<PixelTensor>& pixels, const PassImages& images);

// Whether two requests ask for the same features (queries encoded once serve every scorer that
// asks the same).
bool same_request(const FeatureRequest& a, const FeatureRequest& b);

}  // namespace gad::scorers
