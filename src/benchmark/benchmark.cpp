#include "benchmark/benchmark.h"

#include <torch/csrc/api/include/torch/version.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <sstream>

#include "data/mvtec_layout.h"
#include "eval/metrics.h"
#include "eval/pixel_metrics.h"
#include "report/svg_plot.h"
#include "image/image.h"
#include "scorers/reference_set.h"
#include "inctrl/scorer.h"
#include "inctrl/stats_head.h"
#include "maps/anomaly_map.h"
#include "report/html_report.h"
#include "report/thumbnails.h"
#include "dino/anomalydino.h"
#include "methods/method.h"
#include "scorers/musc.h"
#include "model/runtime.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/image_list.h"
#include "util/progress.h"

namespace fs = std::filesystem;

namespace gad {
namespace {

using Category = DatasetCategory;

struct Draw {
  std::string dataset, category;
  int k = 0, draw = 0;
  std::vector<std::string> references;  // image paths, or "FILE#i" for the prompts of a prompt file
  std::string prompt_file;              // set when the references come from --prompt-sets
  std::string prompt_sha256;
};

struct Result {
  std::string dataset, category, method;
  int k, draw;
  double auroc, auprc;
  int n_normal, n_anomalous;
  double ms_per_image;
  double pixel_auroc = -1, aupro = -1;  // -1: no ground-truth masks
};

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::vector<Category> discover(const std::vector<std::string>& roots) {
  std::vector<Category> cats = discover_categories(roots);
  for (const auto& c : cats)
    if (!c.masks_note.empty()) std::fprintf(stderr, "gad: %s; no pixel metrics for this category\n", c.masks_note.c_str());
  return cats;
}

// FNV-1a over the names, then k and the draw index: every (category, K, draw) gets its own,
// platform-independent seed.
uint64_t draw_seed(uint64_t seed, const std::string& dataset, const std::string& category, int k, int draw) {
  uint64_t h = name_seed(seed, dataset + "/" + category);
  h = (h ^ static_cast<uint64_t>(k)) * 1099511628211ull;
  return (h ^ static_cast<uint64_t>(draw)) * 1099511628211ull;
}

std::vector<Draw> make_draws(const BenchOptions& o, const std::vector<Category>& cats) {
  std::vector<Draw> draws;
  for (const auto& c : cats)
    for (int k : o.ks)
      for (int d = 0; d < o.draws; ++d)
        draws.push_back({c.dataset, c.name, k, d, draw_references(c.train, k, draw_seed(o.seed, c.dataset, c.name, k, d))});
  return draws;
}

// The released layout: one fixed draw per (category, K) in DIR/<K>/<category>.pt.
std::vector<Draw> prompt_set_draws(const BenchOptions& o, const std::vector<Category>& cats) {
  std::vector<Draw> draws;
  for (const auto& c : cats)
    for (int k : o.ks) {
      const std::string file = o.prompt_sets_dir + "/" + std::to_string(k) + "/" + c.name + ".pt";
      if (!fs::is_regular_file(file))
        fail("--prompt-sets: no prompt set for ", c.dataset, "/", c.name, " at K = ", k, " (looked for ", file, ")");
      draws.push_back({c.dataset, c.name, k, 0, {}, file});
    }
  return draws;
}

std::vector<Draw> load_draws(const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file_text(path));
    std::vector<Draw> draws;
    for (const auto& e : j.at("draws"))
      draws.push_back({e.at("dataset"), e.at("category"), e.at("k"), e.at("draw"),
                       e.at("references").get<std::vector<std::string>>(), e.value("prompt_file", std::string()), ""});
    return draws;
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": not a gad draws file (", e.what(), ")");
  }
}

void write_draws(const std::string& path, const BenchOptions& o, const std::vector<Draw>& draws) {
  nlohmann::ordered_json j;
  j["seed"] = o.seed;
  j["draws"] = nlohmann::json::array();
  for (const auto& d : draws)
    j["draws"].push_back({{"dataset", d.dataset}, {"category", d.category}, {"k", d.k}, {"draw", d.draw},
                          {"references", d.references}});
  for (size_t i = 0; i < draws.size(); ++i)
    if (!draws[i].prompt_file.empty()) {
      j["draws"][i]["prompt_file"] = draws[i].prompt_file;
      j["draws"][i]["prompt_sha256"] = draws[i].prompt_sha256;
    }
  std::string text = j.dump(1) + "\n";
  write_file_atomically(path, [&](std::FILE* f) { std::fwrite(text.data(), 1, text.size(), f); });
}

void write_text(const std::string& path, const std::string& text) {
  write_file_atomically(path, [&](std::FILE* f) { std::fwrite(text.data(), 1, text.size(), f); });
}

std::string mean_std(const std::vector<double>& v) {
  double m = std::accumulate(v.begin(), v.end(), 0.0) / v.size(), ss = 0;
  for (double x : v) ss += (x - m) * (x - m);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f ± %.3f", m, v.size() > 1 ? std::sqrt(ss / (v.size() - 1)) : 0.0);
  return buf;
}

