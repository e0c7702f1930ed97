#include "lite/tfjs_model.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/safetensors.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

using json = nlohmann::json;
using Shape = std::vector<int64_t>;  // Keras layout without the batch: {H,W,C} or {F}; -1 = unknown

constexpr const char* kFormat = "gad-lite-tfjs-1";
// Activations and convolution weights live channels-last (NHWC in memory): oneDNN's depthwise
// kernels are ~10x faster on it than on NCHW, and it is the fixtures' layout.
constexpr auto kChannelsLast = at::MemoryFormat::ChannelsLast;
// Below glibc's largest dynamic mmap threshold (32 MiB), so activations reuse heap memory.
constexpr int64_t kMaxActivationBytes = 24 << 20;

enum class Kind {
  Input, ZeroPad, Conv, Depthwise, BatchNorm, ReLU, Activation, Add, Concat,
  MaxPool, AvgPool, GlobalAvg, GlobalMax, Flatten, Dense, Identity
};
enum class Act { Linear, Relu, Relu6, Sigmoid, Tanh, Softmax };

struct Layer {
  std::string name, cls;
  Kind kind = Kind::Identity;
  std::vector<int> inputs;
  Shape out;
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, dh = 1, dw = 1;
  bool same = false;
  int64_t pad_t = 0, pad_b = 0, pad_l = 0, pad_r = 0;  // ZeroPadding2D
  Act act = Act::Linear;
  double max_value = -1;  // ReLU cap; < 0 = none
  int64_t concat_dim = 1;  // in the internal NCHW / [B,F] layout
  at::Tensor weight, bias;  // torch layout (convolution weights channels-last)
  at::Tensor scale, shift;  // BatchNormalization folded to y = x*scale + shift, [1,C,1,1] or [C]
  // A ZeroPadding2D feeding only this 'valid' convolution is folded into it (unless the padding
  // itself is requested): leading zero rows/columns in the kernel let a symmetric padding, done
  // inside the convolution, reproduce the asymmetric one without allocating the padded map.
  int folded_pad = -1, fold_input = -1;
  int64_t fold_ph = 0, fold_pw = 0;
  at::Tensor fold_weight;
  // A BatchNormalization right after a linear convolution (its only consumer) runs as that
  // convolution with scaled weights (unless the convolution's own output is requested).
  int fused_conv = -1;
  std::shared_ptr<const Layer> fused;  // the convolution with the normalisation folded in
  std::vector<int> extra_deps;         // values the folded computations read
};

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? "," : "") << (s[i] < 0 ? std::string("?") : std::to_string(s[i]));
  o << "]";
  return o.str();
}

}  // namespace

struct TfjsModel::Graph {
  std::string source, model_name, topology;
  std::map<std::string, std::string> metadata;
  std::vector<Layer> layers;
  std::map<std::string, int> index;
  std::vector<int> last_use;
  std::vector<std::vector<int>> frees;  // per layer: values that are dead after it
  std::vector<char> owns_output;  // the layer's output is a fresh tensor (not an alias of its input)
  std::vector<char> skippable;    // computed inside a later layer unless requested themselves
  int64_t max_activation_bytes = 0;  // largest layer output of one image
  std::map<std::string, at::Tensor> weights;  // tfjs layout
  std::vector<std::string> weight_order;      // order the layers took them in

  int find(const std::string& name) const {
    auto it = index.find(name);
    if (it == index.end()) fail(source, ": model '", model_name, "' has no layer named '", name, "'");
    return it->second;
  }
};

namespace {

// ---- topology parsing -------------------------------------------------------------------------

struct Builder {
  TfjsModel::Graph& g;
  Weights& w;

  [[noreturn]] void bad(const Layer& L, const std::string& what) const {
    fail(g.source, ": layer '", L.name, "' (", L.cls, "): ", what);
  }

  // Integers from the config are checked first: nlohmann's get<int64_t> would truncate a float,
  // with undefined behaviour when it is out of range (3e20).
  int64_t int_value(const Layer& L, const json& v, const std::string& what) const {
    if (!v.is_number_integer()) bad(L, "'" + what + "' must be an integer, got " + v.dump().substr(0, 50));
    return v.get<int64_t>();
  }
  int64_t integer(const Layer& L, const json& cfg, const char* key, std::optional<int64_t> dflt = std::nullopt) const {
    if (dflt && !cfg.contains(key)) return *dflt;
    return int_value(L, cfg.at(key), key);
  }

  std::pair<int64_t, int64_t> pair_of(const Layer& L, const json& cfg, const char* key, int64_t dflt) const {
    if (!cfg.contains(key) || cfg[key].is_null()) return {dflt, dflt};
    const json& v = cfg[key];
    if (v.is_number_integer()) return {v.get<int64_t>(), v.get<int64_t>()};
    if (v.is_array() && v.size() == 2 && v[0].is_number_integer() && v[1].is_number_integer())
      return {v[0].get<int64_t>(), v[1].get<int64_t>()};
    bad(L, std::string("cannot read '") + key + "' = " + v.dump());
  }

  void check_channels_last(const Layer& L, const json& cfg) const {
    std::string f = cfg.value("data_format", std::string("channels_last"));
    if (f != "channels_last") bad(L, "data_format '" + f + "' is not supported (channels_last only)");
  }

