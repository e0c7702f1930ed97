#include "eval/pixel_metrics.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <opencv2/imgproc.hpp>

#include "util/error.h"

namespace gad {

PixelMetrics pixel_metrics(const std::vector<ImageMap>& maps, const std::vector<ImageMap>& masks, double max_fpr) {
  if (maps.size() != masks.size()) fail("pixel metrics: ", maps.size(), " maps but ", masks.size(), " masks");
  if (!(max_fpr > 0 && max_fpr <= 1)) fail("pixel metrics: max FPR must be in (0, 1]");
  // Per pixel: its score and the size of its ground-truth component (0 = normal pixel).
  std::vector<float> score;
  std::vector<int32_t> region;
  int64_t regions = 0;
  for (size_t i = 0; i < maps.size(); ++i) {
    const ImageMap &m = maps[i], &g = masks[i];
    if (m.width != g.width || m.height != g.height || m.values.size() != g.values.size())
      fail("pixel metrics: image ", i, ": map ", m.width, "x", m.height, " but mask ", g.width, "x", g.height);
    cv::Mat bin(g.height, g.width, CV_8UC1);
    for (size_t p = 0; p < g.values.size(); ++p) bin.data[p] = g.values[p] > 0.5f ? 1 : 0;
    cv::Mat labels;
    const int n = cv::connectedComponents(bin, labels, 8, CV_32S);
    std::vector<int32_t> sizes(n, 0);
    for (size_t p = 0; p < g.values.size(); ++p) ++sizes[reinterpret_cast<const int32_t*>(labels.data)[p]];
    regions += n - 1;
    score.insert(score.end(), m.values.begin(), m.values.end());
    for (size_t p = 0; p < g.values.size(); ++p) {
      const int32_t l = reinterpret_cast<const int32_t*>(labels.data)[p];
      region.push_back(l == 0 ? 0 : sizes[l]);
    }
  }
  const auto positives = static_cast<double>(std::count_if(region.begin(), region.end(), [](int32_t r) { return r > 0; }));
  const double negatives = static_cast<double>(region.size()) - positives;
  if (positives == 0 || negatives == 0)
    fail("pixel metrics: need defect and normal pixels (got ", positives, " and ", negatives, ")");
  std::vector<uint32_t> order(score.size());
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return score[a] > score[b]; });
  double tp = 0, fp = 0, pro = 0;  // pro: Σ 1/size over defect pixels above threshold
  double auroc = 0, aupro = 0, prev_fpr = 0, prev_tpr = 0, prev_pro = 0;
  bool pro_done = false;
  for (size_t i = 0; i < order.size(); ++i) {
    const int32_t r = region[order[i]];
    if (r > 0) {
      tp += 1;
      pro += 1.0 / r;
    } else {
      fp += 1;
    }
    if (i + 1 < order.size() && score[order[i + 1]] == score[order[i]]) continue;  // ties: one threshold
    const double fpr = fp / negatives, tpr = tp / positives, pro_mean = pro / static_cast<double>(regions);
    auroc += (fpr - prev_fpr) * (tpr + prev_tpr) / 2;
    if (!pro_done) {
      if (fpr >= max_fpr) {  // the last segment, cut at max_fpr by linear interpolation
        const double at = fpr > prev_fpr ? prev_pro + (pro_mean - prev_pro) * (max_fpr - prev_fpr) / (fpr - prev_fpr) : pro_mean;
        aupro += (max_fpr - prev_fpr) * (prev_pro + at) / 2;
        pro_done = true;
      } else {
        aupro += (fpr - prev_fpr) * (pro_mean + prev_pro) / 2;
      }
    }
    prev_fpr = fpr;
    prev_tpr = tpr;
    prev_pro = pro_mean;
  }
  return {auroc, aupro / max_fpr};
}

}  // namespace gad