// One table per K: a row per method, a column per category (AUROC / AUPRC, mean ± std over
// draws) plus the mean over categories; the best AUROC of each column in bold.
// The K values of the tables: K = 0 first when zero-shot MuSc ran.
std::vector<int> table_ks(const BenchOptions& o) {
  std::vector<int> ks = o.ks;
  if (std::find(o.methods.begin(), o.methods.end(), "musc") != o.methods.end()) ks.insert(ks.begin(), 0);
  return ks;
}

std::string summary_tables(const BenchOptions& o, const std::vector<Result>& results) {
  std::vector<std::string> cols;
  for (const auto& r : results) {
    std::string c = r.dataset + "/" + r.category;
    if (std::find(cols.begin(), cols.end(), c) == cols.end()) cols.push_back(c);
  }
  std::ostringstream md;
  for (int k : table_ks(o)) {
    md << "\n### K = " << k << (k == 0 ? " (zero-shot: no references)" : "") << "\n\n| method |";
    for (const auto& c : cols) md << " " << c << " |";
    md << " mean |\n|---|";
    for (size_t i = 0; i <= cols.size(); ++i) md << "---|";
    md << "\n";
    std::map<std::string, std::vector<std::string>> cells;
    std::vector<double> best(cols.size() + 1, -1);
    std::map<std::string, std::vector<double>> auroc_means;
    for (const auto& m : o.methods) {
      std::vector<double> per_cat_auroc, per_cat_auprc;
      for (size_t i = 0; i < cols.size(); ++i) {
        std::vector<double> a, p;
        for (const auto& r : results)
          if (r.method == m && r.k == k && r.dataset + "/" + r.category == cols[i]) {
            a.push_back(r.auroc);
            p.push_back(r.auprc);
          }
        if (a.empty()) {
          cells[m].push_back("–");
          auroc_means[m].push_back(-1);
          continue;
        }
        double am = std::accumulate(a.begin(), a.end(), 0.0) / a.size();
        per_cat_auroc.push_back(am);
        per_cat_auprc.push_back(std::accumulate(p.begin(), p.end(), 0.0) / p.size());
        cells[m].push_back(mean_std(a) + " / " + mean_std(p));
        auroc_means[m].push_back(am);
        best[i] = std::max(best[i], am);
      }
      if (per_cat_auroc.empty()) {
        cells[m].push_back("–");
        auroc_means[m].push_back(-1);
        continue;
      }
      double am = std::accumulate(per_cat_auroc.begin(), per_cat_auroc.end(), 0.0) / per_cat_auroc.size();
      double pm = std::accumulate(per_cat_auprc.begin(), per_cat_auprc.end(), 0.0) / per_cat_auprc.size();
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f / %.3f", am, pm);
      cells[m].push_back(buf);
      auroc_means[m].push_back(am);
      best[cols.size()] = std::max(best[cols.size()], am);
    }
    for (const auto& m : o.methods) {
      md << "| " << m << " |";
      for (size_t i = 0; i < cells[m].size(); ++i) {
        bool is_best = auroc_means[m][i] >= 0 && auroc_means[m][i] == best[i];
        md << " " << (is_best ? "**" : "") << cells[m][i] << (is_best ? "**" : "") << " |";
      }
      md << "\n";
    }
  }
  return md.str();
}

// Pixel-level results (categories with ground-truth masks): one table per K, a row per category
// and a column per method that has a map, pixel AUROC / AUPRO as mean ± std over draws.
std::string pixel_tables(const BenchOptions& o, const std::vector<Result>& results) {
  std::vector<std::string> cats, methods;
  for (const auto& r : results) {
    if (r.aupro < 0) continue;
    std::string c = r.dataset + "/" + r.category;
    if (std::find(cats.begin(), cats.end(), c) == cats.end()) cats.push_back(c);
    if (std::find(methods.begin(), methods.end(), r.method) == methods.end()) methods.push_back(r.method);
  }
  if (cats.empty()) return "";
  std::ostringstream md;
  md << "\n## Pixel level\n\nCells: pixel AUROC / AUPRO (FPR ≤ 0.3), mean ± std over draws, from the patch residual map "
        "in image coordinates (the `gad score --maps` map), maps and masks shrunk to a longer side of "
     << o.pixel_max_side << " px.\n";
  for (int k : table_ks(o)) {
    md << "\n### K = " << k << ", pixel level\n\n| category |";
    for (const auto& m : methods) md << " " << m << " |";
    md << "\n|---|";
    for (size_t i = 0; i < methods.size(); ++i) md << "---|";
    md << "\n";
    for (const auto& c : cats) {
      md << "| " << c << " |";
      for (const auto& m : methods) {
        std::vector<double> a, p;
        for (const auto& r : results)
          if (r.method == m && r.k == k && r.aupro >= 0 && r.dataset + "/" + r.category == c) {
            a.push_back(r.pixel_auroc);
            p.push_back(r.aupro);
          }
        md << " " << (a.empty() ? "–" : mean_std(a) + " / " + mean_std(p)) << " |";
      }
      md << "\n";
    }
  }
  return md.str();
}