  Act activation(const Layer& L, const std::string& a) const {
    if (a == "linear") return Act::Linear;
    if (a == "relu") return Act::Relu;
    if (a == "relu6") return Act::Relu6;
    if (a == "sigmoid") return Act::Sigmoid;
    if (a == "tanh") return Act::Tanh;
    if (a == "softmax") return Act::Softmax;
    bad(L, "unsupported activation '" + a + "'");
  }

  // Takes `<layer>/<param>`, checking the known dims of `expected` (tfjs layout).
  at::Tensor take(const Layer& L, const std::string& param, const Shape& expected) {
    const std::string key = L.name + "/" + param;
    if (!w.has(key)) fail(g.source, ": layer '", L.name, "' needs weight '", key, "' ", shape_str(expected), ", which is missing");
    at::IntArrayRef got = w.all().at(key).sizes();
    bool ok = got.size() == expected.size();
    for (size_t i = 0; ok && i < expected.size(); ++i) ok = expected[i] < 0 || expected[i] == got[i];
    if (!ok)
      fail(g.source, ": weight '", key, "' has shape ", shape_str(Shape(got.begin(), got.end())), ", layer '", L.name,
           "' expects ", shape_str(expected));
    at::Tensor t = w.take(key, got).contiguous();
    g.weights[key] = t;
    g.weight_order.push_back(key);
    return t;
  }

  const Shape& in_shape(const Layer& L, size_t i = 0) const { return g.layers[L.inputs[i]].out; }
  const Shape& spatial_in(const Layer& L) const {
    const Shape& s = in_shape(L);
    if (s.size() != 3) bad(L, "expects an image-shaped input [H,W,C], got " + shape_str(s));
    return s;
  }

  static constexpr int64_t kMaxWindow = 1 << 16;

  static int64_t conv_out(int64_t n, int64_t k, int64_t s, int64_t d, bool same) {
    if (n < 0) return -1;
    if (same) return (n + s - 1) / s;
    int64_t span = (k - 1) * d + 1;
    return n < span ? 0 : (n - span) / s + 1;
  }

  void read_window(Layer& L, const json& cfg, const char* kernel_key) {
    check_channels_last(L, cfg);
    std::tie(L.kh, L.kw) = pair_of(L, cfg, kernel_key, 1);
    std::tie(L.sh, L.sw) = pair_of(L, cfg, "strides", 0);
    if (L.sh == 0) std::tie(L.sh, L.sw) = std::make_pair(L.kh, L.kw);  // pooling: strides default to pool_size
    std::tie(L.dh, L.dw) = pair_of(L, cfg, "dilation_rate", 1);
    // Windows, strides and dilations of 0 would divide by zero below, huge ones overflow.
    const std::pair<const char*, std::pair<int64_t, int64_t>> sizes[] = {
        {kernel_key, {L.kh, L.kw}}, {"strides", {L.sh, L.sw}}, {"dilation_rate", {L.dh, L.dw}}};
    for (const auto& [key, hw] : sizes)
      if (hw.first < 1 || hw.second < 1 || hw.first > kMaxWindow || hw.second > kMaxWindow)
        bad(L, std::string("'") + key + "' must be 1.." + std::to_string(kMaxWindow) + ", got " +
                   std::to_string(hw.first) + "x" + std::to_string(hw.second));
    std::string p = cfg.value("padding", std::string("valid"));
    if (p != "same" && p != "valid") bad(L, "padding '" + p + "' is not supported");
    L.same = p == "same";
    const Shape& s = spatial_in(L);
    L.out = {conv_out(s[0], L.kh, L.sh, L.dh, L.same), conv_out(s[1], L.kw, L.sw, L.dw, L.same), s[2]};
  }

  void conv(Layer& L, const json& cfg) {
    read_window(L, cfg, "kernel_size");
    if (integer(L, cfg, "groups", 1) != 1) bad(L, "grouped convolution is not supported");
    const int64_t cin = L.out[2], filters = integer(L, cfg, "filters");
    L.weight = take(L, "kernel", {L.kh, L.kw, cin, filters}).permute({3, 2, 0, 1}).contiguous(kChannelsLast);
    if (cfg.value("use_bias", true)) L.bias = take(L, "bias", {filters});
    L.act = activation(L, cfg.value("activation", std::string("linear")));
    L.out[2] = filters;
  }

  void depthwise(Layer& L, const json& cfg) {
    read_window(L, cfg, "kernel_size");
    const int64_t cin = L.out[2], m = integer(L, cfg, "depth_multiplier", 1);
    if (cin < 0) bad(L, "input channel count is unknown");
    at::Tensor k = take(L, "depthwise_kernel", {L.kh, L.kw, cin, m});
    L.weight = k.permute({2, 3, 0, 1}).reshape({cin * m, 1, L.kh, L.kw}).contiguous(kChannelsLast);
    if (cfg.value("use_bias", true)) L.bias = take(L, "bias", {cin * m});
    L.act = activation(L, cfg.value("activation", std::string("linear")));
    L.out[2] = cin * m;
  }

