#include "inctrl/stats_head.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace gad {

namespace {
constexpr int64_t kMaxWindow = 64;
}

StatsHead StatsHead::load(Weights& w) {
  StatsHead h{w.take("stats_head.mean", {kStatistics}), w.take("stats_head.scale", {kStatistics}),
              w.take("stats_head.weight", {kStatistics}), w.take("stats_head.bias", {1}),
              w.has("stats_head.window") ? w.take("stats_head.window", {1}) : at::ones({1})};
  const double side = h.window.item<double>();
  if (!(side >= 1 && side <= kMaxWindow && side == std::floor(side)))
    fail(w.source(), ": stats_head.window must be a whole number 1..", kMaxWindow, ", got ", side);
  return h;
}

at::Tensor StatsHead::statistics(const at::Tensor& m) {
  const int64_t p = m.size(1);
  const at::Tensor sorted = std::get<0>(m.sort(1, /*descending=*/true));
  auto top_mean = [&](double fraction) {
    const int64_t n = std::max<int64_t>(1, std::lround(fraction * static_cast<double>(p)));
    return sorted.slice(1, 0, n).mean(1);
  };
  return at::stack({sorted.select(1, 0), top_mean(0.02), top_mean(0.10)}, 1);
}

at::Tensor StatsHead::smooth(const at::Tensor& m, int64_t grid, int64_t window) {
  if (m.size(1) != grid * grid) fail("statistics head: the map has ", m.size(1), " values, not a ", grid, "x", grid, " grid");
  if (window > grid) fail("statistics head: window ", window, " is larger than the ", grid, "x", grid, " grid");
  if (window == 1) return m;
  return at::avg_pool2d(m.reshape({-1, 1, grid, grid}), {window, window}, {1, 1}).flatten(1);
}

at::Tensor StatsHead::forward(const at::Tensor& m, int64_t grid) const {
  const auto side = static_cast<int64_t>(window.item<double>());
  const at::Tensor z = (statistics(smooth(m.to(at::kFloat), grid, side)) - mean) / scale;
  return at::matmul(z, weight) + bias;
}

}  // namespace gad
