#include "inctrl/stats_head.h"

#include <algorithm>
#include <cmath>

namespace gad {

StatsHead StatsHead::load(Weights& w) {
  return {w.take("stats_head.mean", {kStatistics}), w.take("stats_head.scale", {kStatistics}),
          w.take("stats_head.weight", {kStatistics}), w.take("stats_head.bias", {1})};
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

at::Tensor StatsHead::forward(const at::Tensor& m) const {
  const at::Tensor z = (statistics(m.to(at::kFloat)) - mean) / scale;
  return at::matmul(z, weight) + bias;
}

}  // namespace gad
