#include "cli/cli.h"

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <unistd.h>

#include "engine/catalog.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/image_list.h"

#include <nlohmann/json.hpp>

namespace gad::cli {

void ModelArgs::add_to(CLI::App* app) {
  app->add_option("--model", options.model,
                  "weight file: OpenCLIP/InCTRL .safetensors, .pt, .bin or .pyth; a lite model (tfjs model.json or gad\n"
                  "lite .safetensors); a fetched model's name (" + catalog_names().substr(6) + "); default or\n"
                  "'lite': the installed lite model (`gad models fetch lite`)");
  add_list_option(app, "--lite-taps", options.lite_taps, "lite model patch taps (default block_12_add, or a loaded set's; e.g. "
                  "block_12_add,block_5_add)");
  app->add_option("--config", options.config,
                  "CLIP architecture: ViT-B-16-plus-240 (default), ViT-B-16, ViT-B-32, ViT-L-14, or a JSON file");
  app->add_option("--heads", options.heads, "separate InCTRL adapter+heads file (overrides heads in --model); 'none' = no "
                  "heads (score = s_patch); 'lite' = the heads shipped for the lite model (see docs/models.md)");
  app->add_option("--resolution", options.resolution, "DINOv2: smaller image edge in px (default 448; inputs are cropped\n"
                  "to multiples of 14)");
  app->add_option("--threads", threads, "CPU threads (default: all cores)");
  app->add_option("--precision", precision,
                  "fp32 (reference-exact) | bf16 (fast; scores within ~0.01) | auto (default: bf16 if the CPU has "
                  "AVX512-BF16/AMX)")
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
  app->add_option("--max-pixels", options.max_pixels, "largest image accepted, width x height (default 40000000); "
                  "checked from the file header before decoding");
}

void ModelArgs::add_scorer_options(CLI::App* app) {
  app->add_option("--scorer", scorer, "inctrl | anomalydino (training-free patch matching, Damm et al. 2025) | subspacead\n"
                  "(PCA subspace of the references' patches, Lendering et al. 2026) | musc (zero-shot, with --zero-shot;\n"
                  "Li et al. 2024) | winclip (CLIP models: WinCLIP+ few-shot; with --zero-shot --class NAME its text\n"
                  "prompts alone) | patch-knn | image-knn (nearest-neighbour baselines) | auto (default: anomalydino on\n"
                  "DINOv2 models, else inctrl); a saved set keeps its scorer. See docs/scorers.md")
      ->check(CLI::IsMember({"auto", "inctrl", "anomalydino", "subspacead", "musc", "winclip", "patch-knn", "image-knn"}));
  app->add_option("--scorer-options", scorer_options_file, "a JSON file of the scorer's options (docs/scorers.md), e.g.\n"
                  "{\"image_res\": 448, \"pca_ev\": 0.99} for subspacead; default: the papers' settings");
  app->add_flag("--rotate", options.rotate, "anomalydino: add every reference rotated by 45, 90, ..., 315 degrees");
}

ModelOptions ModelArgs::resolve() {
  threads_in_use = set_threads(threads);
  options.precision = precision == "fp32" ? Precision::FP32 : precision == "bf16" ? Precision::BF16 : Precision::Auto;
  const std::pair<const char*, Scorer> names[] = {{"inctrl", Scorer::InCTRL}, {"anomalydino", Scorer::AnomalyDINO},
                                                  {"subspacead", Scorer::SubspaceAD}, {"musc", Scorer::MuSc},
                                                  {"winclip", Scorer::WinCLIP}, {"patch-knn", Scorer::PatchKNN},
                                                  {"image-knn", Scorer::ImageKNN}};
  options.scorer = Scorer::Auto;
  for (const auto& [name, value] : names)
    if (scorer == name) options.scorer = value;
  if (!scorer_options_file.empty()) {
    options.scorer_options = read_file_text(scorer_options_file);
    if (nlohmann::json::parse(options.scorer_options, nullptr, false).is_discarded())
      fail("--scorer-options: ", scorer_options_file, " is not valid JSON");
  }
  return options;
}

void RefArgs::add_images_and_class(CLI::App* app) {
  class_option = app->add_option("--class", class_name, "class name for the text prior (e.g. metal_nut; '_' reads as a space)");
  k_option = app->add_option("--k", k,
                  "draw K of the given images (directories are listed recursively and sorted by path; the draw is a\n"
                  "partial Fisher-Yates shuffle driven by std::mt19937_64(seed), j = i + rng() % (n - i), the same on\n"
                  "every machine); default: use every given image");
  seed_option = app->add_option("--seed", seed, "seed of the reference draw (default 0)");
  app->add_option("--prompts", prompts, "an InCTRL few-shot prompt file (fs_samples/<dataset>/<K>/<category>.pt: a torch.save\n"
                                        "of K preprocessed [3,H,W] tensors, or one [K,3,H,W]) as the references");
}

References RefArgs::build(Detector& detector) const {
  if (!refs_file.empty() + !ref_images.empty() + !prompts.empty() > 1)
    fail("--refs, --ref-images (or reference images) and --prompts are exclusive");
  auto given_option = [](const CLI::Option* o) { return o && o->count() > 0; };
  if (!refs_file.empty()) {
    for (const CLI::Option* o : {class_option, k_option, seed_option})
      if (given_option(o)) fail(o->get_name(), ": a saved set (--refs) keeps its own class and references; drop it");
    return load_set(detector, refs_file);
  }
  if (!given()) return {};
  if (given_option(k_option) && k < 1) fail("--k: must be at least 1 (got ", k, "); leave it out to use every image");
  if (class_name.empty() && detector.needs_class_name())
    fail("--class: a class name is required with reference images or --prompts (the scorer's text prompts)");
  if (!prompts.empty()) {
    if (given_option(k_option)) fail("--k: a prompt file is used whole (it holds its own K)");
    return detector.build_references_from_prompts(prompts, class_name);
  }
  std::vector<std::string> paths = expand_image_args(ref_images, "reference images");
  if (given_option(k_option)) paths = draw_references(paths, k, seed);
  return detector.build_references(paths, class_name);
}

References load_set(Detector& detector, const std::string& path) {
  References refs = detector.load_references(path);
  if (refs.integrity() == "unverified")
    log_warning(path + ": written before sets carried a checksum: loaded unverified (calibrate or rebuild it to add one)");
  return refs;
}

CLI::Option* add_list_option(CLI::App* app, const std::string& name, std::vector<std::string>& values,
                             const std::string& help) {
  return app->add_option(name, values, help)->delimiter(',')->allow_extra_args(false);
}

void log_line(const std::string& s) { std::fprintf(stderr, "gad: %s\n", s.c_str()); }
void log_warning(const std::string& s) { std::fprintf(stderr, "gad: warning: %s\n", s.c_str()); }

void prepare_output_dir(const std::string& option, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) fail(option, ": ", dir, " exists and is not a folder");
  fs::create_directories(dir, ec);
  if (ec) fail_as(ErrorKind::Io, option, ": cannot create the folder ", dir, " (", ec.message(), ")");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) fail_as(ErrorKind::Io, option, ": the folder ", dir, " is not writable");
}

