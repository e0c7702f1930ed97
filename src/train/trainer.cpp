#include "train/trainer.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "backbone/backbone.h"
#include "eval/metrics.h"
#include "io/safetensors.h"
#include "backbone/precision.h"
#include "model/runtime.h"
#include "model/weights.h"
#include "train/episode.h"
#include "train/feature_cache.h"
#include "train/training_data.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/image_list.h"
#include "util/progress.h"

#ifndef GAD_GIT_REVISION
#define GAD_GIT_REVISION "unknown"
#endif

namespace fs = std::filesystem;
using nlohmann::ordered_json;

namespace gad {
namespace {

constexpr const char* kFormat = "gad-heads-1";

uint64_t mix(uint64_t seed, uint64_t a, uint64_t b = 0) {
  return std::mt19937_64(seed ^ (0x9E3779B97F4A7C15ull * (a + 1)) ^ (0xC2B2AE3D27D4EB4Full * (b + 1)))();
}

// An endlessly repeated random permutation of `items` (the reference's class-balanced sampler).
class Stream {
 public:
  explicit Stream(std::vector<int64_t> items) : items_(std::move(items)), pos_(items_.size()) {}
  int64_t next(std::mt19937_64& rng) {
    if (pos_ == items_.size()) {
      for (size_t i = 0; i + 1 < items_.size(); ++i) std::swap(items_[i], items_[i + rng() % (items_.size() - i)]);
      pos_ = 0;
    }
    return items_[pos_++];
  }

 private:
  std::vector<int64_t> items_;
  size_t pos_;
};

struct Split {
  std::vector<std::vector<int64_t>> normals_by_category;  // training normals
  std::vector<int64_t> normals, anomalies;                // training queries
  std::vector<int64_t> val;
};

// K prompts for `query` from its category's training normals, excluding the query itself.
std::vector<int64_t> draw_prompts(const std::vector<int64_t>& pool, int64_t query, int k, bool allow_self,
                                  std::mt19937_64& rng) {
  std::vector<int64_t> candidates;
  candidates.reserve(pool.size());
  for (int64_t i : pool)
    if (allow_self || i != query) candidates.push_back(i);
  std::vector<int64_t> out;
  for (size_t j : draw_indices(candidates.size(), static_cast<size_t>(k), rng)) out.push_back(candidates[j]);
  return out;
}

struct State {
  InctrlHeads heads;
  AdamW optimiser;
  std::vector<EpochStats> history;
};

ordered_json stats_json(const EpochStats& s) {
  return {{"epoch", s.epoch}, {"train_loss", s.train_loss}, {"val_auroc", s.val_auroc},
          {"val_auprc", s.val_auprc}, {"seconds", s.seconds}};
}

EpochStats stats_from(const nlohmann::json& j) {
  return {j.at("epoch").get<int>(), j.at("train_loss").get<double>(), j.at("val_auroc").get<double>(),
          j.at("val_auprc").get<double>(), j.at("seconds").get<double>()};
}

std::string epoch_file(const std::string& dir, int epoch, const char* suffix) {
  char name[64];
  std::snprintf(name, sizeof name, "epoch_%03d%s.safetensors", epoch, suffix);
  return dir + "/" + name;
}

void save_heads(const std::string& path, InctrlHeads& heads, const ordered_json& meta) {
  RawTensorList list;
  for (const auto& [name, t] : heads.state()) list.emplace_back(name, raw_view(t.detach().contiguous()));
  write_safetensors(path, list, {{"gad", meta.dump()}});
}

void save_optimiser(const std::string& path, const AdamW& opt) {
  RawTensorList list;
  const at::Tensor step = at::scalar_tensor(opt.step, at::kLong);
  list.emplace_back("step", raw_view(step));
  for (size_t i = 0; i < opt.exp_avg.size(); ++i) {
    list.emplace_back("exp_avg." + std::to_string(i), raw_view(opt.exp_avg[i]));
    list.emplace_back("exp_avg_sq." + std::to_string(i), raw_view(opt.exp_avg_sq[i]));
  }
  write_safetensors(path, list);
}

class Trainer {
 public:
  Trainer(const Backbone& backbone, const TrainOptions& o) : backbone_(backbone), o_(o), loss_(parse_loss(o.loss)) {
    if (o.k < 1) fail("--k: must be at least 1 (got ", o.k, ")");
    if (o.batch < 2 || o.batch % 2) fail("--batch: must be an even number ≥ 2 (half normal, half anomalous), got ", o.batch);
    if (o.epochs < 1 || o.steps < 1) fail("--epochs and --steps must be at least 1");
    if (o.out.empty()) fail("train: no output file given (-o heads.safetensors)");
    ckpt_dir_ = o.checkpoint_dir.empty() ? (fs::path(o.out).replace_extension().string() + ".checkpoints") : o.checkpoint_dir;
  }

