#include "inctrl/calibration.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace gad {

int64_t normals_needed(double far) { return static_cast<int64_t>(std::ceil(1 / far - 1 - 1e-9)); }

Threshold conformal_threshold(std::vector<double> scores, double far, const std::string& method, std::string* warning) {
  if (!(far > 0 && far < 1)) fail("far: the false-alarm rate must be in (0, 1) (got ", far, ")");
  if (scores.empty()) fail("calibration: no normal scores");
  for (double s : scores)
    if (!std::isfinite(s)) fail("calibration: a normal score is not finite");
  std::sort(scores.begin(), scores.end());
  const auto n = static_cast<int64_t>(scores.size());
  // The small epsilon keeps (n+1)(1-far) = 19.000000000000004 from becoming rank 20.
  const auto rank = static_cast<int64_t>(std::ceil((n + 1) * (1 - far) - 1e-9));
  Threshold t{0, far, method, n};
  if (warning) warning->clear();
  if (rank <= n) {
    t.value = scores[rank - 1];
    return t;
  }
  t.value = scores.back() + 1e-6 * std::max(1.0, std::abs(scores.back()));
  if (warning) {
    const auto needed = normals_needed(far);
    *warning = "only " + std::to_string(n) + " normal score(s): a false-alarm rate of " + std::to_string(far) +
               " needs at least " + std::to_string(needed) + "; using the largest normal score plus a margin";
  }
  return t;
}

}  // namespace gad
