// Weight loading: every supported file form, and loud one-line errors for every way a file can be
// wrong (truncated, renamed key, wrong shape, wrong dtype, unexpected key).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clip/clip_backbone.h"
#include "inctrl/heads.h"
#include "engine/load_model.h"
#include "model/weights.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

const std::string kTinyConfig = test::inctrl_fixture("tiny_model/config.json");
const std::string kTinyModel = test::inctrl_fixture("tiny_model/model.safetensors");

// Writes a copy of the tiny model after `edit` changed its tensor list.
std::string edited_copy(const std::string& name, const std::function<void(RawTensorList&)>& edit) {
  SafetensorsContents c = read_safetensors(kTinyModel);
  edit(c.tensors);
  std::string path = test::temp_dir("weights") + "/" + name + ".safetensors";
  write_safetensors(path, c.tensors);
  return path;
}

std::string load_error(const std::string& model) {
  try {
    load_model({model, kTinyConfig, ""});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_contains(const std::string& text, const std::vector<std::string>& parts) {
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  for (const auto& p : parts) EXPECT_NE(text.find(p), std::string::npos) << "'" << p << "' not in: " << text;
}

TEST(Weights, TruncatedFileNamesFileAndProblem) {
  auto bytes = read_file_bytes(kTinyModel);
  for (size_t keep : {size_t(4), size_t(100), bytes.size() / 2, bytes.size() - 1}) {
    std::string path = test::temp_dir("trunc") + "/model.safetensors";
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), keep);
    std::string err = load_error(path);
    expect_contains(err, {path});
    EXPECT_TRUE(err.find("truncated") != std::string::npos || err.find("not a safetensors") != std::string::npos) << err;
  }
}

TEST(Weights, RenamedKeyIsMissing) {
  std::string path = edited_copy("renamed", [](RawTensorList& t) {
    for (auto& [name, raw] : t)
      if (name == "visual.ln_pre.weight") name = "visual.ln_pre.gamma";
  });
  expect_contains(load_error(path), {path, "missing key 'visual.ln_pre.weight'", "[64]"});
}

TEST(Weights, WrongShapeNamesBothShapes) {
  std::string path = edited_copy("shape", [](RawTensorList& t) {
    for (auto& [name, raw] : t)
      if (name == "visual.proj") raw.shape = {640, 64};
  });
  expect_contains(load_error(path), {path, "visual.proj", "[640,64]", "[64,640]"});
}

TEST(Weights, WrongDtypeIsAnError) {
  std::string path = edited_copy("dtype", [](RawTensorList& t) {
    for (auto& [name, raw] : t)
      if (name == "diff_head.bn2.num_batches_tracked") raw.dtype = DType::F64;  // same 8 bytes
  });
  expect_contains(load_error(path), {path, "diff_head.bn2.num_batches_tracked", "dtype"});
}

TEST(Weights, UnexpectedKeyIsAnError) {
  std::vector<float> extra(3, 1.0f);
  std::string path = edited_copy("extra", [&](RawTensorList& t) {
    RawTensor r;
    r.shape = {3};
    r.data = reinterpret_cast<const uint8_t*>(extra.data());
    r.nbytes = 12;
    t.emplace_back("visual.extra_thing", r);
  });
  expect_contains(load_error(path), {path, "unexpected key 'visual.extra_thing'"});
}

TEST(Weights, HalfPrecisionFilesLoadAsFloat) {
  for (DType d : {DType::F16, DType::BF16}) {
    std::vector<std::vector<uint8_t>> storage;
    SafetensorsContents c = read_safetensors(kTinyModel);
    std::vector<at::Tensor> keep;
    for (auto& [name, raw] : c.tensors) {
      if (raw.dtype != DType::F32) continue;
      at::Tensor h = at::from_blob(const_cast<uint8_t*>(raw.data), std::vector<int64_t>(raw.shape.begin(), raw.shape.end()),
                                   at::kFloat).to(d == DType::F16 ? at::kHalf : at::kBFloat16);
      keep.push_back(h);
      raw.dtype = d;
      raw.data = static_cast<const uint8_t*>(h.data_ptr());
      raw.nbytes = h.nbytes();
    }
    std::string path = test::temp_dir("half") + "/model.safetensors";
    write_safetensors(path, c.tensors);
    Weights w = Weights::load(path);
    at::Tensor got = w.take("visual.proj", {64, 640});
    EXPECT_EQ(got.scalar_type(), at::kFloat);
    at::Tensor want = Weights::load(kTinyModel).take("visual.proj", {64, 640});
    EXPECT_LT(test::max_abs_diff(got, want), d == DType::F16 ? 2e-3 : 2e-2);
    EXPECT_NO_THROW(load_model({path, kTinyConfig, ""}));
  }
}

