// Fail-safe results: gad never says "normal" about an image it did not score. A damaged set is
// refused at load; a threshold applies only under the setup it was calibrated in; calibration
// refuses the references and too few normals; one bad image becomes an error row and the run
// goes on with complete outputs; outputs are checked before any work; an interrupted run writes
// complete outputs for what it did; list options never swallow positionals; maps share one scale.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "engine/engine.h"
#include "io/safetensors.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

namespace fs = std::filesystem;

const std::string kTiny = test::inctrl_fixture("tiny_model/model.safetensors");
const std::string kTinyConfig = test::inctrl_fixture("tiny_model/config.json");
const std::string kLite = test::shared("fixtures/lite/mobilenet_v2/model.json");
const std::string kTiny_args = "--model " + kTiny + " --config " + kTinyConfig + " --precision fp32";
const std::string kLiteArgs = "--model " + kLite + " --precision fp32";
std::string img(const std::string& name) { return test::inctrl_fixture("preprocess/" + name); }
std::string tile(const std::string& rel) { return std::string(GAD_SOURCE_DIR) + "/examples/tiles/" + rel; }

test::CliResult cli(const std::string& args) { return test::run_cli(args); }

std::vector<nlohmann::json> json_lines(const std::string& out) {
  std::vector<nlohmann::json> lines;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

using test::tiny_options;

// A set of the tiny model from two images, saved to DIR/set.gadref.
std::string tiny_set(const std::string& dir) {
  Detector d(tiny_options());
  d.build_references({img("mt_break_348629.jpg"), img("cifar_cat_0000.jpg")}, "metal_nut").save(dir + "/set.gadref");
  return dir + "/set.gadref";
}

void flip_bytes_near_end(const std::string& path) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(0, std::ios::end);
  const auto size = static_cast<std::streamoff>(f.tellg());
  f.seekp(size - 64);
  f.write("\x7f\xc0\x00\x01", 4);  // inside the last tensor's data
}

TEST(FailSafe, CorruptedSetIsRefusedNamingTheFile) {
  const std::string dir = test::temp_dir("failsafe-corrupt");
  const std::string set = tiny_set(dir);
  flip_bytes_near_end(set);
  Detector d(tiny_options());
  try {
    d.load_references(set);
    FAIL() << "a damaged set loaded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::CorruptFile);
    EXPECT_NE(std::string(e.what()).find(set), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
  }
  const auto r = cli("score " + kTiny_args + " --refs " + set + " " + img("headct_195.png"));
  EXPECT_EQ(r.status, 1) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;  // not one verdict
  EXPECT_NE(r.err.find("checksum"), std::string::npos) << r.err;
}

TEST(FailSafe, SetWithoutChecksumLoadsWithAWarningAndNonFiniteBanksAreRefused) {
  const std::string dir = test::temp_dir("failsafe-old");
  const std::string set = tiny_set(dir);
  SafetensorsContents c = read_safetensors(set);
  auto meta = c.metadata;
  meta.erase("gad_sha256");
  write_safetensors(dir + "/old.gadref", c.tensors, meta);  // as written before checksums
  Detector d(tiny_options());
  EXPECT_EQ(d.load_references(set).integrity(), "verified");
  EXPECT_EQ(d.load_references(dir + "/old.gadref").integrity(), "unverified");
  const auto r = cli("score " + kTiny_args + " --refs " + dir + "/old.gadref " + img("headct_195.png"));
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("warning: " + dir + "/old.gadref"), std::string::npos) << r.err;

  // The same old-format file with a NaN in a bank: refused at load, never scored.
  std::vector<at::Tensor> keep;
  for (auto& [name, raw] : c.tensors)
    if (name == "bank.0") {
      at::Tensor t = at::from_blob(const_cast<uint8_t*>(raw.data), {raw.numel()}, at::kFloat).clone();
      t[3] = std::nanf("");
      keep.push_back(t);
      raw.data = static_cast<const uint8_t*>(t.data_ptr());
    }
  write_safetensors(dir + "/nan.gadref", c.tensors, meta);
  const std::string e = test::error_of([&] { d.load_references(dir + "/nan.gadref"); });
  EXPECT_NE(e.find("bank.0"), std::string::npos) << e;
  EXPECT_NE(e.find("NaN"), std::string::npos) << e;
}