  void batch_norm(Layer& L, const json& cfg) {
    L.out = in_shape(L);
    json axis = cfg.value("axis", json(-1));
    if (axis.is_array() && axis.size() == 1) axis = axis[0];
    const auto rank = static_cast<int64_t>(L.out.size()) + 1;
    if (!axis.is_number_integer() || (axis.get<int64_t>() != -1 && axis.get<int64_t>() != rank - 1))
      bad(L, "only the channel axis is supported, got axis " + axis.dump());
    const int64_t c = L.out.back();
    const double eps = cfg.value("epsilon", 1e-3);
    at::Tensor gamma = cfg.value("scale", true) ? take(L, "gamma", {c}) : at::ones({c});
    at::Tensor beta = cfg.value("center", true) ? take(L, "beta", {c}) : at::zeros({c});
    at::Tensor mean = take(L, "moving_mean", {c}), var = take(L, "moving_variance", {c});
    // beta + (x - mean) * gamma / sqrt(var + eps), folded as ATen's inference batch_norm does.
    L.scale = gamma / at::sqrt(var + eps);
    L.shift = beta - mean * L.scale;
    if (L.out.size() == 3) L.scale = L.scale.view({1, c, 1, 1}), L.shift = L.shift.view({1, c, 1, 1});
  }

  void relu(Layer& L, const json& cfg) {
    L.out = in_shape(L);
    if (cfg.value("negative_slope", 0.0) != 0.0 || cfg.value("threshold", 0.0) != 0.0)
      bad(L, "negative_slope and threshold must be 0");
    if (cfg.contains("max_value") && !cfg["max_value"].is_null()) L.max_value = cfg["max_value"].get<double>();
  }

  void zero_pad(Layer& L, const json& cfg) {
    check_channels_last(L, cfg);
    const json& p = cfg.at("padding");
    if (p.is_array() && p.size() == 2 && p[0].is_array()) {
      L.pad_t = int_value(L, p[0].at(0), "padding"), L.pad_b = int_value(L, p[0].at(1), "padding");
      L.pad_l = int_value(L, p[1].at(0), "padding"), L.pad_r = int_value(L, p[1].at(1), "padding");
    } else {
      auto [ph, pw] = pair_of(L, cfg, "padding", 0);
      L.pad_t = L.pad_b = ph, L.pad_l = L.pad_r = pw;
    }
    const Shape& s = spatial_in(L);
    L.out = {s[0] < 0 ? -1 : s[0] + L.pad_t + L.pad_b, s[1] < 0 ? -1 : s[1] + L.pad_l + L.pad_r, s[2]};
  }

  void merge(Layer& L, const json& cfg) {
    if (L.inputs.size() < 2) bad(L, "needs at least 2 inputs");
    L.out = in_shape(L);
    if (L.kind == Kind::Add) {
      for (size_t i = 1; i < L.inputs.size(); ++i)
        if (in_shape(L, i) != L.out) bad(L, "input shapes differ: " + shape_str(L.out) + " vs " + shape_str(in_shape(L, i)));
      return;
    }
    const auto rank = static_cast<int64_t>(L.out.size());
    int64_t axis = integer(L, cfg, "axis", -1);
    if (axis < 0) axis += rank + 1;
    if (axis < 1 || axis > rank) bad(L, "bad concat axis " + std::to_string(axis));
    const int64_t k = axis - 1;  // index into the shape without batch
    L.concat_dim = rank == 3 ? (k == 2 ? 1 : k + 2) : 1;
    for (size_t i = 1; i < L.inputs.size(); ++i) {
      const Shape& s = in_shape(L, i);
      if (s.size() != L.out.size()) bad(L, "input ranks differ");
      L.out[k] = L.out[k] < 0 || s[k] < 0 ? -1 : L.out[k] + s[k];
    }
  }

  void dense(Layer& L, const json& cfg) {
    const Shape& s = in_shape(L);
    if (s.size() != 1) bad(L, "expects a flat input [F], got " + shape_str(s) + " (add a Flatten)");
    const int64_t units = integer(L, cfg, "units");
    L.weight = take(L, "kernel", {s[0], units}).t().contiguous();
    if (cfg.value("use_bias", true)) L.bias = take(L, "bias", {units});
    L.act = activation(L, cfg.value("activation", std::string("linear")));
    L.out = {units};
  }

  void global_pool(Layer& L, const json& cfg) {
    check_channels_last(L, cfg);
    if (cfg.value("keepdims", false)) bad(L, "keepdims is not supported");
    L.out = {spatial_in(L)[2]};
  }

  void flatten(Layer& L) {
    const Shape& s = in_shape(L);
    int64_t n = 1;
    for (int64_t d : s) n = (n < 0 || d < 0) ? -1 : n * d;
    L.out = {n};
  }

  void configure(Layer& L, const json& cfg) {
    static const std::map<std::string, Kind> kinds = {
        {"ZeroPadding2D", Kind::ZeroPad}, {"Conv2D", Kind::Conv}, {"DepthwiseConv2D", Kind::Depthwise},
        {"BatchNormalization", Kind::BatchNorm}, {"ReLU", Kind::ReLU}, {"Activation", Kind::Activation},
        {"Add", Kind::Add}, {"Concatenate", Kind::Concat}, {"MaxPooling2D", Kind::MaxPool},
        {"AveragePooling2D", Kind::AvgPool}, {"GlobalAveragePooling2D", Kind::GlobalAvg},
        {"GlobalMaxPooling2D", Kind::GlobalMax}, {"Flatten", Kind::Flatten}, {"Dense", Kind::Dense},
        {"Dropout", Kind::Identity}, {"SpatialDropout2D", Kind::Identity}};
    auto it = kinds.find(L.cls);
    if (it == kinds.end()) fail(g.source, ": layer '", L.name, "' has unsupported type '", L.cls, "'");
    L.kind = it->second;
    switch (L.kind) {
      case Kind::ZeroPad: return zero_pad(L, cfg);
      case Kind::Conv: return conv(L, cfg);
      case Kind::Depthwise: return depthwise(L, cfg);
      case Kind::BatchNorm: return batch_norm(L, cfg);
      case Kind::ReLU: return relu(L, cfg);
      case Kind::Activation:
        L.out = in_shape(L);
        L.act = activation(L, cfg.value("activation", std::string("linear")));
        return;
      case Kind::Add:
      case Kind::Concat: return merge(L, cfg);
      case Kind::MaxPool:
      case Kind::AvgPool: return read_window(L, cfg, "pool_size");
      case Kind::GlobalAvg:
      case Kind::GlobalMax: return global_pool(L, cfg);
      case Kind::Flatten: return flatten(L);
      case Kind::Dense: return dense(L, cfg);
      default: L.out = in_shape(L); return;
    }
  }