void prepare_output_file(const std::string& option, const std::string& path) {
  namespace fs = std::filesystem;
  if (path.empty() || path.back() == '/') fail(option, ": '", path, "' is not a file name");
  std::error_code ec;
  if (fs::is_directory(path, ec)) fail(option, ": ", path, " is a folder, not a file");
  const fs::path parent = fs::path(path).parent_path();
  prepare_output_dir(option, parent.empty() ? "." : parent.string());
  if (fs::exists(path, ec) && ::access(path.c_str(), W_OK) != 0)
    fail_as(ErrorKind::Io, option, ": ", path, " exists and is not writable");
}

namespace {
std::atomic<bool> g_stop{false};  // process-wide by nature: set from a signal handler
extern "C" void set_stop_flag(int) { g_stop.store(true); }
std::atomic<bool> g_reload{false};
extern "C" void set_reload_flag(int) { g_reload.store(true); }
}  // namespace

void catch_reload_signal() { std::signal(SIGHUP, set_reload_flag); }

std::atomic<bool>& reload_requested() { return g_reload; }

void catch_stop_signals() {
  std::signal(SIGINT, set_stop_flag);
  std::signal(SIGTERM, set_stop_flag);
}

const std::atomic<bool>& stop_requested() { return g_stop; }

void write_bytes(const std::string& path, const std::string& bytes) {
  write_file_atomically(path, [&](std::FILE* f) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) fail_as(ErrorKind::Io, path, ": write failed");
  });
}

}  // namespace gad::cli