TEST(FailSafe, ThresholdRefusedUnderAnotherSetup) {
  const std::string dir = test::temp_dir("failsafe-setup");
  const std::string set = dir + "/tiles.gadref";
  ASSERT_EQ(cli("refs build " + kLiteArgs + " --class tile " + tile("train/good") + " -o " + set).status, 0);
  // Calibrated without heads, then scored with the lite heads: another score, another threshold.
  const auto cal = cli("refs calibrate " + kLiteArgs + " --heads none --refs " + set + " --normals " +
                       tile("validation/good") + " --far 0.1");
  ASSERT_EQ(cal.status, 0) << cal.err;
  const auto refused = cli("score " + kLiteArgs + " --heads lite --refs " + set + " " + tile("test/good/000.png"));
  EXPECT_EQ(refused.status, 1);
  EXPECT_TRUE(refused.out.empty()) << refused.out;
  EXPECT_NE(refused.err.find("heads:"), std::string::npos) << refused.err;
  const auto plain = cli("score " + kLiteArgs + " --heads lite --no-threshold --refs " + set + " " + tile("test/good/000.png"));
  ASSERT_EQ(plain.status, 0) << plain.err;
  const auto j = json_lines(plain.out).at(0);
  EXPECT_TRUE(j.contains("score"));
  EXPECT_FALSE(j.contains("anomalous"));
  const auto same = cli("score " + kLiteArgs + " --heads none --refs " + set + " " + tile("test/good/000.png"));
  ASSERT_EQ(same.status, 0) << same.err;
  EXPECT_TRUE(json_lines(same.out).at(0).contains("anomalous"));
}