// report.html tables: one per K, a row per (category, method), cells mean ± std over draws.
std::vector<ReportTable> report_tables(const BenchOptions& o, const std::vector<Result>& results) {
  std::vector<ReportTable> tables;
  for (int k : table_ks(o)) {
    ReportTable t{"K = " + std::to_string(k) + " (mean ± std over draws)",
                  {"category", "scorer", "AUROC", "AUPRC", "pixel AUROC", "AUPRO"}, {}};
    std::vector<std::pair<std::string, std::string>> keys;
    for (const auto& r : results)
      if (r.k == k && std::find(keys.begin(), keys.end(), std::make_pair(r.dataset + "/" + r.category, r.method)) == keys.end())
        keys.emplace_back(r.dataset + "/" + r.category, r.method);
    for (const auto& [cat, method] : keys) {
      std::vector<double> a, p, pa, pro;
      for (const auto& r : results)
        if (r.k == k && r.method == method && r.dataset + "/" + r.category == cat) {
          a.push_back(r.auroc);
          p.push_back(r.auprc);
          if (r.aupro >= 0) {
            pa.push_back(r.pixel_auroc);
            pro.push_back(r.aupro);
          }
        }
      t.rows.push_back({cat, method, mean_std(a), mean_std(p), pa.empty() ? "–" : mean_std(pa), pro.empty() ? "–" : mean_std(pro)});
    }
    if (!t.rows.empty()) tables.push_back(std::move(t));
  }
  return tables;
}

struct Outputs {
  std::vector<Result> results;
  CsvTable scores_csv{{"dataset", "category", "scorer", "k", "draw", "path", "label", "score"}};
  std::vector<ReportSection> report_sections;  // one per finished category (--report)
};

void write_outputs(const BenchOptions& o, const Outputs& out, const std::string& model_line, const char* precision,
                   int threads, size_t finished, size_t total) {
  const bool pixel = std::any_of(out.results.begin(), out.results.end(), [](const Result& r) { return r.aupro >= 0; });
  std::vector<std::string> header = {"dataset", "category", "scorer",      "k",           "draw",
                                     "AUROC",   "AUPRC",    "n_normal", "n_anomalous", "ms_per_image"};
  if (pixel) header.insert(header.end(), {"pixel_AUROC", "AUPRO"});
  CsvTable csv(header);
  for (const auto& r : out.results) {
    std::vector<std::string> row = {r.dataset,  r.category, r.method, std::to_string(r.k), std::to_string(r.draw),
                                    csv_number(r.auroc, "%.10f"), csv_number(r.auprc, "%.10f"),
                                    std::to_string(r.n_normal), std::to_string(r.n_anomalous),
                                    csv_number(r.ms_per_image, "%.3f")};
    const bool has_pixel = r.aupro >= 0;
    if (pixel)
      row.insert(row.end(), {csv_number(has_pixel ? std::optional<double>(r.pixel_auroc) : std::nullopt, "%.10f"),
                             csv_number(has_pixel ? std::optional<double>(r.aupro) : std::nullopt, "%.10f")});
    csv.add_row(row);
  }
  write_text(o.out_dir + "/results.csv", csv.text());
  write_text(o.out_dir + "/scores.csv", out.scores_csv.text());
  std::ostringstream md;
  md << "# gad bench\n\n"
     << "- command: `" << o.command_line << "`\n"
     << "- gad " << GAD_VERSION << ", LibTorch " << TORCH_VERSION << "\n"
     << "- model: " << model_line << "\n"
     << "- precision " << precision << ", " << threads << " thread(s), "
     << (o.prompt_sets_dir.empty() ? "seed " + std::to_string(o.seed) + ", " + std::to_string(o.draws) + " draw(s) per K"
                                   : "references: the fixed prompt sets " + o.prompt_sets_dir +
                                         "/<K>/<category>.pt (one draw per K; files and sha256 in draws.json)")
     << "\n"
     << "- categories finished: " << finished << " of " << total << "\n"
     << "\nCells: AUROC / AUPRC, mean ± sample std over draws; best AUROC per column in bold.\n"
     << summary_tables(o, out.results) << pixel_tables(o, out.results);
  write_text(o.out_dir + "/summary.md", md.str());
}

