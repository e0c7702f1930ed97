// gad._gad, the compiled core of the Python package `gad` (python/gad/): a thin pybind11 client
// of the public C++ API (<gad/gad.hpp>). Its signatures and docstrings are mirrored for type
// checkers in python/gad/_gad.pyi — change both together.
//
//   import gad
//   d = gad.Detector()                                  # the installed lite model
//   refs = d.build_references(["good/1.png", "good/2.png"], class_name="tile")
//   for r in d.score(refs, ["query.png"], maps=True): print(r["path"], r["score"], r["map"].shape)
//
// Scores are dicts with the keys of `gad score`'s JSON lines; images are paths (files or
// directories), numpy arrays (uint8 / uint16, HxW, HxWx1, HxWx3 RGB or HxWx4 RGBA) or PIL
// images (converted by gad._images). The GIL is
// released while the model runs; gad errors raise gad.Error with gad's one-line message.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <gad/gad.hpp>

namespace py = pybind11;

namespace {

gad::Precision precision_of(const std::string& s) {
  if (s == "auto") return gad::Precision::Auto;
  if (s == "fp32") return gad::Precision::FP32;
  if (s == "bf16") return gad::Precision::BF16;
  throw gad::Error("precision: unknown value '" + s + "' (auto, fp32 or bf16)");
}

gad::Scorer scorer_of(const std::string& s) {
  if (s == "auto") return gad::Scorer::Auto;
  if (s == "inctrl") return gad::Scorer::InCTRL;
  if (s == "anomalydino") return gad::Scorer::AnomalyDINO;
  if (s == "subspacead") return gad::Scorer::SubspaceAD;
  if (s == "musc") return gad::Scorer::MuSc;
  if (s == "patch-knn") return gad::Scorer::PatchKNN;
  if (s == "image-knn") return gad::Scorer::ImageKNN;
  if (s == "winclip") return gad::Scorer::WinCLIP;
  throw gad::Error("scorer: unknown value '" + s + "' (auto, inctrl, anomalydino, subspacead, musc, patch-knn, image-knn or winclip)");
}

// Images given as paths, or as numpy arrays viewed in place (the arrays stay referenced by the
// caller's list for the whole call).
struct Inputs {
  std::vector<std::string> paths;
  std::vector<gad::ImageView> views;
  std::vector<py::array> keep;  // the arrays the views point into
};

gad::ImageView view_of(const py::array& a, size_t index) {
  const std::string name = "image " + std::to_string(index);
  const bool u8 = py::isinstance<py::array_t<uint8_t>>(a), u16 = py::isinstance<py::array_t<uint16_t>>(a);
  if (!u8 && !u16) throw gad::Error(name + ": dtype must be uint8 or uint16 (got " + std::string(py::str(a.dtype())) + ")");
  if (a.ndim() != 2 && a.ndim() != 3) throw gad::Error(name + ": shape must be (H, W) or (H, W, C)");
  const int channels = a.ndim() == 3 ? static_cast<int>(a.shape(2)) : 1;
  const ssize_t item = u8 ? 1 : 2;
  // Rows may be strided (a crop); pixels within a row must be packed.
  if ((a.ndim() == 3 && a.strides(2) != item) || a.strides(1) != item * channels || a.strides(0) < 0)
    throw gad::Error(name + ": pixels within a row must be contiguous (use numpy.ascontiguousarray)");
  gad::ImageView v;
  v.data = a.data();
  v.height = static_cast<int>(a.shape(0));
  v.width = static_cast<int>(a.shape(1));
  v.channels = channels;
  v.bits = u8 ? 8 : 16;
  v.row_bytes = static_cast<size_t>(a.strides(0));
  v.name = name;
  return v;
}

// A PIL image or another array-like as a uint8/uint16 array; what has no faithful conversion is a
// gad.Error naming the image.
py::array converted_image(const py::object& o, size_t index) {
  const std::string name = "image " + std::to_string(index);
  try {
    return py::module_::import("gad._images").attr("as_array")(o, name).cast<py::array>();
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_ValueError) && !e.matches(PyExc_TypeError)) throw;
    throw gad::Error(py::str(e.value()));
  }
}