  TrainReport run() {
    workers_ = at::get_num_threads();  // before any ScopedThreads(1)
    prepare();
    State s{InctrlHeads::init(backbone_.embed_dim(), backbone_.num_patches(), o_.seed), {}, {}};
    s.optimiser.lr = o_.lr;
    s.optimiser.weight_decay = o_.weight_decay;
    int first_epoch = 1;
    if (o_.resume) first_epoch = resume(s) + 1;
    std::vector<at::Tensor> params = s.heads.parameters();
    for (auto& p : params) p.requires_grad_(true);

    TrainReport report;
    report.val_patch_auroc = patch_baseline_;
    report.initial_val_auroc = validate(s.heads).first;
    for (int epoch = first_epoch; epoch <= o_.epochs; ++epoch) {
      Progress bar(static_cast<size_t>(o_.steps), "steps, epoch " + std::to_string(epoch) + "/" + std::to_string(o_.epochs));
      std::mt19937_64 rng(mix(o_.seed, 1, static_cast<uint64_t>(epoch)));
      Stream normals(split_.normals), anomalies(split_.anomalies);
      double loss_sum = 0;
      for (int step = 1; step <= o_.steps; ++step) {
        at::Tensor loss = train_step(s, params, normals, anomalies, rng);
        loss_sum += loss.item<double>();
        if (o_.progress && (step % 10 == 0 || step == o_.steps)) {
          std::ostringstream what;
          what << "loss " << loss_sum / step;
          bar.update(static_cast<size_t>(step), what.str());
        }
      }
      if (o_.progress) bar.finish();
      EpochStats st;
      st.epoch = epoch;
      st.train_loss = loss_sum / o_.steps;
      std::tie(st.val_auroc, st.val_auprc) = validate(s.heads);
      st.seconds = bar.elapsed_s();
      s.history.push_back(st);
      checkpoint(s);
      log("epoch " + std::to_string(epoch) + ": loss " + std::to_string(st.train_loss) + ", validation AUROC " +
          std::to_string(st.val_auroc) + " (s_patch alone " + std::to_string(patch_baseline_) + "), AUPRC " +
          std::to_string(st.val_auprc));
    }
    report.epochs = s.history;
    report.best_epoch = best_epoch(s.history);
    write_best(report.best_epoch);
    report.heads_path = o_.out;
    return report;
  }

 private:
  void log(const std::string& s) const {
    if (o_.log) o_.log(s);
  }

