// The CLIP towers against the reference implementation's tensors (tiny random-weight model).
// Tolerance 1e-4 abs, as the fixture README suggests: float32 with a different summation order
// than OpenBLAS; the README measured up to 5.6e-6 between two faithful implementations.
#include <gtest/gtest.h>

#include "clip/clip_backbone.h"
#include "clip/prompts.h"
#include "engine/load_model.h"
#include "support.h"

namespace gad {
namespace {

constexpr double kTol = 1e-4;
const char* kImages[] = {"elpv_cell0004", "mt_fray_331149", "headct_195"};

LoadedModel tiny(const std::string& file) {
  return load_model({test::inctrl_fixture("tiny_model/" + file), test::inctrl_fixture("tiny_model/config.json"), ""});
}

at::Tensor fixture_pixels(const std::string& image) {
  return test::load_tensors(test::inctrl_fixture("preprocess/" + image + ".safetensors"))["pixel_values"].unsqueeze(0);
}

class TinyModelFile : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyModelFile, VisionMatchesReferenceEncodings) {
  LoadedModel m = tiny(GetParam());
  for (const char* image : kImages) {
    auto want = test::load_tensors(test::inctrl_fixture(std::string("tiny_model/cases/queries/") + image + ".safetensors"));
    Features f = m.backbone->encode(fixture_pixels(image));
    EXPECT_LT(test::max_abs_diff(f.global[0], want["cls_embedding"]), kTol) << image;
    ASSERT_EQ(f.taps.size(), 3u);
    EXPECT_LT(test::max_abs_diff(at::stack({f.taps[0][0], f.taps[1][0], f.taps[2][0]}), want["tapped_patch_tokens"]), kTol)
        << image;
  }
}

TEST_P(TinyModelFile, TextFeaturesMatchReference) {
  LoadedModel m = tiny(GetParam());
  auto& clip = dynamic_cast<ClipBackbone&>(*m.backbone);
  for (const char* name : {"elpv", "metal_nut", "cat"}) {
    auto want = test::load_tensors(test::inctrl_fixture(std::string("tiny_model/cases/text/") + name + ".safetensors"));
    at::Tensor prior = clip.text_prior(name);
    EXPECT_LT(test::max_abs_diff(prior[0], want["text_normal_feature"]), kTol) << name;
    EXPECT_LT(test::max_abs_diff(prior[1], want["text_anomaly_feature"]), kTol) << name;
    if (want.count("normal_embeddings_raw")) {
      PromptSentences s = inctrl_prompt_sentences(name);
      EXPECT_LT(test::max_abs_diff(clip.encode_sentences(s.normal), want["normal_embeddings_raw"]), kTol) << name;
      EXPECT_LT(test::max_abs_diff(clip.encode_sentences(s.anomaly), want["anomaly_embeddings_raw"]), kTol) << name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, TinyModelFile,
                         ::testing::Values("model.safetensors", "model_state.pt", "checkpoint.pyth"));

TEST(ClipTrace, VisionBlocksMatchReferenceTrace) {
  LoadedModel m = tiny("model.safetensors");
  auto& clip = dynamic_cast<ClipBackbone&>(*m.backbone);
  auto trace = test::load_tensors(test::inctrl_fixture("tiny_model/debug/vision_trace_elpv_cell0004.safetensors"));
  std::vector<int> all_blocks;
  for (int i = 1; i <= 12; ++i) all_blocks.push_back(i);
  VisionOutput v = clip.vision().forward(fixture_pixels("elpv_cell0004"), all_blocks);
  for (int i = 0; i < 12; ++i) {
    EXPECT_LT(test::max_abs_diff(v.taps[i][0][116], trace["block_out_patch_r7c11"][i]), kTol) << "block " << i + 1;
  }
  EXPECT_LT(test::max_abs_diff(v.taps[11][0], trace["block12_out"].slice(0, 1)), kTol);
  EXPECT_LT(test::max_abs_diff(v.cls_embedding[0], trace["cls_embedding"]), kTol);
}

TEST(ClipTrace, TextMatchesReferenceTrace) {
  LoadedModel m = tiny("model.safetensors");
  auto& clip = dynamic_cast<ClipBackbone&>(*m.backbone);
  auto trace = test::load_tensors(test::inctrl_fixture("tiny_model/debug/text_trace.safetensors"));
  at::Tensor e = clip.encode_sentences({"a cropped photo of the elpv.", "a photo of cat for anomaly detection."});
  EXPECT_LT(test::max_abs_diff(e[0], trace["s0_text_embedding"]), kTol);
  EXPECT_LT(test::max_abs_diff(e[1], trace["s1_text_embedding"]), kTol);
}

}  // namespace
}  // namespace gad
