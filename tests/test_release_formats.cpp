// Model and prompt files as the public releases save them. The fixtures cover OpenCLIP's two
// layouts (test_inctrl_cases.cpp runs all 27 cases on each); here, files written with LibTorch's
// torch::pickle_save (the C++ side of Python's torch.save format) cover heads saved with
// torch.save, the `module.` rule, extra keys and every way a prompt file can be wrong.
#include <gtest/gtest.h>

#include <torch/csrc/jit/serialization/pickle.h>

#include <fstream>

#include "scorers/reference_set.h"
#include "inctrl/scorer.h"
#include "engine/load_model.h"
#include "support.h"
#include "util/error.h"

namespace gad {
namespace {

const std::string kRelease = test::inctrl_fixture("release_formats/");
const std::string kConfig = test::inctrl_fixture("tiny_model/config.json");

std::string save(const c10::IValue& value, const std::string& name) {
  const std::string path = test::temp_dir("release") + "/" + name;
  const std::vector<char> bytes = torch::jit::pickle_save(value);
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return path;
}

c10::Dict<std::string, at::Tensor> state_dict(const std::string& safetensors, const std::string& prefix) {
  c10::Dict<std::string, at::Tensor> d;
  for (const auto& [k, t] : test::load_tensors(safetensors)) d.insert(prefix + k, t);
  return d;
}

using test::error_of;

double k2_case_score(const LoadedModel& m) {
  InctrlScorer scorer(*m.backbone, m.heads);
  PromptFile p = read_prompt_file(kRelease + "fs_samples/tiny/2/list_of_tensors.pt", m.backbone->input_size());
  ReferenceSet refs = ReferenceSet::build(*m.backbone, p.pixels, p.sources, "metal_nut");
  PromptFile q = read_prompt_file(kRelease + "fs_samples/tiny/1/list_of_tensors.pt", m.backbone->input_size());
  return scorer.score(refs, m.backbone->encode(stack_pixels(q.pixels))).final_score[0].item<double>();
}

TEST(ReleaseFormats, HeadsSavedWithTorchSaveLoadLikeSafetensors) {
  const std::string model = kRelease + "openclip_release_checkpoint.pt";
  const double want = k2_case_score(load_model({model, kConfig, kRelease + "inctrl_heads.safetensors"}));
  // {"state_dict": {"module." + key: tensor}}, as a DataParallel training run saves it.
  c10::impl::GenericDict wrapped(c10::StringType::get(), c10::AnyType::get());
  wrapped.insert("epoch", 10);
  wrapped.insert("state_dict", state_dict(kRelease + "inctrl_heads.safetensors", "module."));
  const std::string heads = save(wrapped, "heads.pt");
  EXPECT_EQ(k2_case_score(load_model({model, kConfig, heads})), want);  // the same bytes: exactly equal
  EXPECT_EQ(k2_case_score(load_model({model, kConfig, save(state_dict(kRelease + "inctrl_heads.safetensors", ""), "flat.pt")})), want);
}

TEST(ReleaseFormats, ModulePrefixIsStrippedOnlyWhenEveryKeyHasIt) {
  auto d = state_dict(kRelease + "inctrl_heads.safetensors", "module.");
  d.insert("adapter_extra.weight", at::zeros({2}));  // one key without the prefix
  const std::string path = save(d, "mixed.pt");
  const std::string msg = error_of([&] { load_model({kRelease + "open_clip_pytorch_model.bin", kConfig, path}); });
  EXPECT_NE(msg.find("missing key 'adapter."), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(ReleaseFormats, OnlyOpenClipKeysAreIgnoredByName) {
  auto d = state_dict(test::inctrl_fixture("tiny_model/model.safetensors"), "");
  d.insert("logit_scale", at::ones({}));  // OpenCLIP stores it; InCTRL does not use it
  EXPECT_EQ(error_of([&] { load_model({save(d, "with_scale.pt"), kConfig, ""}); }), "(no error)");
  d.insert("visual.proj_extra", at::zeros({3}));
  const std::string path = save(d, "extra.pt");
  const std::string msg = error_of([&] { load_model({path, kConfig, ""}); });
  EXPECT_NE(msg.find("unexpected key 'visual.proj_extra'"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
}

TEST(ReleaseFormats, PromptFileErrorsNameTheFileAndTheProblem) {
  struct Bad {
    c10::IValue value;
    std::string needle;
  };
  c10::List<at::Tensor> wrong_size({at::zeros({3, 224, 224})});
  c10::List<at::Tensor> empty;
  c10::impl::GenericList mixed(c10::AnyType::get());
  mixed.push_back(at::zeros({3, 240, 240}));
  mixed.push_back(7);
  c10::List<at::Tensor> nan({at::full({3, 240, 240}, NAN)});
  c10::Dict<std::string, at::Tensor> dict;
  dict.insert("a", at::zeros({3, 240, 240}));
  const std::vector<Bad> cases = {
      {wrong_size, "prompt 0 has shape [3,224,224], expected [3,240,240]"},
      {empty, "holds no prompt images (K = 0)"},
      {mixed, "item 1 of the list is an int, not a tensor"},
      {nan, "prompt 0 holds NaN or infinite values"},
      {dict, "holds a dict, not a tensor or a list of tensors"},
      {at::zeros({2, 3, 240}), "prompt 0 has shape [2,3,240], expected [3,240,240]"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = save(cases[i].value, "bad" + std::to_string(i) + ".pt");
    const std::string msg = error_of([&] { read_prompt_file(path, 240); });
    EXPECT_NE(msg.find(cases[i].needle), std::string::npos) << msg << " (wanted: " << cases[i].needle << ")";
    EXPECT_EQ(msg.rfind(path, 0), 0u) << msg;  // starts with the file
  }
}

}  // namespace
}  // namespace gad