  void prepare() {
    data_ = read_training_data(o_.data);
    const int min_normals = o_.k + (o_.allow_self_prompt ? 0 : 1);
    TrainValSplit tv = split_validation(data_, o_.val_fraction, o_.seed, min_normals);
    split_.normals_by_category.resize(data_.categories.size());
    for (int i : tv.train) {
      const auto& smp = data_.samples[i];
      if (smp.label == 0) {
        split_.normals.push_back(i);
        split_.normals_by_category[smp.category].push_back(i);
      } else {
        split_.anomalies.push_back(i);
      }
    }
    split_.val.assign(tv.val.begin(), tv.val.end());
    if (split_.anomalies.empty()) fail("train: the data has no anomalous training images (test/<defect>/ or target 1)");
    log("training data: " + std::to_string(data_.categories.size()) + " categories, " +
        std::to_string(split_.normals.size()) + " normal + " + std::to_string(split_.anomalies.size()) +
        " anomalous training images, " + std::to_string(split_.val.size()) + " held out for validation");

    std::vector<std::string> paths;
    for (const auto& smp : data_.samples) paths.push_back(smp.path);
    FeatureCacheOptions fo;
    fo.dir = o_.cache_dir;
    fo.progress = o_.progress;
    fo.log = o_.log;
    CachedFeatures f = cached_features(backbone_, paths, fo);
    globals_ = f.global;
    taps_ = std::move(f.taps);
    if (backbone_.has_text()) {
      std::vector<at::Tensor> priors;
      for (const auto& c : data_.categories) priors.push_back(backbone_.text_prior(c.class_name));
      text_priors_ = at::stack(priors);
    }
    make_validation_episodes();
  }

  EpisodeBatch episode(const std::vector<int64_t>& queries, const std::vector<int64_t>& prompts) const {
    std::vector<int64_t> category;
    std::vector<float> labels;
    for (int64_t q : queries) {
      category.push_back(data_.samples[q].category);
      labels.push_back(static_cast<float>(data_.samples[q].label));
    }
    return make_episode(taps_, globals_, text_priors_, queries, prompts, category, labels, backbone_.grid(), workers_);
  }

  at::Tensor train_step(State& s, const std::vector<at::Tensor>& params, Stream& normals, Stream& anomalies,
                        std::mt19937_64& rng) {
    std::vector<int64_t> queries, prompts;
    for (int i = 0; i < o_.batch / 2; ++i) queries.push_back(normals.next(rng));
    for (int i = 0; i < o_.batch / 2; ++i) queries.push_back(anomalies.next(rng));
    for (int64_t q : queries) {
      auto p = draw_prompts(split_.normals_by_category[data_.samples[q].category], q, o_.k, o_.allow_self_prompt, rng);
      prompts.insert(prompts.end(), p.begin(), p.end());
    }
    ScopedThreads one_thread(1);
    EpisodeBatch b = episode(queries, prompts);
    if (o_.map_augment) augment_maps(b.holistic_base, rng);
    HeadOutputs out = forward_episode(s.heads, b, /*train=*/true);
    at::Tensor loss = inctrl_loss(out, b.labels, loss_);
    loss.backward();
    s.optimiser.update(params);
    return loss.detach();
  }

  // A random flip, transpose and circular shift of each query's residual map (s_patch, its max,
  // is unchanged). diff_head weighs every grid position separately; a defect can sit anywhere in
  // an unseen target, so the head should not learn where auxiliary defects happened to be.
  void augment_maps(at::Tensor& maps, std::mt19937_64& rng) const {
    const int64_t g = backbone_.grid();
    std::vector<at::Tensor> out;
    for (int64_t i = 0; i < maps.size(0); ++i) {
      at::Tensor m = maps[i].view({g, g});
      const uint64_t r = rng();
      if (r & 1) m = m.flip({0});
      if (r & 2) m = m.flip({1});
      if (r & 4) m = m.t();
      m = m.roll({static_cast<int64_t>((r >> 8) % g), static_cast<int64_t>((r >> 24) % g)}, {0, 1});
      out.push_back(m.reshape({g * g}));
    }
    maps = at::stack(out);
  }

  // Fixed prompts per validation query (drawn once), so epochs are compared on equal terms.
  void make_validation_episodes() {
    for (size_t i = 0; i < split_.val.size(); ++i) {
      const int64_t q = split_.val[i];
      std::mt19937_64 rng(mix(o_.seed, 2, i));
      auto p = draw_prompts(split_.normals_by_category[data_.samples[q].category], q, o_.k, false, rng);
      val_prompts_.insert(val_prompts_.end(), p.begin(), p.end());
    }
    if (split_.val.empty()) return;
    ScopedThreads one_thread(1);
    std::vector<double> patch;
    for_each_val_batch([&](const EpisodeBatch& b, size_t) {
      for (int64_t i = 0; i < b.s_patch.size(0); ++i) patch.push_back(b.s_patch[i].item<double>());
    });
    patch_baseline_ = category_mean(patch).first;
  }