// OUT/maps.csv (--dump-maps): what the heads see, one row per (test image, K, draw). s_img and
// s_hol are empty without heads.
class MapDump {
 public:
  MapDump(const std::string& path, const Backbone& bb, const std::optional<InctrlHeads>& heads)
      : file_(path), scorer_(bb, heads), patch_scorer_(bb, std::nullopt), scorer_grid_(bb.grid()) {}
  void add(const std::string& dataset, const std::string& category, int k, int draw, const std::vector<std::string>& paths,
           const std::vector<int>& labels, size_t first, const ReferenceSet& refs, const Features& f) {
    const InctrlScores s = scorer_.score(refs, f);
    const at::Tensor m = s.residual_map.contiguous();
    const at::Tensor g = global_residuals(refs, f).contiguous();  // [B, 2]
    const std::string run = dataset + "/" + category + "|" + std::to_string(k) + "|" + std::to_string(draw);
    auto cached = self_.find(run);
    if (cached == self_.end()) cached = self_.emplace(run, reference_self_residuals(refs)).first;
    const std::vector<double>& self = cached->second;
    if (!header_) {
      file_ << "dataset,category,k,draw,path,label,s_patch,s_img,s_hol,g_mean,g_nn,ref_max,ref_top2,ref_top10,ref_gnn";
      for (int64_t j = 0; j < m.size(1); ++j) file_ << ",m" << j;
      file_ << "\n";
      header_ = true;
    }
    for (int64_t b = 0; b < m.size(0); ++b) {
      file_ << dataset << ',' << category << ',' << k << ',' << draw << ',' << paths[first + b] << ',' << labels[first + b]
            << ',' << csv_number(s.s_patch[b].item<double>()) << ','
            << (s.s_img.defined() ? csv_number(s.s_img[b].item<double>()) : "") << ','
            << (s.s_hol.defined() ? csv_number(s.s_hol[b].item<double>()) : "") << ','
            << csv_number(g[b][0].item<double>()) << ',' << csv_number(g[b][1].item<double>());
      for (double v : self) file_ << ',' << (std::isnan(v) ? "" : csv_number(v));
      const float* row = m[b].data_ptr<float>();
      for (int64_t j = 0; j < m.size(1); ++j) file_ << ',' << csv_number(row[j], "%.6g");
      file_ << '\n';
    }
    if (!file_) fail("bench: cannot write maps.csv");
  }

  // Image-level residuals of the raw global features: ½(1 − cos(query, mean reference)) and
  // ½(1 − max_k cos(query, reference k)), [B, 2].
  static at::Tensor global_residuals(const ReferenceSet& refs, const Features& f) {
    const at::Tensor q = f.global / f.global.norm(2, -1, true);
    const at::Tensor r = refs.globals / refs.globals.norm(2, -1, true);
    at::Tensor mean = r.mean(0);
    mean = mean / mean.norm();
    const at::Tensor to_mean = 0.5 * (1 - at::matmul(q, mean));
    const at::Tensor to_nearest = 0.5 * (1 - std::get<0>(at::matmul(q, r.t()).max(1)));
    return at::stack({to_mean, to_nearest}, 1).to(at::kDouble);
  }
  // How anomalous the references look to each other: each reference scored leave-one-out against
  // the other K − 1 (patch residual map statistics max, top 2 %, top 10 % and the nearest-global
  // residual), averaged over the K references; NaN for K = 1 and on backbones whose grid follows
  // each image (DINOv2: references of different sizes have no common grid).
  std::vector<double> reference_self_residuals(const ReferenceSet& refs) const {
    const int64_t k = refs.k();
    if (k < 2 || scorer_grid_ == 0 || refs.views != 1) return std::vector<double>(4, std::nan(""));
    at::Tensor sum = at::zeros({4}, at::kDouble);
    for (int64_t i = 0; i < k; ++i) {
      const HeldOutReference h = hold_out_reference(refs, i);
      const at::Tensor m = patch_scorer_.score(h.rest, h.query).residual_map;
      sum += at::cat({StatsHead::statistics(m)[0].to(at::kDouble), global_residuals(h.rest, h.query)[0].slice(0, 1)});
    }
    sum /= static_cast<double>(k);
    return {sum[0].item<double>(), sum[1].item<double>(), sum[2].item<double>(), sum[3].item<double>()};
  }

 private:
  std::ofstream file_;
  InctrlScorer scorer_, patch_scorer_;  // with the model's heads; without (the references' own M)
  int64_t scorer_grid_;
  std::map<std::string, std::vector<double>> self_;  // per (dataset/category, K, draw)
  bool header_ = false;
};

// Scores of one (K, draw, method) over a category's test images.
struct Run {
  int k, draw;
  ReferenceSet refs;
  std::vector<std::vector<double>> scores;  // per method
  std::vector<double> seconds;              // per method
  std::vector<std::vector<float>> maps;     // patch residual grid per test image (pixel metrics, report)
  PixelMetrics pixel{-1, -1};
  // The same references with their rotations, for methods that want them (anomalydino-rot).
  ReferenceSet rotated;
  std::vector<std::vector<float>> rotated_maps;
  PixelMetrics rotated_pixel{-1, -1};
};

// The methods whose localisation is the patch residual map (InCTRL's M; patch-knn is M alone;
// AnomalyDINO's distances are 2M, which ranks pixels the same).
bool has_patch_map(const std::string& method) {
  return method == "inctrl" || method == "patch-knn" || method == "anomalydino" || method == "anomalydino-rot";
}