TEST(TestSupport, LoadTensorsKeepsTheValuesOfEveryDtype) {
  // Fixture tensors stored as F16/BF16/F64/I32 must come back as their values, not as their bytes
  // reinterpreted as float32. The values are exact in every dtype, so the comparison is exact.
  const at::Tensor values = at::tensor({0.5, -1.25, 3.0, 96.0}, at::kDouble);
  std::vector<at::Tensor> keep;
  RawTensorList list;
  for (at::ScalarType st : {at::kHalf, at::kBFloat16, at::kDouble, at::kFloat}) {
    keep.push_back(values.to(st).contiguous());
    list.emplace_back(std::string("t_") + c10::toString(st), raw_view(keep.back()));
  }
  const at::Tensor ints = values.to(at::kInt).contiguous();
  RawTensor r;
  r.dtype = DType::I32;
  r.shape = {4};
  r.data = static_cast<const uint8_t*>(ints.data_ptr());
  r.nbytes = ints.nbytes();
  list.emplace_back("t_int", r);
  const std::string path = test::temp_dir("dtypes") + "/t.safetensors";
  write_safetensors(path, list);
  const auto got = test::load_tensors(path);
  ASSERT_EQ(got.size(), 5u);
  for (const auto& [name, t] : got) {
    if (name == "t_int") {
      EXPECT_EQ(t.scalar_type(), at::kInt);
      EXPECT_TRUE(at::equal(t, ints)) << name;
    } else {
      EXPECT_EQ(t.scalar_type(), at::kFloat) << name;
      EXPECT_TRUE(at::equal(t, values.to(at::kFloat))) << name << ": " << t;
    }
  }
}

TEST(Weights, SeparateHeadsFileMustBeComplete) {
  // A heads file missing one key fails naming that file and key.
  SafetensorsContents c = read_safetensors(kTinyModel);
  RawTensorList heads;
  for (auto& [name, raw] : c.tensors)
    if ((name.rfind("adapter.", 0) == 0 || name.rfind("diff_head", 0) == 0) && name != "diff_head.bn3.running_var")
      heads.emplace_back(name, raw);
  std::string path = test::temp_dir("heads") + "/heads.safetensors";
  write_safetensors(path, heads);
  try {
    load_model({kTinyModel, kTinyConfig, path});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    expect_contains(e.what(), {path, "diff_head.bn3.running_var"});
  }
}

TEST(Weights, UnknownConfigNameListsKnownOnes) {
  try {
    load_clip_config("ViT-Q-99");
    FAIL();
  } catch (const Error& e) {
    expect_contains(e.what(), {"ViT-Q-99", "ViT-B-16-plus-240", "ViT-L-14"});
  }
}

// The real ViT-B-16-plus-240 InCTRL model: building it from its config consumes exactly the 345
// keys with the shapes the reference lists.
TEST(Weights, FullSizeArchitectureMatchesReferenceKeyList) {
  auto ref = nlohmann::json::parse(read_file_text(test::inctrl_fixture("full_size_keys.json")));
  Weights w = Weights::synthetic(0);
  ClipBackbone clip(load_clip_config("ViT-B-16-plus-240"), w);
  InctrlHeads::load(w, clip.embed_dim(), clip.num_patches());
  EXPECT_NO_THROW(w.check_all_taken());
  std::map<std::string, std::vector<int64_t>> built;
  for (const auto& [k, t] : w.all()) built[k] = t.sizes().vec();
  std::map<std::string, std::vector<int64_t>> want;
  for (const auto& e : ref["keys"]) want[e["key"]] = e["shape"].get<std::vector<int64_t>>();
  EXPECT_EQ(want.size(), 345u);
  EXPECT_EQ(built, want);
  int64_t values = 0;
  for (const auto& [k, t] : w.all()) values += t.numel();
  EXPECT_EQ(values, ref["n_values"].get<int64_t>());
}

TEST(Weights, OtherShippedConfigsBuild) {
  for (const char* name : {"ViT-B-16", "ViT-B-32", "ViT-L-14"}) {
    ClipConfig cfg = load_clip_config(name);
    EXPECT_EQ(cfg.name, name);
    EXPECT_EQ(cfg.vision.width % cfg.vision.heads, 0);
  }
  ClipConfig l14 = load_clip_config("ViT-L-14");
  EXPECT_EQ(l14.vision.grid(), 16);
  EXPECT_EQ(l14.vision.heads, 16);
}

}  // namespace
}  // namespace gad