  template <class Fn>
  void for_each_val_batch(Fn fn) const {
    constexpr size_t kBatch = 128;
    for (size_t start = 0; start < split_.val.size(); start += kBatch) {
      const size_t end = std::min(split_.val.size(), start + kBatch);
      std::vector<int64_t> q(split_.val.begin() + start, split_.val.begin() + end);
      std::vector<int64_t> p(val_prompts_.begin() + start * o_.k, val_prompts_.begin() + end * o_.k);
      fn(episode(q, p), start);
    }
  }

  // Mean over categories (with both labels in validation) of AUROC and AUPRC.
  std::pair<double, double> category_mean(const std::vector<double>& scores) const {
    double auroc = 0, auprc = 0;
    int n = 0;
    for (size_t c = 0; c < data_.categories.size(); ++c) {
      std::vector<int> labels;
      std::vector<double> s;
      for (size_t i = 0; i < split_.val.size(); ++i)
        if (data_.samples[split_.val[i]].category == static_cast<int>(c)) {
          labels.push_back(data_.samples[split_.val[i]].label);
          s.push_back(scores[i]);
        }
      const auto pos = std::count(labels.begin(), labels.end(), 1);
      if (pos == 0 || pos == static_cast<long>(labels.size())) continue;
      auroc += roc_auc(labels, s);
      auprc += average_precision(labels, s);
      ++n;
    }
    return n ? std::make_pair(auroc / n, auprc / n) : std::make_pair(std::nan(""), std::nan(""));
  }

  std::pair<double, double> validate(const InctrlHeads& heads) const {
    if (split_.val.empty()) return {std::nan(""), std::nan("")};
    at::NoGradGuard no_grad;
    ScopedThreads one_thread(1);  // the best epoch must not depend on --threads either
    std::vector<double> scores;
    for_each_val_batch([&](const EpisodeBatch& b, size_t) {
      at::Tensor f = forward_episode(heads, b, /*train=*/false).final_score.to(at::kDouble).contiguous();
      scores.insert(scores.end(), f.data_ptr<double>(), f.data_ptr<double>() + f.numel());
    });
    return category_mean(scores);
  }

  ordered_json config_json() const {
    return {{"backbone", {{"kind", backbone_.kind()}, {"fingerprint", backbone_.fingerprint()},
                          {"description", backbone_.description()}, {"precision", precision_name(backbone_.precision())}}},
            {"train", {{"data", o_.data}, {"k", o_.k}, {"steps", o_.steps}, {"batch", o_.batch},
                       {"lr", o_.lr}, {"weight_decay", o_.weight_decay}, {"seed", o_.seed}, {"loss", loss_name(loss_)},
                       {"allow_self_prompt", o_.allow_self_prompt}, {"map_augment", o_.map_augment}, {"val_fraction", o_.val_fraction}}}};
  }

  ordered_json metadata(const std::vector<EpochStats>& history, int epoch) const {
    ordered_json j = {{"format", kFormat}};
    const ordered_json config = config_json();
    for (const auto& [k, v] : config.items()) j[k] = v;
    j["epoch"] = epoch;
    j["epochs"] = o_.epochs;
    j["history"] = ordered_json::array();
    for (const auto& st : history) j["history"].push_back(stats_json(st));
    j["val_patch_auroc"] = patch_baseline_;
    j["gad_version"] = GAD_VERSION;
    j["git_revision"] = GAD_GIT_REVISION;
    j["command"] = o_.command;
    return j;
  }