  std::vector<int> inbound(const json& layer, const std::string& name) {
    const json& nodes = layer.value("inbound_nodes", json::array());
    if (nodes.empty()) return {};
    if (nodes.size() > 1) fail(g.source, ": layer '", name, "' is shared (", nodes.size(), " calls); not supported");
    std::vector<int> in;
    for (const json& e : nodes[0]) {
      if (!e.is_array() || e.empty() || !e[0].is_string() || (e.size() > 2 && e[2] != 0))
        fail(g.source, ": layer '", name, "': cannot read inbound node ", e.dump());
      auto it = g.index.find(e[0].get<std::string>());
      if (it == g.index.end())
        fail(g.source, ": layer '", name, "' uses '", e[0].get<std::string>(), "', which is not defined before it");
      in.push_back(it->second);
    }
    return in;
  }

  void add_input(Layer& L, const json& cfg) {
    L.kind = Kind::Input;
    const json& s = cfg.value("batch_input_shape", json());
    if (!s.is_array() || s.size() != 4 || !s[3].is_number_integer())
      fail(g.source, ": input '", L.name, "' must be an image batch [N,H,W,C] with known C, got ", s.dump());
    for (int i = 1; i < 4; ++i) L.out.push_back(s[i].is_null() ? -1 : int_value(L, s[i], "batch_input_shape"));
  }

  void fold_paddings() {
    std::vector<int> consumers(g.layers.size(), 0);
    for (const Layer& L : g.layers)
      for (int j : L.inputs) ++consumers[j];
    for (Layer& C : g.layers) {
      if ((C.kind != Kind::Conv && C.kind != Kind::Depthwise) || C.same || C.dh != 1 || C.dw != 1) continue;
      const Layer& P = g.layers[C.inputs[0]];
      if (P.kind != Kind::ZeroPad || consumers[C.inputs[0]] != 1) continue;
      const int64_t ph = std::max(P.pad_t, P.pad_b), pw = std::max(P.pad_l, P.pad_r);
      const int64_t kh = C.kh + ph - P.pad_t, kw = C.kw + pw - P.pad_l;
      const Shape& in = g.layers[P.inputs[0]].out;
      if (in[0] < 0 || in[1] < 0 || conv_out(in[0] + 2 * ph, kh, C.sh, 1, false) != C.out[0] ||
          conv_out(in[1] + 2 * pw, kw, C.sw, 1, false) != C.out[1])
        continue;
      at::Tensor w = at::zeros({C.weight.size(0), C.weight.size(1), kh, kw});
      w.slice(2, ph - P.pad_t).slice(3, pw - P.pad_l).copy_(C.weight);
      C.fold_weight = w.contiguous(kChannelsLast);
      C.fold_ph = ph, C.fold_pw = pw;
      C.folded_pad = C.inputs[0], C.fold_input = P.inputs[0];
    }
  }

  void fold_batch_norms() {
    std::vector<int> consumers(g.layers.size(), 0);
    for (const Layer& L : g.layers)
      for (int j : L.inputs) ++consumers[j];
    for (Layer& B : g.layers) {
      if (B.kind != Kind::BatchNorm) continue;
      const Layer& C = g.layers[B.inputs[0]];
      if ((C.kind != Kind::Conv && C.kind != Kind::Depthwise) || C.act != Act::Linear || consumers[B.inputs[0]] != 1) continue;
      const at::Tensor s = B.scale.reshape({-1}), shift = B.shift.reshape({-1});
      auto f = std::make_shared<Layer>(C);
      f->weight = (C.weight * s.view({-1, 1, 1, 1})).contiguous(kChannelsLast);
      if (C.fold_weight.defined()) f->fold_weight = (C.fold_weight * s.view({-1, 1, 1, 1})).contiguous(kChannelsLast);
      f->bias = C.bias.defined() ? C.bias * s + shift : shift.clone();
      B.fused_conv = B.inputs[0];
      B.fused = std::move(f);
      B.extra_deps = C.inputs;
      if (C.fold_input >= 0) B.extra_deps.push_back(C.fold_input);
    }
  }

