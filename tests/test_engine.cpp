// Reference sets and the CLI on the tiny model: cached sets reload to identical scores and never
// re-encode references or text; bad input is a one-line error with a non-zero exit.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "io/safetensors.h"
#include "support.h"
#include "util/error.h"

namespace gad {
namespace {

const std::string kTiny = test::inctrl_fixture("tiny_model/model.safetensors");
const std::string kTinyConfig = test::inctrl_fixture("tiny_model/config.json");
std::string img(const std::string& name) { return test::inctrl_fixture("preprocess/" + name); }

using test::tiny_options;

std::vector<double> scores(Detector& d, const References& refs, const std::vector<std::string>& paths, int batch = 2) {
  std::vector<double> out;
  ScoreOptions so;
  so.batch = batch;
  for (const auto& r : d.score(refs, paths, so)) out.push_back(r.score);
  return out;
}

TEST(ReferenceSetFile, ReloadGivesIdenticalScoresAndEncodesOnlyQueries) {
  const std::vector<std::string> queries = {img("elpv_cell0004.png"), img("mt_fray_331149.jpg"), img("headct_195.png")};
  std::string path = test::temp_dir("refs") + "/set.gadref";
  std::vector<double> first;
  {
    Detector e(tiny_options());
    const References refs = e.build_references({img("mt_break_348629.jpg"), img("cifar_cat_0000.jpg")}, "metal_nut");
    EXPECT_EQ(image_encodes(e), 2);
    EXPECT_EQ(text_encodes(e), 154 + 88);
    refs.save(path);
    first = scores(e, refs, queries);
  }
  Detector e(tiny_options());
  const References loaded = e.load_references(path);
  std::vector<double> again = scores(e, loaded, queries);
  ASSERT_EQ(again.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(again[i], first[i]) << queries[i];
  EXPECT_EQ(image_encodes(e), 3);  // the queries only
  EXPECT_EQ(text_encodes(e), 0);   // no text tower at all
}

TEST(ReferenceSetFile, RefusesAnotherModel) {
  std::string dir = test::temp_dir("othermodel");
  {
    Detector e(tiny_options());
    e.build_references({img("mt_break_348629.jpg")}, "elpv").save(dir + "/set.gadref");
  }
  // The same architecture with one backbone weight changed.
  SafetensorsContents c = read_safetensors(kTiny);
  at::Tensor changed;
  for (auto& [name, raw] : c.tensors)
    if (name == "visual.class_embedding") {
      changed = at::from_blob(const_cast<uint8_t*>(raw.data), {64}, at::kFloat).clone() + 1;
      raw.data = static_cast<const uint8_t*>(changed.data_ptr());
    }
  write_safetensors(dir + "/other.safetensors", c.tensors);
  ModelOptions o = tiny_options();
  o.model = dir + "/other.safetensors";
  Detector other(o);
  try {
    other.load_references(dir + "/set.gadref");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("made with another model"), std::string::npos) << e.what();
  }
}

using CliRun = test::CliResult;
CliRun cli(const std::string& args) { return test::run_cli(args); }

const std::string kModelArgs = "--model " + kTiny + " --config " + kTinyConfig + " --precision fp32";

// Exactly one error line (log lines may precede it), naming `needle`, and a non-zero exit.
void expect_one_line_error(const CliRun& r, const std::string& needle) {
  EXPECT_NE(r.status, 0);
  size_t at = r.err.find("gad: error: ");
  ASSERT_NE(at, std::string::npos) << r.err;
  std::string error = r.err.substr(at);
  EXPECT_EQ(r.err.find("gad: error: ", at + 1), std::string::npos) << r.err;
  EXPECT_NE(error.find(needle), std::string::npos) << r.err;
  EXPECT_EQ(std::count(error.begin(), error.end(), '\n'), 1) << r.err;
}

TEST(Cli, ScoreWritesOneJsonLinePerImage) {
  CliRun r = cli("score " + kModelArgs + " --ref-images " + img("mt_break_348629.jpg") + " --class elpv " +
              img("elpv_cell0004.png") + " " + img("headct_195.png"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 2);
  auto first = nlohmann::json::parse(r.out.substr(0, r.out.find('\n')));
  EXPECT_NEAR(first["score"].get<double>(), 0.4444405436515808, 1e-5);  // case elpv_cell0004__K1__elpv
}

TEST(Cli, KZeroIsAnError) {
  std::string out = test::temp_dir("k0") + "/set.gadref";
  expect_one_line_error(cli("refs build " + kModelArgs + " --class elpv --k 0 " + test::inctrl_fixture("preprocess") + " -o " + out),
                        "--k");
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(Cli, UnreadableReferenceNamesTheFile) {
  std::string dir = test::temp_dir("badref");
  std::ofstream(dir + "/broken.png") << "definitely not a png";
  expect_one_line_error(cli("refs build " + kModelArgs + " --class elpv " + dir + "/broken.png -o " + dir + "/set.gadref"),
                        dir + "/broken.png");
  EXPECT_FALSE(std::filesystem::exists(dir + "/set.gadref"));
}

TEST(Cli, EmptyClassNameIsAnError) {
  std::string out = test::temp_dir("emptyclass") + "/set.gadref";
  expect_one_line_error(cli("refs build " + kModelArgs + " --class '' " + img("elpv_cell0004.png") + " -o " + out), "class");
  EXPECT_FALSE(std::filesystem::exists(out));
}

TEST(Cli, ReferenceSetReloadsWithTheSameWeightsInAnotherFileFormat) {
  std::string dir = test::temp_dir("cli-other");
  ASSERT_EQ(cli("refs build " + kModelArgs + " --class elpv " + img("elpv_cell0004.png") + " -o " + dir + "/set.gadref").status, 0);
  // checkpoint.pyth holds the same weights as model.safetensors: same fingerprint, accepted.
  // (Refusal of a different model is tested in ReferenceSetFile.RefusesAnotherModel.)
  CliRun same = cli("score --model " + test::inctrl_fixture("tiny_model/checkpoint.pyth") + " --config " + kTinyConfig +
                 " --refs " + dir + "/set.gadref " + img("headct_195.png"));
  EXPECT_EQ(same.status, 0) << same.err;
}

TEST(Cli, MissingQueryAndEmptyFolderAreErrors) {
  std::string dir = test::temp_dir("emptydir");
  expect_one_line_error(cli("score " + kModelArgs + " --ref-images " + img("elpv_cell0004.png") + " --class elpv " + dir),
                        "no image files");
  expect_one_line_error(cli("score " + kModelArgs + " --ref-images " + img("elpv_cell0004.png") + " --class elpv " + dir + "/nope.png"),
                        "nope.png");
}

TEST(Cli, InspectDumpHasDocumentedTensors) {
  std::string dump = test::temp_dir("dump") + "/d.safetensors";
  CliRun r = cli("inspect " + kModelArgs + " " + img("elpv_cell0004.png") + " --ref-images " + img("mt_break_348629.jpg") +
              " --class elpv --dump " + dump);
  ASSERT_EQ(r.status, 0) << r.err;
  auto t = test::load_tensors(dump);
  for (const char* k : {"0.pixel_values", "0.cls_embedding", "0.tapped_tokens", "0.residual_map", "0.s_patch", "0.s_text",
                        "0.s_img", "0.holistic_map", "0.s_hol", "0.final_score"})
    EXPECT_TRUE(t.count(k)) << k;
  EXPECT_EQ(t["0.tapped_tokens"].sizes(), (std::vector<int64_t>{3, 225, 64}));
  auto want = test::load_tensors(test::inctrl_fixture("tiny_model/cases/case_elpv_cell0004__K1__elpv.safetensors"));
  EXPECT_LT(test::max_abs_diff(t["0.final_score"], want["final_score"]), 1e-5);
  EXPECT_LT(test::max_abs_diff(t["0.residual_map"], want["residual_map"]), 1e-4);
}

// InCTRL's released prompt files as references: `refs build --prompts` and `score --prompts` give
// the K = 2 case scores (the prompt tensors are the fixture images' pixel_values), and the set
// records the file, its sha256 and K.
TEST(Cli, PromptFilesAreReferences) {
  const std::string dir = test::temp_dir("cli-prompts");
  const std::string prompts = test::inctrl_fixture("release_formats/fs_samples/tiny/2/list_of_tensors.pt");
  ASSERT_EQ(cli("refs build " + kModelArgs + " --prompts " + prompts + " --class elpv -o " + dir + "/set.gadref").status, 0);
  auto meta = nlohmann::json::parse(read_safetensors(dir + "/set.gadref").metadata.at("gad"));
  EXPECT_EQ(meta["k"], 2);
  EXPECT_EQ(meta["sources"][1]["path"], prompts + "#1");
  EXPECT_EQ(meta["sources"][1]["sha256"].get<std::string>().size(), 64u);
  CliRun from_set = cli("score " + kModelArgs + " --refs " + dir + "/set.gadref " + img("elpv_cell0004.png"));
  CliRun direct = cli("score " + kModelArgs + " --prompts " + prompts + " --class elpv " + img("elpv_cell0004.png"));
  ASSERT_EQ(direct.status, 0) << direct.err;
  ASSERT_EQ(from_set.status, 0) << from_set.err;
  auto a = nlohmann::json::parse(from_set.out), b = nlohmann::json::parse(direct.out);
  a.erase("ms");
  b.erase("ms");
  EXPECT_EQ(a, b);  // a saved set scores exactly like the file it was built from
  auto want = test::load_tensors(test::inctrl_fixture("tiny_model/cases/case_elpv_cell0004__K2__elpv.safetensors"));
  EXPECT_NEAR(nlohmann::json::parse(direct.out)["score"].get<double>(), want["final_score"].item<double>(), 1e-5);
}

TEST(Cli, BadPromptFilesAreOneLineErrorsWithNoOutput) {
  const std::string dir = test::temp_dir("cli-bad-prompts");
  const std::string prompts = test::inctrl_fixture("release_formats/fs_samples/tiny/2/stacked.pt");
  // The lite model takes 224 px inputs; these prompts were preprocessed for CLIP's 240.
  expect_one_line_error(cli("refs build --prompts " + prompts + " --class tile -o " + dir + "/a.gadref"),
                        prompts + ": prompt 0 has shape [3,240,240], expected [3,224,224]");
  // A state dict is not a prompt set.
  expect_one_line_error(cli("refs build " + kModelArgs + " --prompts " + kTiny + " --class elpv -o " + dir + "/b.gadref"), kTiny);
  expect_one_line_error(cli("refs build " + kModelArgs + " --prompts " + prompts + " " + img("elpv_cell0004.png") +
                            " --class elpv -o " + dir + "/c.gadref"),
                        "exclusive");
  EXPECT_TRUE(std::filesystem::is_empty(dir));
}

}  // namespace
}  // namespace gad