  void checkpoint(State& s) const {
    fs::create_directories(ckpt_dir_);
    const int epoch = s.history.back().epoch;
    save_optimiser(epoch_file(ckpt_dir_, epoch, ".optim"), s.optimiser);
    save_heads(epoch_file(ckpt_dir_, epoch, ""), s.heads, metadata(s.history, epoch));  // last: marks it complete
    CsvTable csv({"epoch", "train_loss", "val_auroc", "val_auprc", "val_patch_auroc", "seconds"});
    for (const auto& st : s.history)
      csv.add_row({std::to_string(st.epoch), csv_number(st.train_loss, "%.6g"), csv_number(st.val_auroc, "%.6g"),
                   csv_number(st.val_auprc, "%.6g"), csv_number(patch_baseline_, "%.6g"), csv_number(st.seconds, "%.6g")});
    write_file_atomically(ckpt_dir_ + "/train_log.csv", [&](std::FILE* f) { std::fputs(csv.text().c_str(), f); });
  }

  // Loads the latest complete checkpoint; returns its epoch (0 when there is none).
  int resume(State& s) {
    int epoch = 0;
    while (fs::exists(epoch_file(ckpt_dir_, epoch + 1, "")) && fs::exists(epoch_file(ckpt_dir_, epoch + 1, ".optim")))
      ++epoch;
    if (epoch == 0) {
      log("--resume: no checkpoint in " + ckpt_dir_ + ", starting from epoch 1");
      return 0;
    }
    const std::string path = epoch_file(ckpt_dir_, epoch, "");
    auto meta = nlohmann::json::parse(read_safetensors(path).metadata.at("gad"));
    const ordered_json want = config_json();
    for (const char* key : {"backbone", "train"})
      if (nlohmann::json(want[key]) != meta.at(key))
        fail(path, ": --resume with different ", key, " settings (checkpoint ", meta.at(key).dump(), ", now ",
             want[key].dump(), ")");
    Weights w = Weights::load(path);
    // Copies: loaded tensors may be read-only views of the memory-mapped file.
    s.heads = InctrlHeads::load(w, backbone_.embed_dim(), backbone_.num_patches()).clone();
    w.check_all_taken();
    Weights ow = Weights::load(epoch_file(ckpt_dir_, epoch, ".optim"));
    s.optimiser.step = ow.take("step", {}, at::kLong).item<int64_t>();
    const auto params = s.heads.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      s.optimiser.exp_avg.push_back(ow.take("exp_avg." + std::to_string(i), params[i].sizes()).clone());
      s.optimiser.exp_avg_sq.push_back(ow.take("exp_avg_sq." + std::to_string(i), params[i].sizes()).clone());
    }
    ow.check_all_taken();
    for (const auto& h : meta.at("history")) s.history.push_back(stats_from(h));
    log("resumed from " + path + " (epoch " + std::to_string(epoch) + ")");
    return epoch;
  }

  static int best_epoch(const std::vector<EpochStats>& history) {
    int best = history.back().epoch;
    double best_auroc = -1;
    for (const auto& st : history)
      if (!std::isnan(st.val_auroc) && st.val_auroc > best_auroc) {
        best_auroc = st.val_auroc;
        best = st.epoch;
      }
    return best;  // without validation data: the last epoch
  }

  void write_best(int epoch) const {
    const std::string path = epoch_file(ckpt_dir_, epoch, "");
    auto meta = nlohmann::ordered_json::parse(read_safetensors(path).metadata.at("gad"));
    meta["selected"] = "epoch " + std::to_string(epoch) + " of " + std::to_string(o_.epochs) + " by validation AUROC";
    Weights w = Weights::load(path);
    InctrlHeads heads = InctrlHeads::load(w, backbone_.embed_dim(), backbone_.num_patches());
    save_heads(o_.out, heads, meta);
    log("wrote " + o_.out + " (" + meta["selected"].get<std::string>() + ")");
  }

  const Backbone& backbone_;
  const TrainOptions& o_;
  LossKind loss_;
  std::string ckpt_dir_;
  TrainingData data_;
  Split split_;
  at::Tensor globals_, text_priors_;
  std::vector<at::Tensor> taps_;
  std::vector<int64_t> val_prompts_;
  double patch_baseline_ = std::nan("");
  int workers_ = 1;
};

}  // namespace

TrainReport train_heads(const Backbone& backbone, const TrainOptions& options) {
  return Trainer(backbone, options).run();
}

}  // namespace gad