  void build(const json& topology) {
    const json& mc = topology.contains("model_config") ? topology["model_config"] : topology;
    const std::string cls = mc.value("class_name", std::string());
    if (cls != "Model" && cls != "Functional")
      fail(g.source, ": model class '", cls, "' is not supported (functional Keras models only)");
    const json& cfg = mc.at("config");
    g.model_name = cfg.value("name", std::string("model"));
    if (cfg.at("input_layers").size() != 1) fail(g.source, ": models with several inputs are not supported");
    for (const json& lj : cfg.at("layers")) {
      Layer L;
      L.name = lj.at("name").get<std::string>();
      L.cls = lj.at("class_name").get<std::string>();
      if (g.index.count(L.name)) fail(g.source, ": duplicate layer name '", L.name, "'");
      L.inputs = inbound(lj, L.name);
      const json& lc = lj.at("config");
      if (L.cls == "InputLayer") {
        if (!g.layers.empty() && g.layers[0].kind == Kind::Input) fail(g.source, ": more than one InputLayer");
        add_input(L, lc);
      } else if (L.inputs.empty()) {
        fail(g.source, ": layer '", L.name, "' has no inputs");
      } else {
        if (L.inputs.size() > 1 && L.cls != "Add" && L.cls != "Concatenate")
          fail(g.source, ": layer '", L.name, "' (", L.cls, ") has ", L.inputs.size(), " inputs, expected 1");
        configure(L, lc);
      }
      g.index[L.name] = static_cast<int>(g.layers.size());
      g.layers.push_back(std::move(L));
    }
    if (g.layers.empty() || g.layers[0].kind != Kind::Input) fail(g.source, ": the first layer must be the InputLayer");
    fold_paddings();
    fold_batch_norms();
    plan_liveness();
  }

  void plan_liveness() {
    g.last_use.assign(g.layers.size(), -1);
    g.skippable.assign(g.layers.size(), 0);
    for (size_t i = 0; i < g.layers.size(); ++i) {
      Layer& L = g.layers[i];
      if (L.fold_input >= 0) L.extra_deps.push_back(L.fold_input);
      for (const auto* deps : {&L.inputs, &L.extra_deps})
        for (int j : *deps) g.last_use[j] = static_cast<int>(i);
      if (L.folded_pad >= 0) g.skippable[L.folded_pad] = 1;
      if (L.fused_conv >= 0) g.skippable[L.fused_conv] = 1;
      g.owns_output.push_back(L.kind != Kind::Input && L.kind != Kind::Identity && L.kind != Kind::Flatten);
      int64_t n = 4;
      for (int64_t d : L.out) n *= std::max<int64_t>(d, 1);
      g.max_activation_bytes = std::max(g.max_activation_bytes, n);
    }
    g.frees.assign(g.layers.size(), {});
    for (size_t j = 0; j < g.layers.size(); ++j)
      if (g.last_use[j] >= 0) g.frees[g.last_use[j]].push_back(static_cast<int>(j));
  }
};

json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail(source, ": invalid JSON (", e.what(), ")");
  }
}

std::shared_ptr<TfjsModel::Graph> build_graph(const std::string& topology, Weights& w, const std::string& source,
                                              std::map<std::string, std::string> metadata) {
  auto g = std::make_shared<TfjsModel::Graph>();
  g->source = source;
  g->topology = topology;
  g->metadata = std::move(metadata);
  try {
    Builder{*g, w}.build(parse_json(topology, source));
  } catch (const json::exception& e) {
    fail(source, ": malformed model topology (", e.what(), ")");
  }
  return g;
}

// ---- weight manifest --------------------------------------------------------------------------

struct ShardSpan {
  std::string file;
  size_t end;  // offset just past this file in the group's bytes
};

std::string file_at(const std::vector<ShardSpan>& spans, size_t offset) {
  for (const auto& s : spans)
    if (offset < s.end) return s.file;
  return spans.back().file;
}

at::Tensor decode_weight(const json& spec, const uint8_t* p, int64_t n, const std::string& key, const std::string& src) {
  at::Tensor t = at::empty({n}, at::kFloat);
  float* out = t.data_ptr<float>();
  if (spec.contains("quantization")) {
    const json& q = spec["quantization"];
    const std::string qd = q.value("dtype", std::string());
    if (qd == "float16") {
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(c10::Half(static_cast<uint16_t>(p[2 * i] | p[2 * i + 1] << 8), c10::Half::from_bits()));
      return t;
    }
    if (qd != "uint8" && qd != "uint16") fail(src, ": weight '", key, "' has unsupported quantization '", qd, "'");
    const double scale = q.at("scale").get<double>(), min = q.at("min").get<double>();
    for (int64_t i = 0; i < n; ++i) {
      const unsigned v = qd == "uint8" ? p[i] : static_cast<unsigned>(p[2 * i] | p[2 * i + 1] << 8);
      out[i] = static_cast<float>(v * scale + min);  // in double, rounded once, as tfjs does
    }
    return t;
  }
  std::string dt = spec.value("dtype", std::string("float32"));
  if (dt != "float32") fail(src, ": weight '", key, "' has unsupported dtype '", dt, "'");
  if (n > 0) std::memcpy(out, p, n * 4);  // little-endian hosts only (as safetensors); p may be null when n = 0
  return t;
}

size_t bytes_per_value(const json& spec) {
  if (!spec.contains("quantization")) return 4;
  return spec["quantization"].value("dtype", std::string()) == "uint8" ? 1 : 2;
}

