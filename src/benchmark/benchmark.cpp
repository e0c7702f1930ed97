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
#include "scorers/musc.h"
#include "scorers/scorer.h"
#include "scorers/winclip.h"
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
// The zero-shot rows (K = 0): scored from the test images alone.
bool is_zero_shot(const std::string& name) { return name == "musc" || name == "winclip-zero-shot"; }

std::vector<int> table_ks(const BenchOptions& o) {
  std::vector<int> ks = o.ks;
  if (std::any_of(o.methods.begin(), o.methods.end(), is_zero_shot)) ks.insert(ks.begin(), 0);
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
           const std::vector<int>& labels, size_t first, const scorers::PassImages& pass, const ReferenceSet& refs,
           const Features& f) {
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
      const size_t image = first + pass[static_cast<size_t>(b)];
      file_ << dataset << ',' << category << ',' << k << ',' << draw << ',' << paths[image] << ',' << labels[image]
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

// The bench's names for the product's scorers: every scorer under its own name, plus
// anomalydino-rot (anomalydino with rotated references) and the zero-shot rows.
std::unique_ptr<scorers::Scorer> bench_scorer(const std::string& name, const LoadedModel& model, nlohmann::json options) {
  const std::string context = "--scorer-options " + name;
  if (name == "anomalydino-rot") {
    options["rotate"] = true;
    return scorers::make_scorer("anomalydino", *model.backbone, model.heads, options, context);
  }
  if (name == "winclip-zero-shot") {
    scorers::make_winclip(*model.backbone, nlohmann::json::object(), context);  // refuses models without CLIP
    return nullptr;
  }
  if (name == "musc") {
    scorers::musc_options(*model.backbone, options, context);  // checked now, not after the first category
    return nullptr;
  }
  std::vector<std::string> known = scorers::scorer_names();
  known.insert(known.end(), {"anomalydino-rot", "winclip-zero-shot"});
  if (std::find(known.begin(), known.end(), name) == known.end()) {
    std::string all;
    for (const auto& n : known) all += (all.empty() ? "" : ", ") + n;
    fail("--scorers: unknown scorer '", name, "' (known: ", all, ")");
  }
  return scorers::make_scorer(name, *model.backbone, model.heads, options, context);
}

// One draw's set for `scorer`, built as `gad score` builds it: each reference's views
// (scorers::reference_views), then Scorer::build. Prompt-file references are preprocessed images:
// they go in as they are, for scorers that want the native input and one view per reference.
ReferenceSet build_set(const Backbone& bb, const scorers::Scorer& scorer, const std::string& bench_name, const Draw& d,
                       const std::string& class_name, const std::map<std::string, PixelTensor>& prompt_pixels) {
  std::vector<PixelTensor> views;
  std::vector<ReferenceSource> sources;
  for (size_t i = 0; i < d.references.size(); ++i) {
    const std::string& path = d.references[i];
    if (auto prompt = prompt_pixels.find(path); prompt != prompt_pixels.end()) {
      const Image probe{1, 1, 3, {0, 0, 0}};
      if (!scorer.features().native() || scorer.reference_views(probe, i).size() != 1)
        fail("--scorers ", bench_name, ": prompt files hold preprocessed images; this scorer needs the images themselves");
      views.push_back(prompt->second);
      sources.push_back({path, d.prompt_sha256});
      continue;
    }
    for (auto& v : scorers::reference_views(bb, scorer, decode_image(path), i)) views.push_back(std::move(v));
    sources.push_back({path, ""});
  }
  return scorer.build(bb, views, sources, class_name);
}

// What one (K, draw) gives per scorer: its set and a record per test image (score, map, grid,
// geometry; the map dropped when no pixel metric or report needs it).
struct Run {
  int k, draw;
  std::vector<ReferenceSet> sets;                 // per scorer
  std::vector<std::vector<ScoreRecord>> records;  // per scorer, per test image
  std::vector<double> seconds;                    // per scorer: scoring time
  std::vector<PixelMetrics> pixel;                // per scorer
};

// Scorers that read the same features share one encode of each test image.
struct RequestGroup {
  FeatureRequest request;
  std::vector<size_t> members;  // scorer indices
  bool musc = false, winclip_zero_shot = false;
  double seconds = 0;           // preprocessing and encoding
};

std::vector<RequestGroup> request_groups(const std::vector<std::unique_ptr<scorers::Scorer>>& list,
                                         const std::optional<FeatureRequest>& musc, bool winclip_zero_shot) {
  std::vector<RequestGroup> groups;
  auto group_of = [&](const FeatureRequest& r) -> RequestGroup& {
    for (auto& g : groups)
      if (scorers::same_request(g.request, r)) return g;
    groups.push_back({r, {}});
    return groups.back();
  };
  for (size_t m = 0; m < list.size(); ++m) group_of(list[m]->features()).members.push_back(m);
  if (musc) group_of(*musc).musc = true;
  if (winclip_zero_shot) group_of(FeatureRequest{}).winclip_zero_shot = true;
  return groups;
}

// Zero-shot MuSc over one category's test images: their features, collected as the images are
// encoded, scored against each other once all are in.
class ZeroShotRun {
 public:
  ZeroShotRun(const Backbone& bb, const nlohmann::json& options)
      : bb_(bb), options_(scorers::musc_options(bb, options, "--scorer-options musc")),
                                             request_(scorers::musc_request(bb, options_)) {}
  const FeatureRequest& request() const { return request_; }
  // Rows of one pass: image `first + pass[b]` of the category is row b (MuSc's square input makes
  // every pass the whole batch, in order).
  void add(const Features& f, const std::vector<PixelTensor>& pixels, size_t first, const scorers::PassImages& pass) {
    if (layers_.empty()) layers_.resize(f.taps.size());
    for (size_t b = 0; b < pass.size(); ++b) {
      if (first + pass[b] != cls_.size()) fail("musc: images must arrive in order (a pass of one image size)");
      const auto row = static_cast<int64_t>(b);
      for (size_t l = 0; l < f.taps.size(); ++l) layers_[l].push_back(f.taps[l][row].clone());
      cls_.push_back(f.global[row].clone());
      geometry_.push_back(pixels[pass[b]].geometry);
    }
    grid_ = f.grid_w;
  }
  // One record per image, in the order added: score and patch map.
  std::vector<ScoreRecord> finish() {
    const double t0 = now_s();
    std::vector<at::Tensor> layers;
    for (auto& l : layers_) layers.push_back(at::stack(l));
    const int map_size = request_.square ? request_.square : static_cast<int>(bb_.input_size());
    const scorers::MuscResult m = scorers::musc_score(layers, at::stack(cls_), grid_, map_size, options_);
    std::vector<ScoreRecord> out(geometry_.size());
    for (size_t i = 0; i < out.size(); ++i) {
      const at::Tensor g = m.patch_map[static_cast<int64_t>(i)].to(at::kFloat).contiguous();
      out[i].score = m.score[static_cast<int64_t>(i)].item<double>();
      out[i].residual_map.assign(g.data_ptr<float>(), g.data_ptr<float>() + g.numel());
      out[i].grid = static_cast<int>(grid_);
      out[i].geometry = geometry_[i];
    }
    seconds_ = now_s() - t0;
    return out;
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

std::vector<double> scores_of(const std::vector<ScoreRecord>& records) {
  std::vector<double> s;
  for (const auto& r : records) s.push_back(r.score);
  return s;
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
  std::vector<std::string> names;                             // the few-shot rows, in the order asked
  std::vector<std::unique_ptr<scorers::Scorer>> scorer_list;  // the same, as scorers
  std::vector<std::string> zero_shot;                         // the K = 0 rows
  nlohmann::json options = nlohmann::json::object();
  if (!o.scorer_options.empty()) {
    options = nlohmann::json::parse(o.scorer_options, nullptr, false);
    if (!options.is_object()) fail("--scorer-options: must be a JSON object of options per scorer name");
    for (const auto& [name, value] : options.items())
      if (std::find(o.methods.begin(), o.methods.end(), name) == o.methods.end())
        fail("--scorer-options: '", name, "' is not among --scorers");
  }
  for (const auto& name : o.methods) {
    std::unique_ptr<scorers::Scorer> s = bench_scorer(name, model, options.value(name, nlohmann::json::object()));
    if (is_zero_shot(name)) {
      zero_shot.push_back(name);
      continue;
    }
    names.push_back(name);
    scorer_list.push_back(std::move(s));
  }
  const bool musc_row = std::count(zero_shot.begin(), zero_shot.end(), "musc") > 0;
  const bool winclip_row = std::count(zero_shot.begin(), zero_shot.end(), "winclip-zero-shot") > 0;
  const auto inctrl_at = std::find(names.begin(), names.end(), "inctrl");
  if (o.dump_maps && inctrl_at == names.end()) fail("--dump-maps: writes what InCTRL's heads see; add inctrl to --scorers");
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
  std::optional<MapDump> dump;
  if (o.dump_maps) dump.emplace(o.out_dir + "/maps.csv", bb, model.heads);
  const size_t n_scorers = scorer_list.size();
  Thumbnails thumbnails;  // the map of `gad score --maps`
  for (const auto& c : cats) {
    std::vector<Run> runs;
    bar.update(done_images, c.dataset + "/" + c.name + ": references");
    for (const auto& d : draws) {
      if (d.dataset != c.dataset || d.category != c.name) continue;
      Run run{d.k, d.draw, {}, std::vector<std::vector<ScoreRecord>>(n_scorers), std::vector<double>(n_scorers),
              std::vector<PixelMetrics>(n_scorers, PixelMetrics{-1, -1})};
      for (size_t m = 0; m < n_scorers; ++m) run.sets.push_back(build_set(bb, *scorer_list[m], names[m], d, c.name, prompt_pixels));
      runs.push_back(std::move(run));
    }
    if (runs.empty() && n_scorers) fail(o.draws_file, ": no draws for ", c.dataset, "/", c.name);
    std::optional<ZeroShotRun> musc;
    if (musc_row) musc.emplace(bb, options.value("musc", nlohmann::json::object()));
    const at::Tensor winclip_text = winclip_row ? scorers::winclip_text(bb, c.name) : at::Tensor();
    std::vector<ScoreRecord> winclip_records;
    std::vector<RequestGroup> groups = request_groups(scorer_list, musc ? std::optional(musc->request()) : std::nullopt, winclip_row);
    // Test images: decoded once, encoded once per request group, scored by every (K, draw, scorer).
    bool interrupted = false;
    const bool want_maps = !c.masks.empty() || o.report;
    for (size_t s = 0; s < c.test.size() && !interrupted; s += o.batch) {
      const std::vector<std::string> paths(c.test.begin() + s, c.test.begin() + std::min(c.test.size(), s + o.batch));
      std::vector<Image> images;
      for (const auto& p : paths) images.push_back(decode_image(p));
      for (auto& g : groups) {
        double t0 = now_s();
        std::vector<PixelTensor> pixels;
        for (size_t i = 0; i < paths.size(); ++i) {
          auto prompt = prompt_pixels.find(paths[i]);
          pixels.push_back(prompt != prompt_pixels.end() ? prompt->second : bb.preprocess(images[i], g.request));
        }
        // Records go to their image's slot (the pass says which images it holds).
        const size_t first = winclip_records.size();
        if (g.winclip_zero_shot) winclip_records.resize(first + paths.size());
        for (size_t m : g.members)
          for (auto& run : runs) run.records[m].resize(s + paths.size());
        scorers::encode_batches(bb, g.request, pixels, [&](const scorers::PassImages& pass, const Features& f) {
          g.seconds += now_s() - t0;
          if (g.musc) musc->add(f, pixels, s, pass);
          if (g.winclip_zero_shot) {
            const at::Tensor st = scorers::winclip_text_score(f.global, winclip_text).to(at::kDouble).contiguous();
            for (size_t b = 0; b < pass.size(); ++b) winclip_records[first + pass[b]].score = st[static_cast<int64_t>(b)].item<double>();
          }
          if (dump && std::count(g.members.begin(), g.members.end(), static_cast<size_t>(inctrl_at - names.begin())))
            for (const auto& run : runs)
              dump->add(c.dataset, c.name, run.k, run.draw, c.test, c.labels, s, pass,
                        run.sets[static_cast<size_t>(inctrl_at - names.begin())], f);
          for (size_t m : g.members)
            for (auto& run : runs) {
              const double t1 = now_s();
              std::vector<ScoreRecord> records = scorers::records_of(*scorer_list[m], run.sets[m], f, pixels, pass);
              for (size_t b = 0; b < pass.size(); ++b) {
                records[b].holistic_map.clear();
                if (!want_maps) records[b].residual_map.clear();
                run.records[m][s + pass[b]] = std::move(records[b]);
              }
              run.seconds[m] += now_s() - t1;
            }
          t0 = now_s();
        });
      }
      done_images += paths.size();
      bar.update(done_images, c.dataset + "/" + c.name);
      interrupted = stop && stop->load();
    }
    if (interrupted) {
      std::fprintf(stderr, "\ninterrupted: %s/%s dropped; results hold the %zu finished categories\n",
                   c.dataset.c_str(), c.name.c_str(), finished);
      break;
    }
    auto encode_seconds = [&](size_t m) {
      for (const auto& g : groups)
        if (std::count(g.members.begin(), g.members.end(), m)) return g.seconds;
      return 0.0;
    };
    std::vector<ImageMap> masks;  // at the metric size of each test image's map (the same for every scorer)
    auto metrics = [&](const std::vector<ScoreRecord>& records) {
      std::vector<ImageMap> maps;
      for (size_t i = 0; i < records.size(); ++i) {
        const ScoreRecord& r = records[i];
        maps.push_back(shrink_map(map_to_image(r.residual_map, r.grid, r.geometry), o.pixel_max_side));
        const ImageMap& m = maps.back();
        if (masks.size() <= i || masks[i].width != m.width || masks[i].height != m.height) {
          ImageMap mask = c.masks[i].empty() ? ImageMap{m.width, m.height, std::vector<float>(m.values.size())}
                                             : load_mask(c.masks[i], m.width, m.height);
          if (masks.size() <= i) masks.push_back(std::move(mask));
          else masks[i] = std::move(mask);
        }
      }
      return pixel_metrics(maps, masks);
    };
    if (!c.masks.empty()) {
      bar.update(done_images, c.dataset + "/" + c.name + ": pixel metrics");
      for (auto& run : runs)
        for (size_t m = 0; m < n_scorers; ++m)
          if (scorer_list[m]->has_map()) run.pixel[m] = metrics(run.records[m]);
    }
    const int n_anom = std::accumulate(c.labels.begin(), c.labels.end(), 0);
    const int n_norm = static_cast<int>(c.labels.size()) - n_anom;
    auto add_rows = [&](const std::string& name, int k, int draw, const std::vector<double>& scores, double ms,
                        const PixelMetrics& px) {
      out.results.push_back({c.dataset, c.name, name, k, draw, roc_auc(c.labels, scores), average_precision(c.labels, scores),
                             n_norm, n_anom, ms, px.auroc, px.aupro});
      for (size_t i = 0; i < scores.size(); ++i)
        out.scores_csv.add_row({c.dataset, c.name, name, std::to_string(k), std::to_string(draw), c.test[i],
                                std::to_string(c.labels[i]), csv_number(scores[i])});
    };
    for (const auto& name : zero_shot) {  // K = 0: one row each, no draws
      bar.update(done_images, c.dataset + "/" + c.name + ": zero-shot");
      const bool is_musc = name == "musc";
      const std::vector<ScoreRecord> records = is_musc ? musc->finish() : winclip_records;
      double seconds = is_musc ? musc->seconds() : 0;
      for (const auto& g : groups)
        if (is_musc ? g.musc : g.winclip_zero_shot) seconds += g.seconds;
      add_rows(name, 0, 0, scores_of(records), seconds * 1e3 / c.test.size(),
               is_musc && !c.masks.empty() ? metrics(records) : PixelMetrics{-1, -1});
    }
    for (const auto& run : runs)
      for (size_t m = 0; m < n_scorers; ++m)
        add_rows(names[m], run.k, run.draw, scores_of(run.records[m]), (encode_seconds(m) + run.seconds[m]) * 1e3 / c.test.size(),
                 run.pixel[m]);
    for (int k : o.ks) {
      std::vector<PlotSeries> roc, pr;
      for (const auto& run : runs)
        if (run.k == k && run.draw == 0)
          for (size_t m = 0; m < n_scorers; ++m) {
            roc.push_back({names[m], roc_curve(c.labels, scores_of(run.records[m]))});
            pr.push_back({names[m], pr_curve(c.labels, scores_of(run.records[m]))});
          }
      if (!roc.empty())
        write_text(o.out_dir + "/curves/" + c.dataset + "_" + c.name + "_K" + std::to_string(k) + ".svg",
                   roc_pr_svg(c.dataset + "/" + c.name + ", K = " + std::to_string(k) + ", draw 0", roc, pr));
    }
    if (o.report && !runs.empty()) {  // the first run (first K, draw 0) of the first scorer with a map, else the first scorer
      size_t m = 0;
      for (size_t i = n_scorers; i-- > 0;)
        if (scorer_list[i]->has_map()) m = i;
      const Run& run = runs.front();
      ReportSection sec;
      sec.title = c.dataset + "/" + c.name;
      sec.note = "Scores: " + names[m] + ", K = " + std::to_string(run.k) + ", draw " + std::to_string(run.draw) +
                 "; ROC/PR: every scorer of that draw; thumbnails: " + names[m] + "'s map on one colour scale.";
      for (size_t i = 0; i < c.test.size(); ++i) {
        const ScoreRecord& r = run.records[m][i];
        sec.images.push_back({c.test[i], r.score, c.labels[i]});
        if (!r.residual_map.empty()) thumbnails.add(c.test[i], r.residual_map, r.grid, r.geometry);
      }
      for (size_t j = 0; j < n_scorers; ++j) {
        sec.roc.push_back({names[j], roc_curve(c.labels, scores_of(run.records[j]))});
        sec.pr.push_back({names[j], pr_curve(c.labels, scores_of(run.records[j]))});
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