TEST(FailSafe, CalibrationRefusesReferencesAndTooFewNormalsAndKeepsHistory) {
  const std::string dir = test::temp_dir("failsafe-calib");
  const std::string set = dir + "/tiles.gadref";
  ASSERT_EQ(cli("refs build " + kLiteArgs + " --class tile " + tile("train/good") + " -o " + set).status, 0);
  const auto refs_as_normals = cli("refs calibrate " + kLiteArgs + " --refs " + set + " --normals " + tile("train/good") +
                                   " --far 0.1");
  EXPECT_EQ(refs_as_normals.status, 1);
  EXPECT_NE(refs_as_normals.err.find("is reference"), std::string::npos) << refs_as_normals.err;
  const auto few = cli("refs calibrate " + kLiteArgs + " --refs " + set + " --normals " + tile("validation/good") +
                       " --far 0.05");
  EXPECT_EQ(few.status, 1);
  EXPECT_NE(few.err.find("at least 19"), std::string::npos) << few.err;
  const auto allowed = cli("refs calibrate " + kLiteArgs + " --refs " + set + " --normals " + tile("validation/good") +
                           " --far 0.05 --allow-few");
  EXPECT_EQ(allowed.status, 0) << allowed.err;
  EXPECT_NE(allowed.err.find("warning:"), std::string::npos) << allowed.err;
  ASSERT_EQ(cli("refs calibrate " + kLiteArgs + " --refs " + set + " --normals " + tile("validation/good") + " --far 0.1").status, 0);
  const auto show = cli("refs show " + set);
  ASSERT_EQ(show.status, 0) << show.err;
  EXPECT_NE(show.out.find("checksum: verified"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("thresholds (2"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("train/good/000.png"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("setup: "), std::string::npos) << show.out;
}

// A folder of queries with an unreadable image, a hidden folder, an AppleDouble file and a text file.
std::string messy_folder(const std::string& dir) {
  fs::create_directories(dir + "/q/.thumbs");
  fs::copy_file(tile("test/good/000.png"), dir + "/q/a.png");
  fs::copy_file(tile("test/good/001.png"), dir + "/q/c.png");
  std::ofstream(dir + "/q/b.png") << "not a png at all";
  std::ofstream(dir + "/q/._a.png") << "AppleDouble metadata";
  fs::copy_file(tile("test/good/002.png"), dir + "/q/.thumbs/x.png");
  std::ofstream(dir + "/q/notes.txt") << "hello";
  return dir + "/q";
}

TEST(FailSafe, BadImageBecomesAnErrorRowAndTheRunGoesOn) {
  const std::string dir = test::temp_dir("failsafe-messy");
  const std::string q = messy_folder(dir);
  const auto r = cli("score " + kLiteArgs + " --ref-images " + tile("train/good") + " --class tile " + q + " --csv " +
                     dir + "/out/s.csv --report " + dir + "/out/r.html");
  EXPECT_EQ(r.status, 3) << r.err;  // some images failed: distinct from a fatal error
  const auto lines = json_lines(r.out);
  ASSERT_EQ(lines.size(), 3u) << r.out;  // a, b, c: hidden ones skipped
  EXPECT_TRUE(lines[0].contains("score"));
  EXPECT_EQ(lines[1]["path"], q + "/b.png");
  EXPECT_TRUE(lines[1].contains("error"));
  EXPECT_FALSE(lines[1].contains("score"));
  EXPECT_FALSE(lines[1].contains("anomalous"));
  EXPECT_TRUE(lines[2].contains("score"));
  EXPECT_NE(r.err.find("skipped 1 file(s) that are not images"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("NOT SCORED"), std::string::npos) << r.err;
  const auto rows = test::python_csv_rows(dir + "/out/s.csv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].back(), "error");
  EXPECT_EQ(rows[2][1], "");  // no score
  EXPECT_FALSE(rows[2].back().empty());
  EXPECT_TRUE(rows[1].back().empty());
  std::ifstream report(dir + "/out/r.html");
  std::stringstream html;
  html << report.rdbuf();
  EXPECT_NE(html.str().find("NOT SCORED"), std::string::npos);

  // The library: one record per input, the broken one an error without a verdict.
  ModelOptions o;
  o.model = kLite;
  Detector d(o);
  const References refs = d.build_references(std::vector<std::string>{tile("train/good/000.png"), tile("train/good/001.png")}, "tile");
  const auto recs = d.score(refs, {q + "/a.png", q + "/b.png"});
  ASSERT_EQ(recs.size(), 2u);
  EXPECT_TRUE(recs[0].ok());
  EXPECT_FALSE(recs[1].ok());
  EXPECT_FALSE(recs[1].anomalous().has_value());
  EXPECT_NE(recs[1].error.find("b.png"), std::string::npos) << recs[1].error;
}

TEST(FailSafe, FailOnAnomalousExitCode) {
  const std::string dir = test::temp_dir("failsafe-exit");
  const std::string set = dir + "/tiles.gadref";
  ASSERT_EQ(cli("refs build " + kLiteArgs + " --class tile " + tile("train/good") + " -o " + set).status, 0);
  ASSERT_EQ(cli("refs calibrate " + kLiteArgs + " --refs " + set + " --normals " + tile("validation/good") + " --far 0.1").status, 0);
  const auto r = cli("score " + kLiteArgs + " --refs " + set + " --fail-on-anomalous " + tile("test"));
  const auto lines = json_lines(r.out);
  bool any = false;
  for (const auto& j : lines) any = any || j.value("anomalous", false);
  EXPECT_EQ(r.status, any ? 4 : 0) << r.err;
  EXPECT_TRUE(any);  // the demo's defects are flagged
}

TEST(FailSafe, OutputsAreCheckedBeforeAnyWork) {
  const std::string dir = test::temp_dir("failsafe-out");
  std::ofstream(dir + "/file") << "x";
  const std::string base = "score " + kTiny_args + " --ref-images " + img("mt_break_348629.jpg") + " --class elpv " +
                           img("headct_195.png");
  for (const std::string bad : {" --csv " + dir + "/file/x.csv", " --maps " + dir + "/file", " --report " + dir})
    {
      const auto r = cli(base + bad);
      EXPECT_EQ(r.status, 1) << bad << r.err;
      EXPECT_TRUE(r.out.empty()) << bad;  // nothing scored
      EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    }
  const auto made = cli(base + " --csv " + dir + "/new/deeper/x.csv");  // parents are created
  EXPECT_EQ(made.status, 0) << made.err;
  EXPECT_TRUE(fs::exists(dir + "/new/deeper/x.csv"));
}

TEST(FailSafe, InterruptedRunWritesCompleteOutputs) {
  const std::string dir = test::temp_dir("failsafe-sigint");
  fs::create_directories(dir + "/q");
  for (int i = 0; i < 300; ++i) fs::copy_file(img("headct_195.png"), dir + "/q/" + std::to_string(1000 + i) + ".png");
  // Start a long run, wait for its first result, then SIGINT it.
  const std::string script =
      std::string(GAD_CLI) + " score " + kTiny_args + " --ref-images " + img("mt_break_348629.jpg") + " --class elpv --batch 1 " +
      dir + "/q --csv " + dir + "/s.csv > " + dir + "/out.jsonl 2> " + dir + "/err.txt & pid=$!; "
      "for i in $(seq 600); do [ -s " + dir + "/out.jsonl ] && break; sleep 0.1; done; kill -INT $pid; wait $pid; echo rc=$?";
  FILE* p = popen(("bash -c " + test::shell_quote(script)).c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[256] = {0};
  std::string out;
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  pclose(p);
  EXPECT_NE(out.find("rc=130"), std::string::npos) << out << read_file_text(dir + "/err.txt");
  const auto rows = test::python_csv_rows(dir + "/s.csv");
  ASSERT_EQ(rows.size(), 301u);  // every image has a row: scored, or "interrupted"
  size_t scored = 0, interrupted = 0;
  for (size_t i = 1; i < rows.size(); ++i) {
    if (rows[i].back().empty()) ++scored;
    if (rows[i].back().find("interrupted") != std::string::npos) ++interrupted;
  }
  EXPECT_GE(scored, 1u);
  EXPECT_GE(interrupted, 1u);
  EXPECT_EQ(scored + interrupted, 300u);
  EXPECT_NE(read_file_text(dir + "/err.txt").find("interrupted"), std::string::npos);
}

TEST(FailSafe, ListOptionsNeverSwallowPositionals) {
  const std::string dir = test::temp_dir("failsafe-lists");
  auto r = cli("score " + kTiny_args + " --ref-images " + img("mt_break_348629.jpg") + "," + img("cifar_cat_0000.jpg") +
               " --class elpv " + img("headct_195.png"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(json_lines(r.out).size(), 1u);
  EXPECT_NE(r.err.find("K = 2"), std::string::npos) << r.err;
  // Two taps then the reference folder: the folder stays a positional.
  r = cli("refs build " + kLiteArgs + " --class t -o " + dir + "/s.gadref --lite-taps block_12_add,block_5_add " +
          tile("train/good"));
  ASSERT_EQ(r.status, 0) << r.err;
  // The set's taps are used without repeating them, and equal scoring with them given.
  const auto implicit = cli("score " + kLiteArgs + " --refs " + dir + "/s.gadref " + tile("test/good/000.png"));
  const auto explicit_taps = cli("score " + kLiteArgs + " --lite-taps block_12_add,block_5_add --refs " + dir + "/s.gadref " +
                                 tile("test/good/000.png"));
  ASSERT_EQ(implicit.status, 0) << implicit.err;
  ASSERT_EQ(explicit_taps.status, 0) << explicit_taps.err;
  EXPECT_EQ(json_lines(implicit.out)[0]["score"], json_lines(explicit_taps.out)[0]["score"]);
  const auto show = cli("refs show " + dir + "/s.gadref");
  EXPECT_NE(show.out.find("taps: block_12_add,block_5_add"), std::string::npos) << show.out;
}

TEST(FailSafe, TwoTapDumpWritesEachTapOnItsGrid) {
  const std::string dir = test::temp_dir("failsafe-dump");
  const auto r = cli("inspect " + kLiteArgs + " --lite-taps=block_12_add,block_5_add --dump " + dir + "/d.safetensors -- " +
                     tile("test/good/000.png"));
  ASSERT_EQ(r.status, 0) << r.err;
  const auto t = test::load_tensors(dir + "/d.safetensors");
  ASSERT_TRUE(t.count("0.tap.0") && t.count("0.tap.1"));
  EXPECT_EQ(t.at("0.tap.0").sizes(), (at::IntArrayRef{196, 96}));
  EXPECT_EQ(t.at("0.tap.1").sizes(), (at::IntArrayRef{784, 32}));
}

TEST(FailSafe, InputChecks) {
  const std::string dir = test::temp_dir("failsafe-inputs");
  const std::string set = tiny_set(dir);
  const std::string refs = " --ref-images " + img("mt_break_348629.jpg") + " --class elpv ";
  struct Case {
    std::string args, needle;
  } cases[] = {
      {"score " + kTiny_args + refs + "--k -1 " + img("headct_195.png"), "--k"},
      {"score " + kTiny_args + refs + "--maps " + dir + "/m --map-sigma 1e9 " + img("headct_195.png"), "--map-sigma"},
      {"score " + kTiny_args + refs + "--maps " + dir + "/m --map-sigma -3 " + img("headct_195.png"), "--map-sigma"},
      {"score " + kTiny_args + " --refs " + set + " --class x " + img("headct_195.png"), "--class"},
      {"score " + kTiny_args + " --refs " + set + " --k 2 " + img("headct_195.png"), "--k"},
      {"score " + kTiny_args + " --refs " + dir + " " + img("headct_195.png"), "is a directory"},
      {"refs build " + kTiny_args + " --class elpv " + img("headct_195.png") + " " + img("headct_195.png") + " -o " + dir +
           "/d.gadref", "same image"},
  };
  for (const auto& c : cases) {
    const auto r = cli(c.args);
    EXPECT_EQ(r.status, 1) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  }
}

// Overlays share one colour scale: anchored to the set's calibration normals when calibrated (an
// image's overlay does not depend on what else is in the run), else the run's range (a quiet
// image no longer looks as hot as a defect). Map files mirror the input folders.
TEST(FailSafe, MapsShareOneScaleAndMirrorFolders) {
  const std::string dir = test::temp_dir("failsafe-maps");
  fs::create_directories(dir + "/in/a");
  fs::create_directories(dir + "/in/b");
  fs::copy_file(tile("test/good/000.png"), dir + "/in/a/x.png");
  fs::copy_file(tile("test/good/000.png"), dir + "/in/b/x.png");
  const std::string quiet = tile("test/good/000.png");
  std::string hot;
  for (const auto& e : fs::directory_iterator(tile("test/defect")))
    if (hot.empty() || e.path().string() < hot) hot = e.path().string();
  ASSERT_TRUE(fs::exists(hot)) << hot;
  const std::string set = dir + "/tiles.gadref";
  ASSERT_EQ(cli("refs build " + kLiteArgs + " --class tile " + tile("train/good") + " -o " + set).status, 0);
  auto run = [&](const std::string& maps, const std::string& images, const std::string& extra = "") {
    // --batch 1: an image's map then does not depend on its batch mates, down to the last bit.
    const auto r = cli("score " + kLiteArgs + " --batch 1 --refs " + set + extra + " --maps " + dir + "/" + maps + " " + images);
    EXPECT_EQ(r.status, 0) << r.err;
    return r;
  };
  const auto mirrored = run("m0", dir + "/in");
  EXPECT_TRUE(fs::exists(dir + "/m0/a/x.png"));
  EXPECT_TRUE(fs::exists(dir + "/m0/b/x.png"));
  EXPECT_EQ(json_lines(mirrored.out).at(0)["map"], dir + "/m0/a/x.png");
  // Uncalibrated: the run's range, so the quiet image's overlay changes when a defect joins.
  run("m1", quiet);
  run("m2", quiet + " " + hot);
  EXPECT_TRUE(read_file_text(dir + "/m1/000.png") != read_file_text(dir + "/m2/000.png"));
  // Calibrated: the set's scale, the same overlay whatever else is scored.
  ASSERT_EQ(cli("refs calibrate " + kLiteArgs + " --refs " + set + " --normals " + tile("validation/good") + " --far 0.1").status, 0);
  run("m3", quiet);
  run("m4", quiet + " " + hot);
  EXPECT_TRUE(read_file_text(dir + "/m3/000.png") == read_file_text(dir + "/m4/000.png"));
  const auto show = cli("refs show " + set);
  EXPECT_NE(show.out.find("map top"), std::string::npos) << show.out;
}

}  // namespace
}  // namespace gad