// Decodes one manifest group whose shard bytes are `bytes` (files `spans`) into `w`.
void decode_group(const json& group, const std::vector<uint8_t>& bytes, const std::vector<ShardSpan>& spans,
                  Weights& w) {
  size_t off = 0;
  for (const json& spec : group.at("weights")) {
    const std::string key = spec.at("name").get<std::string>();
    const json& dims = spec.at("shape");
    if (!dims.is_array()) fail(spans.back().file, ": weight '", key, "' has a shape that is not a list");
    std::vector<int64_t> shape;
    for (const json& d : dims) {
      if (!d.is_number_integer()) fail(spans.back().file, ": weight '", key, "' has a non-integer dimension ", d.dump());
      shape.push_back(d.get<int64_t>());
    }
    // The count is bounded by the shard before it is multiplied, so a hostile manifest can
    // neither overflow the product nor make it negative.
    const int64_t limit = static_cast<int64_t>(bytes.size());
    int64_t n = 1;
    for (int64_t d : shape)
      if (d < 0) fail(spans.back().file, ": weight '", key, "' has a negative dimension ", d);
    if (std::find(shape.begin(), shape.end(), 0) != shape.end()) n = 0;
    for (int64_t d : shape)
      if (n > 0 && n > limit / d)
        fail(spans.back().file, ": weight '", key, "' has shape ", json(shape).dump(), ", more values than the shard",
             spans.size() > 1 ? "s' " : "'s ", bytes.size(), " bytes hold");
      else
        n *= d;
    const size_t size = static_cast<size_t>(n) * bytes_per_value(spec);
    if (size > bytes.size() - off)
      fail(spans.back().file, ": truncated: weight '", key, "' needs bytes [", off, ", ", off + size, ") but the shard",
           spans.size() > 1 ? "s hold " : " holds ", bytes.size(), " bytes");
    if (w.has(key)) fail(file_at(spans, off), ": weight '", key, "' appears twice in the manifest");
    w.insert(key, decode_weight(spec, bytes.data() + off, n, key, file_at(spans, off)).view(shape));
    off += size;
  }
  if (off != bytes.size())
    fail(spans.back().file, ": ", bytes.size() - off, " bytes past the last weight of the manifest (wrong shard?)");
}

std::map<std::string, std::string> tfjs_metadata(const std::string& source) {
  return {{"source", source}};
}

}  // namespace

// ---- loading and saving -----------------------------------------------------------------------

TfjsModel TfjsModel::load_tfjs(const std::string& model_json_path) {
  return with_error_kind(ErrorKind::CorruptFile, [&] {
    json mj = parse_json(read_file_text(model_json_path), model_json_path);
    if (!mj.contains("modelTopology") || !mj.contains("weightsManifest"))
      fail(model_json_path, ": not a tfjs layers model (needs modelTopology and weightsManifest)");
    const auto dir = std::filesystem::path(model_json_path).parent_path();
    Weights w(model_json_path);
    try {
      for (const json& group : mj["weightsManifest"]) {
        std::vector<uint8_t> bytes;
        std::vector<ShardSpan> spans;
        for (const json& p : group.at("paths")) {
          const std::string file = (dir / p.get<std::string>()).string();
          auto part = read_file_bytes(file);
          bytes.insert(bytes.end(), part.begin(), part.end());
          spans.push_back({file, bytes.size()});
        }
        if (spans.empty()) fail(model_json_path, ": a weight group lists no shard files");
        decode_group(group, bytes, spans, w);
      }
    } catch (const json::exception& e) {
      fail(model_json_path, ": malformed weightsManifest (", e.what(), ")");
    }
    TfjsModel m(build_graph(mj["modelTopology"].dump(), w, model_json_path, tfjs_metadata(model_json_path)));
    w.check_all_taken();
    return m;
  });
}

TfjsModel TfjsModel::from_tfjs_memory(const std::string& model_json_text, const std::vector<uint8_t>& shard_bytes,
                                      const std::string& source) {
  json mj = parse_json(model_json_text, source);
  if (!mj.contains("modelTopology") || !mj.contains("weightsManifest") || mj["weightsManifest"].size() != 1)
    fail(source, ": not a single-group tfjs layers model");
  Weights w(source);
  try {
    decode_group(mj["weightsManifest"][0], shard_bytes, {{source, shard_bytes.size()}}, w);
  } catch (const json::exception& e) {
    fail(source, ": malformed weightsManifest (", e.what(), ")");
  }
  TfjsModel m(build_graph(mj["modelTopology"].dump(), w, source, tfjs_metadata(source)));
  w.check_all_taken();
  return m;
}

TfjsModel TfjsModel::from_weights(Weights& w, const std::map<std::string, std::string>& metadata) {
  auto it = metadata.find("topology");
  if (it == metadata.end()) fail(w.source(), ": not a gad lite model (no 'topology' in the metadata)");
  std::map<std::string, std::string> meta = metadata;
  meta.erase("topology");
  meta.erase("format");
  return TfjsModel(build_graph(it->second, w, w.source(), meta));
}

TfjsModel TfjsModel::load_gad(const std::string& path) {
  Weights w = Weights::load(path);
  TfjsModel m = from_weights(w, read_safetensors(path).metadata);
  w.ignore_prefix("adapter.");  // InCTRL heads may share the file (load_model takes them)
  w.ignore_prefix("diff_head");
  w.check_all_taken();
  return m;
}

bool TfjsModel::is_gad_file(const std::string& path) {
  try {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return false;
    unsigned char magic[2] = {0, 0};
    size_t n = std::fread(magic, 1, 2, f);
    std::fclose(f);
    if (n != 2 || (magic[0] == 'P' && magic[1] == 'K')) return false;  // zip (torch archive)
    return read_safetensors(path).metadata.count("topology") != 0;
  } catch (const Error&) {
    return false;
  }
}