// Zero-shot MuSc over one category's test images: their features, collected as the images are
// encoded (the backbone's own features when MuSc asks for the native ones, else a second encode),
// scored against each other once all are in.
class ZeroShotRun {
 public:
  explicit ZeroShotRun(const Backbone& bb) : bb_(bb), options_(scorers::musc_options(bb, nlohmann::json::object(), "musc")),
                                             request_(scorers::musc_request(bb, options_)) {}
  void add(const Features& native, const std::vector<std::string>& paths) {
    const double t0 = now_s();
    for (size_t b = 0; b < paths.size(); ++b) {
      Features f = native;
      int64_t row = static_cast<int64_t>(b);
      if (!request_.native()) {
        const PixelTensor px = bb_.preprocess(decode_image(paths[b]), request_);
        f = bb_.encode(stack_pixels({px}), request_);
        geometry_.push_back(px.geometry);
        row = 0;
      }
      if (layers_.empty()) layers_.resize(f.taps.size());
      for (size_t l = 0; l < f.taps.size(); ++l) layers_[l].push_back(f.taps[l][row].clone());
      cls_.push_back(f.global[row].clone());
      grid_ = f.grid_w;
    }
    seconds_ += now_s() - t0;
  }
  // Scores [N] and patch maps (one grid per image); geometry when MuSc had its own input.
  at::Tensor finish(std::vector<std::vector<float>>& maps, std::vector<CropGeometry>& geometry, int& grid_w) {
    const double t0 = now_s();
    std::vector<at::Tensor> layers;
    for (auto& l : layers_) layers.push_back(at::stack(l));
    const int map_size = request_.square ? request_.square : static_cast<int>(bb_.input_size());
    const scorers::MuscResult m = scorers::musc_score(layers, at::stack(cls_), grid_, map_size, options_);
    for (int64_t i = 0; i < m.patch_map.size(0); ++i) {
      const at::Tensor g = m.patch_map[i].to(at::kFloat).contiguous();
      maps.emplace_back(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
    }
    geometry = geometry_;
    grid_w = static_cast<int>(grid_);
    seconds_ += now_s() - t0;
    return m.score.to(at::kDouble).contiguous();
  }
  double seconds() const { return seconds_; }

 private:
  const Backbone& bb_;
  scorers::MuscOptions options_;
  FeatureRequest request_;
  std::vector<std::vector<at::Tensor>> layers_;
  std::vector<at::Tensor> cls_;
  std::vector<CropGeometry> geometry_;
  int64_t grid_ = 0;
  double seconds_ = 0;
};

// The references of one draw as one set: each unique image's features (one row per view),
// selected by `index` (the bank holds every patch of every selected image).
ReferenceSet select_references(const Backbone& bb, const std::vector<at::Tensor>& globals,
                               const std::vector<std::vector<at::Tensor>>& taps, const std::vector<int64_t>& index,
                               const at::Tensor& text, const std::string& name, int views) {
  Features f;
  std::vector<at::Tensor> g;
  std::vector<std::vector<at::Tensor>> t(taps.empty() ? 0 : taps[0].size());
  for (int64_t i : index) {
    g.push_back(globals[i]);
    for (size_t l = 0; l < t.size(); ++l) t[l].push_back(taps[i][l]);
  }
  f.global = at::cat(g);
  for (auto& layer : t) f.taps.push_back(at::cat(layer).unsqueeze(0));  // [1, sum of patches, C]
  ReferenceSet set = ReferenceSet::from_features(bb, f, text, {}, name);
  set.views = views;
  return set;
}

at::Tensor rows(const at::Tensor& t, const std::vector<int64_t>& idx) {
  return t.index_select(0, at::tensor(idx, at::kLong));
}

}  // namespace