Inputs inputs_of(const py::sequence& items) {
  Inputs in;
  if (py::isinstance<py::str>(items)) throw gad::Error("images: give a list of paths or arrays, not one string");
  for (size_t i = 0; i < items.size(); ++i) {
    py::object o = items[i];
    if (py::isinstance<py::array>(o)) {
      in.keep.push_back(o.cast<py::array>());
      in.views.push_back(view_of(in.keep.back(), i));
    } else if (py::isinstance<py::str>(o) || py::hasattr(o, "__fspath__")) {
      in.paths.push_back(py::str(py::module_::import("os").attr("fspath")(o)));
    } else if (py::hasattr(o, "__array_interface__") || py::hasattr(o, "__array__")) {  // PIL, array-likes
      in.keep.push_back(converted_image(o, i));
      in.views.push_back(view_of(in.keep.back(), i));
    } else {
      throw gad::Error("image " + std::to_string(i) + ": expected a path, a numpy array or a PIL image");
    }
  }
  if (!in.paths.empty() && !in.views.empty()) throw gad::Error("images: give paths or arrays, not both");
  return in;
}

py::dict record_dict(const gad::ScoreRecord& r, bool with_map) {
  py::dict d = py::module_::import("json").attr("loads")(gad::to_json(r));
  py::dict out;
  out["path"] = r.path;
  for (auto item : d) out[item.first] = item.second;  // the CLI's keys, in its order
  if (with_map && r.ok()) {
    py::array_t<float> map({r.map.height, r.map.width});
    std::copy(r.map.values.begin(), r.map.values.end(), map.mutable_data());
    out["map"] = map;
  }
  return out;
}

py::dict threshold_of(const gad::Threshold& t) {
  py::dict d;
  d["threshold"] = t.value;
  d["far"] = t.far;
  d["method"] = t.method;
  d["n"] = t.n;
  d["time"] = t.time;
  d["setup"] = t.setup;
  return d;
}

py::object threshold_dict(const gad::References& refs) {
  auto t = refs.threshold();
  return t ? py::object(threshold_of(*t)) : py::none();
}

py::list threshold_history(const gad::References& refs) {
  py::list out;
  for (const auto& t : refs.threshold_history()) out.append(threshold_of(t));
  return out;
}

// A Detector serves one call at a time (gad.hpp): calls from several Python threads take turns
// on this lock, taken with the GIL released so the other threads keep running meanwhile.
struct LockedDetector {
  explicit LockedDetector(const gad::ModelOptions& o) : detector(o) {}
  gad::Detector detector;
  std::mutex busy;
};

// Runs `score` on the detector with the GIL released and its turn taken; one dict per record.
template <typename Score>
py::list score_records(LockedDetector& p, const py::sequence& images, bool maps, Score score) {
  Inputs in = inputs_of(images);
  std::vector<gad::ScoreRecord> records;
  {
    py::gil_scoped_release unlocked;
    std::lock_guard<std::mutex> turn(p.busy);
    records = score(p.detector, in);
  }
  py::list out;
  for (const auto& r : records) out.append(record_dict(r, maps));
  return out;
}

}  // namespace