void TfjsModel::save_gad(const std::string& path, const std::map<std::string, std::string>& extra) const {
  RawTensorList list;
  for (const auto& key : g_->weight_order) {
    at::Tensor t = g_->weights.at(key).contiguous();
    RawTensor r;
    r.dtype = DType::F32;
    r.shape = std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
    r.data = static_cast<const uint8_t*>(t.data_ptr());
    r.nbytes = t.nbytes();
    r.owner = std::make_shared<at::Tensor>(t);
    list.emplace_back(key, std::move(r));
  }
  std::map<std::string, std::string> meta = g_->metadata;
  for (const auto& [k, v] : extra) meta[k] = v;
  meta["topology"] = g_->topology;
  meta["format"] = kFormat;
  write_safetensors(path, list, meta);
}

// ---- evaluation -------------------------------------------------------------------------------

namespace {

// TF 'same': out = ceil(n/s), P = max((out-1)*s + k_eff - n, 0), before = P/2, after = P - before.
std::pair<int64_t, int64_t> same_pads(int64_t n, int64_t k, int64_t s, int64_t d) {
  const int64_t out = (n + s - 1) / s, span = (k - 1) * d + 1;
  const int64_t p = std::max<int64_t>((out - 1) * s + span - n, 0);
  return {p / 2, p - p / 2};
}

// Pads x (NCHW) for TF 'same'; returns the symmetric padding still to pass to the op.
at::Tensor pad_same(const Layer& L, const at::Tensor& x, double value, int64_t* ph, int64_t* pw) {
  *ph = *pw = 0;
  if (!L.same) return x;
  auto [t, b] = same_pads(x.size(2), L.kh, L.sh, L.dh);
  auto [l, r] = same_pads(x.size(3), L.kw, L.sw, L.dw);
  if (t == b && l == r && value == 0) {
    *ph = t, *pw = l;
    return x;
  }
  return at::constant_pad_nd(x, {l, r, t, b}, value);
}

at::Tensor activate(Act a, at::Tensor y) {  // y is a fresh tensor: in place is safe
  switch (a) {
    case Act::Linear: return y;
    case Act::Relu: return y.clamp_min_(0);
    case Act::Relu6: return y.clamp_(0, 6);
    case Act::Sigmoid: return y.sigmoid_();
    case Act::Tanh: return y.tanh_();
    case Act::Softmax: return at::softmax(y, 1);  // channels (NCHW) or features ([B,F])
  }
  return y;
}

// Conv2D / DepthwiseConv2D (one group per input channel), reading the folded padding's input
// when that padding was skipped.
at::Tensor conv(const Layer& L, const std::vector<at::Tensor>& v) {
  const bool folded = L.folded_pad >= 0 && !v[L.folded_pad].defined();
  const at::Tensor& x = v[folded ? L.fold_input : L.inputs[0]];
  const int64_t groups = L.kind == Kind::Depthwise ? x.size(1) : 1;
  if (folded)
    return activate(L.act, at::conv2d(x, L.fold_weight, L.bias, {L.sh, L.sw}, {L.fold_ph, L.fold_pw}, 1, groups));
  int64_t ph = 0, pw = 0;
  at::Tensor in = pad_same(L, x, 0, &ph, &pw);
  return activate(L.act, at::conv2d(in, L.weight, L.bias, {L.sh, L.sw}, {ph, pw}, {L.dh, L.dw}, groups));
}

at::Tensor pool(const Layer& L, const at::Tensor& x) {
  if (L.kind == Kind::MaxPool) {
    int64_t ph = 0, pw = 0;
    at::Tensor in = pad_same(L, x, -std::numeric_limits<double>::infinity(), &ph, &pw);
    return at::max_pool2d(in, {L.kh, L.kw}, {L.sh, L.sw});
  }
  if (!L.same) return at::avg_pool2d(x, {L.kh, L.kw}, {L.sh, L.sw});
  // TF averages over the cells inside the image only.
  auto [t, b] = same_pads(x.size(2), L.kh, L.sh, 1);
  auto [l, r] = same_pads(x.size(3), L.kw, L.sw, 1);
  at::Tensor sum = at::avg_pool2d(at::constant_pad_nd(x, {l, r, t, b}, 0), {L.kh, L.kw}, {L.sh, L.sw});
  at::Tensor ones = at::ones({1, 1, x.size(2), x.size(3)}, x.options());
  return sum / at::avg_pool2d(at::constant_pad_nd(ones, {l, r, t, b}, 0), {L.kh, L.kw}, {L.sh, L.sw});
}

// `in_place`: the first input is dead after this layer and owned by the graph, so element-wise
// layers may overwrite it (fewer large allocations, whose page faults dominate on small CPUs).
at::Tensor eval(const Layer& L, std::vector<at::Tensor>& v, bool in_place) {
  at::Tensor& x = v[L.inputs.empty() ? 0 : L.inputs[0]];
  switch (L.kind) {
    case Kind::Input: return x;
    case Kind::ZeroPad: return at::constant_pad_nd(x, {L.pad_l, L.pad_r, L.pad_t, L.pad_b}, 0);
    case Kind::Conv:
    case Kind::Depthwise: return conv(L, v);
    case Kind::BatchNorm:
      if (L.fused && !v[L.fused_conv].defined()) return conv(*L.fused, v);  // the convolution was skipped
      return (in_place ? x.mul_(L.scale) : x * L.scale).add_(L.shift);
    case Kind::ReLU: {
      at::Tensor y = in_place ? x : x.clone();
      return L.max_value >= 0 ? y.clamp_(0, L.max_value) : y.clamp_min_(0);
    }
    case Kind::Activation: return activate(L.act, in_place ? x : x.clone());
    case Kind::Add: {
      at::Tensor y = in_place ? x.add_(v[L.inputs[1]]) : x + v[L.inputs[1]];
      for (size_t i = 2; i < L.inputs.size(); ++i) y.add_(v[L.inputs[i]]);
      return y;
    }
    case Kind::Concat: {
      std::vector<at::Tensor> parts;
      for (int i : L.inputs) parts.push_back(v[i]);
      return at::cat(parts, L.concat_dim);
    }
    case Kind::MaxPool:
    case Kind::AvgPool: return pool(L, x);
    case Kind::GlobalAvg: return x.mean({2, 3});
    case Kind::GlobalMax: return x.amax({2, 3});
    case Kind::Flatten: return x.dim() == 4 ? x.permute({0, 2, 3, 1}).reshape({x.size(0), -1}) : x;
    case Kind::Dense: return activate(L.act, at::linear(x, L.weight, L.bias));
    case Kind::Identity: return x;
  }
  return x;
}

at::Tensor to_keras_layout(const at::Tensor& t) { return t.dim() == 4 ? t.permute({0, 2, 3, 1}).contiguous() : t; }

}  // namespace