int run_benchmark(const BenchOptions& o, const std::atomic<bool>* stop) {
  if (o.roots.empty()) fail("bench: no dataset given (--data ROOT)");
  if (o.out_dir.empty()) fail("bench: no output directory given (-o OUTDIR)");
  if (o.draws < 1) fail("--draws: must be at least 1");
  for (int k : o.ks)
    if (k < 1) fail("--k: every K must be at least 1 (got ", k, ")");
  int threads = configure_threads(o.threads);
  LoadedModel model = load_model(o.files);
  Backbone& bb = *model.backbone;
  bb.set_precision(parse_precision(o.precision));
  std::vector<std::unique_ptr<Method>> methods;
  const bool zero_shot = std::find(o.methods.begin(), o.methods.end(), "musc") != o.methods.end();
  for (const auto& name : o.methods)
    if (name != "musc") methods.push_back(make_method(name, model));
  std::vector<Category> cats = discover(o.roots);
  if (!o.prompt_sets_dir.empty() && !o.draws_file.empty()) fail("--prompt-sets and --draws-file are exclusive");
  std::vector<Draw> draws = !o.prompt_sets_dir.empty() ? prompt_set_draws(o, cats)
                            : o.draws_file.empty()     ? make_draws(o, cats)
                                                       : load_draws(o.draws_file);
  // Prompt files hold preprocessed images: their pixels are read once and used as they are.
  std::map<std::string, PixelTensor> prompt_pixels;
  for (auto& d : draws) {
    if (d.prompt_file.empty()) continue;
    PromptFile pf = read_prompt_file(d.prompt_file, bb.input_size());
    d.references.clear();
    d.prompt_sha256 = pf.sources.front().sha256;
    for (size_t i = 0; i < pf.pixels.size(); ++i) {
      d.references.push_back(pf.sources[i].path);
      prompt_pixels[pf.sources[i].path] = std::move(pf.pixels[i]);
    }
  }
  fs::create_directories(o.out_dir);
  write_draws(o.out_dir + "/draws.json", o, draws);
  fs::create_directories(o.out_dir + "/curves");
  const std::string model_line = bb.description() + ", fingerprint " + bb.fingerprint() +
                                 (model.heads ? ", heads " + model.heads_source : ", no heads");

  at::NoGradGuard no_grad;
  size_t total_images = 0, done_images = 0;
  for (const auto& c : cats) total_images += c.test.size();
  const Progress bar(total_images, "images");
  Outputs out;
  size_t finished = 0;
  std::vector<CropGeometry> geometries;  // of the current batch of test images
  auto load_pixels = [&](const std::vector<std::string>& paths) {
    std::vector<PixelTensor> px;
    geometries.clear();
    for (const auto& p : paths) {
      auto prompt = prompt_pixels.find(p);
      px.push_back(prompt != prompt_pixels.end() ? prompt->second : bb.preprocess(decode_image(p)));
      geometries.push_back(px.back().geometry);
    }
    return stack_pixels(px);
  };
  InctrlScorer patch_scorer(bb, std::nullopt);
  std::optional<MapDump> dump;
  if (o.dump_maps) dump.emplace(o.out_dir + "/maps.csv", bb, model.heads);
  const int batch = bb.grid() ? o.batch : 1;  // DINOv2 inputs differ in size: one at a time
  const bool rotations = std::any_of(methods.begin(), methods.end(), [](const auto& m) { return m->wants_rotated_references(); });
  Thumbnails thumbnails;  // the map of `gad score --maps`: the patch residual
  for (const auto& c : cats) {
    // References of every draw of this category, each unique image encoded once.
    std::vector<Run> runs;
    std::vector<std::string> unique;
    std::vector<std::vector<int64_t>> index;
    for (const auto& d : draws) {
      if (d.dataset != c.dataset || d.category != c.name) continue;
      std::vector<int64_t> idx;
      for (const auto& r : d.references) {
        auto it = std::find(unique.begin(), unique.end(), r);
        idx.push_back(it - unique.begin());
        if (it == unique.end()) unique.push_back(r);
      }
      index.push_back(idx);
      runs.push_back({d.k, d.draw, {}, std::vector<std::vector<double>>(methods.size()), std::vector<double>(methods.size()), {},
                      {-1, -1}, {}, {}, {-1, -1}});
    }
    if (runs.empty()) fail(o.draws_file, ": no draws for ", c.dataset, "/", c.name);
    bar.update(done_images, c.dataset + "/" + c.name + ": references");
    // Per unique reference: its global(s) [views, D] and per tap its patch rows [views·P, C].
    std::vector<at::Tensor> ref_globals, rot_globals;
    std::vector<std::vector<at::Tensor>> ref_taps, rot_taps;
    at::Tensor ref_pixels;  // [n, 3, H, W] on fixed-grid backbones (WinCLIP's windows)
    auto keep = [](const Features& f, int64_t b, int64_t views, std::vector<at::Tensor>& g,
                   std::vector<std::vector<at::Tensor>>& t) {
      g.push_back(f.global.slice(0, b, b + views));
      t.emplace_back();
      for (const auto& tap : f.taps) t.back().push_back(tap.slice(0, b, b + views).reshape({-1, tap.size(-1)}));
    };
    for (size_t s = 0; s < unique.size(); s += batch) {
      at::Tensor px = load_pixels({unique.begin() + s, unique.begin() + std::min(unique.size(), s + batch)});
      Features f = bb.encode(px);
      for (int64_t b = 0; b < px.size(0); ++b) keep(f, b, 1, ref_globals, ref_taps);
      if (bb.grid()) ref_pixels = ref_pixels.defined() ? at::cat({ref_pixels, px}) : px;
    }
    if (rotations)
      for (const auto& u : unique) {  // AnomalyDINO's augment_image: the image and 7 rotations
        if (prompt_pixels.count(u)) fail("anomalydino-rot: prompt files hold preprocessed images and cannot be rotated");
        const Image image = decode_image(u);
        std::vector<PixelTensor> views;
        for (int v = 0; v < kAnomalyDinoRotations; ++v) views.push_back(bb.preprocess(v ? rotate_image(image, 45.0 * v) : image));
        Features f = bb.grid() ? bb.encode(stack_pixels(views)) : Features{};
        if (!bb.grid()) {  // one view at a time: their grids may differ
          std::vector<at::Tensor> g;
          std::vector<std::vector<at::Tensor>> t(1);
          for (const auto& v : views) {
            Features one = bb.encode(stack_pixels({v}));
            g.push_back(one.global);
            t[0].push_back(one.taps[0][0]);
          }
          rot_globals.push_back(at::cat(g));
          rot_taps.push_back({at::cat(t[0])});
          continue;
        }
        keep(f, 0, kAnomalyDinoRotations, rot_globals, rot_taps);
      }
    at::Tensor text = bb.has_text() ? bb.text_prior(c.name) : at::Tensor();
    for (size_t r = 0; r < runs.size(); ++r) {
      runs[r].refs = select_references(bb, ref_globals, ref_taps, index[r], text, c.name, 1);
      if (rotations) runs[r].rotated = select_references(bb, rot_globals, rot_taps, index[r], text, c.name, kAnomalyDinoRotations);
    }
    for (size_t r = 0; r < runs.size(); ++r)
      for (auto& m : methods) m->prepare(runs[r].refs, ref_pixels.defined() ? rows(ref_pixels, index[r]) : at::Tensor());
    // Test images: encoded once, scored by every (K, draw, method).
    double encode_seconds = 0;
    bool interrupted = false;
    const bool want_maps = !c.masks.empty() || o.report;
    std::vector<CropGeometry> test_geometry;
    std::vector<int> test_grid_w;  // columns of each test image's map grid
    auto add_maps = [&](const ReferenceSet& refs, const Features& f, std::vector<std::vector<float>>& maps) {
      at::Tensor m = patch_scorer.score(refs, f).residual_map.contiguous();
      for (int64_t b = 0; b < m.size(0); ++b) maps.emplace_back(m[b].data_ptr<float>(), m[b].data_ptr<float>() + m.size(1));
    };
    std::optional<ZeroShotRun> musc;
    if (zero_shot) musc.emplace(bb);
    for (size_t s = 0; s < c.test.size() && !interrupted; s += batch) {
      std::vector<std::string> paths(c.test.begin() + s, c.test.begin() + std::min(c.test.size(), s + batch));
      double t0 = now_s();
      at::Tensor px = load_pixels(paths);
      Features f = bb.encode(px);
      encode_seconds += now_s() - t0;
      if (musc) musc->add(f, paths);
      test_geometry.insert(test_geometry.end(), geometries.begin(), geometries.end());
      test_grid_w.insert(test_grid_w.end(), paths.size(), static_cast<int>(f.grid_w));
      if (want_maps)
        for (auto& run : runs) {
          add_maps(run.refs, f, run.maps);
          if (rotations) add_maps(run.rotated, f, run.rotated_maps);
        }
      if (dump)
        for (const auto& run : runs) dump->add(c.dataset, c.name, run.k, run.draw, c.test, c.labels, s, run.refs, f);
      for (auto& run : runs)
        for (size_t m = 0; m < methods.size(); ++m) {
          double t1 = now_s();
          const ReferenceSet& refs = methods[m]->wants_rotated_references() ? run.rotated : run.refs;
          at::Tensor sc = methods[m]->score(refs, f, px).to(at::kDouble).contiguous();
          run.seconds[m] += now_s() - t1;
          run.scores[m].insert(run.scores[m].end(), sc.data_ptr<double>(), sc.data_ptr<double>() + sc.numel());
        }
      done_images += paths.size();
      bar.update(done_images, c.dataset + "/" + c.name);
      interrupted = stop && stop->load();
    }
    for (auto& run : runs)
      for (auto& m : methods) m->forget(run.refs);
    if (interrupted) {
      std::fprintf(stderr, "\ninterrupted: %s/%s dropped; results hold the %zu finished categories\n",
                   c.dataset.c_str(), c.name.c_str(), finished);
      break;
    }
    if (!c.masks.empty()) {
      bar.update(done_images, c.dataset + "/" + c.name + ": pixel metrics");
      std::vector<ImageMap> masks;  // at the metric size of each image's map
      auto metrics = [&](const std::vector<std::vector<float>>& grid_maps) {
        std::vector<ImageMap> maps;
        for (size_t i = 0; i < c.test.size(); ++i) {
          maps.push_back(shrink_map(map_to_image(grid_maps[i], test_grid_w[i], test_geometry[i]), o.pixel_max_side));
          if (masks.size() <= i)
            masks.push_back(c.masks[i].empty() ? ImageMap{maps[i].width, maps[i].height, std::vector<float>(maps[i].values.size())}
                                               : load_mask(c.masks[i], maps[i].width, maps[i].height));
        }
        return pixel_metrics(maps, masks);
      };
      for (auto& run : runs) {
        run.pixel = metrics(run.maps);
        if (rotations) run.rotated_pixel = metrics(run.rotated_maps);
      }
    }
    const int n_anom = std::accumulate(c.labels.begin(), c.labels.end(), 0);
    const int n_norm = static_cast<int>(c.labels.size()) - n_anom;
    if (musc) {  // K = 0: one row, no draws
      bar.update(done_images, c.dataset + "/" + c.name + ": zero-shot");
      std::vector<std::vector<float>> maps;
      std::vector<CropGeometry> geometry;
      int grid_w = 0;
      const at::Tensor sc = musc->finish(maps, geometry, grid_w);
      const std::vector<double> scores(sc.data_ptr<double>(), sc.data_ptr<double>() + sc.numel());
      out.results.push_back({c.dataset, c.name, "musc", 0, 0, roc_auc(c.labels, scores), average_precision(c.labels, scores),
                             n_norm, n_anom, (encode_seconds + musc->seconds()) * 1e3 / c.test.size(), -1, -1});
      if (!c.masks.empty()) {
        std::vector<ImageMap> shrunk, masks;
        for (size_t i = 0; i < c.test.size(); ++i) {
          const CropGeometry& g = geometry.empty() ? test_geometry[i] : geometry[i];
          shrunk.push_back(shrink_map(map_to_image(maps[i], grid_w, g), o.pixel_max_side));
          masks.push_back(c.masks[i].empty() ? ImageMap{shrunk[i].width, shrunk[i].height, std::vector<float>(shrunk[i].values.size())}
                                             : load_mask(c.masks[i], shrunk[i].width, shrunk[i].height));
        }
        const PixelMetrics px = pixel_metrics(shrunk, masks);
        out.results.back().pixel_auroc = px.auroc;
        out.results.back().aupro = px.aupro;
      }
      for (size_t i = 0; i < scores.size(); ++i)
        out.scores_csv.add_row({c.dataset, c.name, "musc", "0", "0", c.test[i], std::to_string(c.labels[i]), csv_number(scores[i])});
    }
    for (const auto& run : runs)
      for (size_t m = 0; m < methods.size(); ++m) {
        const auto& sc = run.scores[m];
        double ms = (encode_seconds + run.seconds[m]) * 1e3 / c.test.size();
        out.results.push_back({c.dataset, c.name, methods[m]->name(), run.k, run.draw, roc_auc(c.labels, sc),
                               average_precision(c.labels, sc), n_norm, n_anom, ms, -1, -1});
        if (has_patch_map(methods[m]->name())) {
          const PixelMetrics& px = methods[m]->wants_rotated_references() ? run.rotated_pixel : run.pixel;
          out.results.back().pixel_auroc = px.auroc;
          out.results.back().aupro = px.aupro;
        }
        for (size_t i = 0; i < sc.size(); ++i)
          out.scores_csv.add_row({c.dataset, c.name, methods[m]->name(), std::to_string(run.k), std::to_string(run.draw),
                                  c.test[i], std::to_string(c.labels[i]), csv_number(sc[i])});
      }
    for (int k : o.ks) {
      std::vector<PlotSeries> roc, pr;
      for (const auto& run : runs)
        if (run.k == k && run.draw == 0)
          for (size_t m = 0; m < methods.size(); ++m) {
            roc.push_back({methods[m]->name(), roc_curve(c.labels, run.scores[m])});
            pr.push_back({methods[m]->name(), pr_curve(c.labels, run.scores[m])});
          }
      if (!roc.empty())
        write_text(o.out_dir + "/curves/" + c.dataset + "_" + c.name + "_K" + std::to_string(k) + ".svg",
                   roc_pr_svg(c.dataset + "/" + c.name + ", K = " + std::to_string(k) + ", draw 0", roc, pr));
    }
    if (o.report) {  // the first run (first K, draw 0) of the first scorer with a map, else the first scorer
      size_t m = 0;
      for (size_t i = methods.size(); i-- > 0;)
        if (has_patch_map(methods[i]->name())) m = i;
      const Run& run = runs.front();
      ReportSection sec;
      sec.title = c.dataset + "/" + c.name;
      sec.note = "Scores: " + methods[m]->name() + ", K = " + std::to_string(run.k) + ", draw " + std::to_string(run.draw) +
                 "; ROC/PR: every scorer of that draw; thumbnails: the patch residual map on one colour scale.";
      for (size_t i = 0; i < c.test.size(); ++i) {
        sec.images.push_back({c.test[i], run.scores[m][i], c.labels[i]});
        thumbnails.add(c.test[i], run.maps[i], test_grid_w[i], test_geometry[i]);
      }
      for (size_t j = 0; j < methods.size(); ++j) {
        sec.roc.push_back({methods[j]->name(), roc_curve(c.labels, run.scores[j])});
        sec.pr.push_back({methods[j]->name(), pr_curve(c.labels, run.scores[j])});
      }
      out.report_sections.push_back(std::move(sec));
    }
    ++finished;
    write_outputs(o, out, model_line, precision_name(bb.precision()), threads, finished, cats.size());
  }
  std::fprintf(stderr, "\n");
  if (finished == 0) write_outputs(o, out, model_line, precision_name(bb.precision()), threads, 0, cats.size());
  if (o.report) {
    HtmlReport report;
    report.title = "gad bench report";
    report.facts = {"command: " + o.command_line, "model: " + model_line,
                    std::to_string(finished) + " of " + std::to_string(cats.size()) + " categories finished, " +
                        std::to_string(o.draws) + " draw(s) per K, seed " + std::to_string(o.seed),
                    "pixel metrics (categories with ground_truth/ masks): maps and masks shrunk to a longer side of " +
                        std::to_string(o.pixel_max_side) + " px"};
    report.tables = report_tables(o, out.results);
    report.sections = out.report_sections;
    write_text(o.out_dir + "/report.html", render_html_report(report, std::cref(thumbnails)));
  }
  return static_cast<int>(finished);
}

}  // namespace gad