PYBIND11_MODULE(_gad, m) {
  m.doc() = "gad's compiled core; use the package `gad`, which re-exports it";
  m.attr("__version__") = gad::version();
  // gad.Error(message) with .kind ("not found", "corrupt file", ...), raised for every gad error.
  static py::exception<gad::Error> error(m, "Error");
  error.attr("__doc__") = "A gad error: str(e) is gad's one-line message; e.kind its category (\"not found\", \"corrupt file\", ...)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const gad::Error& e) {
      py::object instance = py::reinterpret_borrow<py::object>(error.ptr())(e.what());
      instance.attr("kind") = gad::error_kind_name(e.kind());
      PyErr_SetObject(error.ptr(), instance.ptr());
    }
  });

  py::class_<gad::References>(m, "ReferenceSet",
                              "K normal images encoded once by a Detector (immutable): what new images are compared with.\n"
                              "Made by Detector.build_references, Detector.load_references or Detector.calibrate.")
      .def_property_readonly("k", &gad::References::k, "the number of reference images (K)")
      .def_property_readonly("class_name", &gad::References::class_name, "the class name the set was built with")
      .def_property_readonly("scorer", &gad::References::scorer, "the scorer the set scores with (inctrl, anomalydino, subspacead)")
      .def_property_readonly("threshold", &threshold_dict, "None, or {threshold, far, method, n, time, setup}")
      .def_property_readonly("threshold_history", &threshold_history, "every calibration, oldest first")
      .def_property_readonly("taps", &gad::References::taps, "lite patch taps the set was built with")
      .def_property_readonly("sources", &gad::References::sources, "the reference images")
      .def_property_readonly("integrity", &gad::References::integrity, "verified | built | unverified (no checksum)")
      .def_property_readonly("summary", &gad::References::summary, "one line: model, class, K, scorer, threshold")
      .def("save", &gad::References::save, py::arg("path"), "write a .gadref file (gad refs/score --refs read it)")
      .def("__repr__", [](const gad::References& r) { return "<gad.ReferenceSet " + r.summary() + ">"; });

  py::class_<LockedDetector>(m, "Detector",
                            "A loaded model: builds reference sets from normal images and scores new images against them.\n"
                            "Calls on one Detector from several threads take turns; for parallel work give each thread its own\n"
                            "Detector (ReferenceSets may be shared). The GIL is released while gad computes.")
      .def(py::init([](std::optional<std::string> model, std::optional<std::string> heads, const std::string& precision,
                       std::optional<int> threads, const std::string& scorer, bool rotate,
                       std::optional<std::string> config, int64_t max_pixels, std::vector<std::string> lite_taps,
                       std::optional<py::dict> scorer_options) {
             // Threads are process-wide (torch/OpenBLAS): set only when asked.
             if (threads) gad::set_threads(*threads);
             gad::ModelOptions o;
             o.model = model.value_or("");
             o.heads = heads.value_or("");
             o.config = config.value_or("");
             o.precision = precision_of(precision);
             o.scorer = scorer_of(scorer);
             o.rotate = rotate;
             o.max_pixels = max_pixels;
             o.lite_taps = lite_taps;
             if (scorer_options) o.scorer_options = py::str(py::module_::import("json").attr("dumps")(*scorer_options));
             py::gil_scoped_release unlocked;
             return new LockedDetector(o);
           }),
           py::arg("model") = py::none(), py::arg("heads") = py::none(), py::arg("precision") = "auto",
           py::arg("threads") = py::none(), py::arg("scorer") = "auto", py::arg("rotate") = false,
           py::arg("config") = py::none(), py::arg("max_pixels") = gad::ModelOptions().max_pixels,
           py::arg("lite_taps") = std::vector<std::string>{}, py::arg("scorer_options") = py::none(),
           "Load a model: model=None is the installed lite model; threads sets the process's compute threads;\n"
           "lite_taps: the lite model's patch taps (default block_12_add, or a loaded set's); scorer: auto, inctrl,\n"
           "anomalydino, subspacead or musc (zero-shot); scorer_options: a dict of the scorer's options\n"
           "(docs/scorers.md), e.g. {'pca_ev': 0.99}")
      .def_property_readonly("scorer", [](LockedDetector& p) { return p.detector.scorer_summary(); },
                             "the scorer new sets get, with its resolved options")
      .def("describe", [](LockedDetector& p) { return p.detector.describe(); }, "one line: the model, its heads, precision and scorer")
      .def_property_readonly("has_heads", [](LockedDetector& p) { return p.detector.has_heads(); }, "whether trained heads are loaded")
      .def(
          "build_references",
          [](LockedDetector& p, const py::sequence& images, std::optional<std::string> class_name, std::optional<int> k,
             uint64_t seed) {
            Inputs in = inputs_of(images);
            const std::string cls = class_name.value_or("");
            py::gil_scoped_release unlocked;
            std::lock_guard<std::mutex> turn(p.busy);
            gad::Detector& d = p.detector;
            if (!in.views.empty()) {
              if (k) throw gad::Error("k: draws apply to paths; pass the arrays you want");
              return d.build_references(in.views, cls);
            }
            std::vector<std::string> paths = gad::list_images(in.paths);
            if (k) paths = gad::draw_references(paths, *k, seed);
            return d.build_references(paths, cls);
          },
          py::arg("images"), py::arg("class_name") = py::none(), py::arg("k") = py::none(), py::arg("seed") = 0,
          "Reference set from normal images (paths, directories, numpy arrays or PIL images); k draws K of the\n"
          "paths with seed")
      .def(
          "load_references",
          [](LockedDetector& p, const std::string& path) {
            py::gil_scoped_release unlocked;
            std::lock_guard<std::mutex> turn(p.busy);
            return p.detector.load_references(path);
          },
          py::arg("path"), "Load a .gadref made for this detector's model (its checksum is verified)")
      .def(
          "calibrate",
          [](LockedDetector& p, const gad::References& refs, std::optional<py::sequence> normals, double far,
             bool allow_few) {
            Inputs in = normals ? inputs_of(*normals) : Inputs{};
            const gad::CalibrationOptions c{far, allow_few};
            py::gil_scoped_release unlocked;
            std::lock_guard<std::mutex> turn(p.busy);
            gad::Detector& d = p.detector;
            if (!in.views.empty()) return d.calibrate(refs, in.views, c);
            return d.calibrate(refs, in.paths.empty() ? in.paths : gad::list_images(in.paths), c);
          },
          py::arg("refs"), py::arg("normals") = py::none(), py::arg("far") = 0.05, py::arg("allow_few") = false,
          "A calibrated copy: threshold from held-out normals (never the references; or leave-one-out over them);\n"
          "fewer normals than far needs raise unless allow_few")
      .def(
          "score",
          [](LockedDetector& p, const gad::References& refs, const py::sequence& images, bool maps, int batch,
             bool use_threshold) {
            gad::ScoreOptions o;
            o.batch = batch;
            o.use_threshold = use_threshold;
            o.map = maps ? gad::MapKind::Patch : gad::MapKind::None;
            return score_records(p, images, maps, [&](gad::Detector& d, const Inputs& in) {
              return in.views.empty() ? d.score(refs, gad::list_images(in.paths), o) : d.score(refs, in.views, o);
            });
          },
          py::arg("refs"), py::arg("images"), py::arg("maps") = false, py::arg("batch") = 8,
          py::arg("use_threshold") = true,
          "Score images: a list of dicts, one per image in order: (path, score, s_patch, ..., [anomalous,] ms\n"
          "[, map: float32 HxW in image pixels]) or, for an image that could not be scored, (path, error) with no\n"
          "score and no verdict. use_threshold=False: scores without a verdict.")
      .def(
          "score_zero_shot",
          [](LockedDetector& p, const py::sequence& images, bool maps, bool use_threshold, double z,
             const std::string& class_name) {
            gad::ScoreOptions o;
            o.use_threshold = use_threshold;
            o.zero_shot_z = z;
            o.class_name = class_name;
            o.map = maps ? gad::MapKind::Patch : gad::MapKind::None;
            return score_records(p, images, maps, [&](gad::Detector& d, const Inputs& in) {
              return in.views.empty() ? d.score_zero_shot(gad::list_images(in.paths), o) : d.score_zero_shot(in.views, o);
            });
          },
          py::arg("images"), py::arg("maps") = false, py::arg("use_threshold") = true, py::arg("z") = 3.5,
          py::arg("class_name") = "",
          "Zero-shot, no reference set: MuSc (the images score each other; at least 5 with the default options), or\n"
          "WinCLIP's text prompts for class_name on a detector made with scorer='winclip' (CLIP models).\n"
          "Dicts as score() gives; with use_threshold each carries the collection's robust-z verdict\n"
          "(anomalous, threshold, verdict_rule).");

  m.def(
      "load_references",
      [](const std::string& path, LockedDetector& p) {
        py::gil_scoped_release unlocked;
        std::lock_guard<std::mutex> turn(p.busy);
        return p.detector.load_references(path);
      },
      py::arg("path"), py::arg("detector"), "Load a .gadref made for this detector's model");
  m.def("set_threads", &gad::set_threads, py::arg("threads"), "process-wide compute threads (0 = every core)");
}