namespace {

// Runs the graph on one NCHW-shaped, channels-last batch.
std::map<std::string, at::Tensor> run_batch(const TfjsModel::Graph& g, const at::Tensor& x,
                                            const std::vector<char>& wanted, size_t remaining) {
  std::vector<at::Tensor> v(g.layers.size());
  v[0] = x;
  std::map<std::string, at::Tensor> out;
  for (size_t i = 0; i < g.layers.size() && remaining > 0; ++i) {
    const Layer& L = g.layers[i];
    const int first = L.inputs.empty() ? 0 : L.inputs[0];
    const bool in_place = g.owns_output[first] && g.last_use[first] == static_cast<int>(i) && !wanted[first] &&
                          std::count(L.inputs.begin(), L.inputs.end(), first) == 1;
    if (i > 0 && !(g.skippable[i] && !wanted[i])) v[i] = eval(L, v, in_place);
    for (int j : g.frees[i])
      if (!wanted[j]) v[j].reset();
    if (wanted[i]) out[L.name] = to_keras_layout(v[i]), --remaining;
  }
  return out;
}

}  // namespace

std::map<std::string, at::Tensor> TfjsModel::run(const at::Tensor& batch, const std::vector<std::string>& outputs,
                                                 Layout layout) const {
  const Graph& g = *g_;
  std::vector<char> wanted(g.layers.size(), 0);
  size_t remaining = 0;
  for (const auto& name : outputs) {
    int i = g.find(name);
    if (!wanted[i]) wanted[i] = 1, ++remaining;
  }
  if (batch.dim() != 4 || batch.scalar_type() != at::kFloat) fail(g.source, ": input must be a float32 [B,H,W,C] or [B,C,H,W] batch");
  at::Tensor x = layout == Layout::NHWC ? batch.permute({0, 3, 1, 2}) : batch;
  const Shape& want = g.layers[0].out;
  for (int d = 0; d < 3; ++d) {
    const int64_t got = x.size(d == 2 ? 1 : d + 2);
    if (want[d] >= 0 && got != want[d])
      fail(g.source, ": input has shape [H,W,C] = [", x.size(2), ",", x.size(3), ",", x.size(1), "], the model expects ",
           shape_str(want));
  }
  at::NoGradGuard no_grad;
  // Micro-batches keep each activation under kMaxActivationBytes: glibc maps larger blocks
  // afresh on every call, and their page faults cost more than the arithmetic (3-4x at batch 8).
  const int64_t step = std::max<int64_t>(1, kMaxActivationBytes / std::max<int64_t>(1, g.max_activation_bytes));
  if (x.size(0) <= step) return run_batch(g, x.contiguous(kChannelsLast), wanted, remaining);
  std::map<std::string, std::vector<at::Tensor>> parts;
  for (int64_t b = 0; b < x.size(0); b += step)
    for (auto& [name, t] : run_batch(g, x.slice(0, b, b + step).contiguous(kChannelsLast), wanted, remaining))
      parts[name].push_back(t);
  std::map<std::string, at::Tensor> out;
  for (auto& [name, ts] : parts) out[name] = at::cat(ts, 0);
  return out;
}

bool TfjsModel::has_layer(const std::string& name) const { return g_->index.count(name) != 0; }
std::vector<int64_t> TfjsModel::output_shape(const std::string& layer) const { return g_->layers[g_->find(layer)].out; }
std::vector<int64_t> TfjsModel::input_shape() const { return g_->layers[0].out; }
const std::string& TfjsModel::name() const { return g_->model_name; }
const std::string& TfjsModel::source() const { return g_->source; }
const std::map<std::string, std::string>& TfjsModel::metadata() const { return g_->metadata; }
const std::map<std::string, at::Tensor>& TfjsModel::weights() const { return g_->weights; }

}  // namespace gad
