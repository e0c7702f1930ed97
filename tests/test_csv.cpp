// CSV (util/csv.h) and every CSV gad writes, read back by Python's csv module: names with ',',
// '"', spaces, line breaks and non-ASCII stay one field, absent values are empty cells, and
// label CSVs written by Python are read with the same rules.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "benchmark/benchmark.h"
#include "support.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

namespace fs = std::filesystem;

const std::string kLiteModel = test::shared("fixtures/lite/mobilenet_v2/model.json");
const std::vector<std::string> kNasty = {
    "plain", "a,b \"q\".png", "Part, rev B/x.png", " leading and trailing ", "\xC3\xBCn\xC3\xAF c\xC3\xB6" "d\xC3\xA9 \xE6\xA4\x9C.png",
    "two\nlines", "cr\rlf\r\n", "\"", "", "'single'"};

using test::error_of;

TEST(Csv, QuotesOnlyFieldsThatNeedIt) {
  EXPECT_EQ(csv_field("a b.png"), "a b.png");
  EXPECT_EQ(csv_field("a,b \"q\".png"), "\"a,b \"\"q\"\".png\"");
  EXPECT_EQ(csv_field("x\ny"), "\"x\ny\"");
  EXPECT_EQ(csv_field("x\ry"), "\"x\ry\"");
  EXPECT_EQ(csv_number(0.5), "0.5");
  EXPECT_EQ(csv_number(std::nullopt), "");
  EXPECT_EQ(csv_number(1.0 / 3, "%.3f"), "0.333");
  CsvTable t({"a", "b"});
  t.add_row({"1", ""});
  EXPECT_EQ(t.text(), "a,b\n1,\n");
  EXPECT_NE(error_of([&] { t.add_row({"1", "2", "3"}); }).find("3 fields under a 2-column header"), std::string::npos);
}

TEST(Csv, ParsesQuotedFieldsLineBreaksCrlfAndBom) {
  const auto rows = parse_csv("\xEF\xBB\xBFpath,label\r\n\"a,b \"\"q\"\"\",1\r\n\r\n\"two\nlines\",0\nlast,\n", "l.csv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].fields, (std::vector<std::string>{"path", "label"}));
  EXPECT_EQ(rows[1].fields, (std::vector<std::string>{"a,b \"q\"", "1"}));
  EXPECT_EQ(rows[2].fields, (std::vector<std::string>{"two\nlines", "0"}));
  EXPECT_EQ(rows[3].fields, (std::vector<std::string>{"last", ""}));
  EXPECT_EQ(rows[1].line, 2u);
  EXPECT_EQ(rows[2].line, 4u);  // after a blank line
  EXPECT_EQ(rows[3].line, 6u);  // the quoted line break counts
  EXPECT_EQ(parse_csv("a\"b,c", "x")[0].fields, (std::vector<std::string>{"a\"b", "c"}));  // as Python reads it
  EXPECT_TRUE(parse_csv("", "x").empty());
}

TEST(Csv, BadQuotingIsAnErrorNamingFileAndLine) {
  EXPECT_EQ(error_of([] { parse_csv("a,b\n\"open,1\n2\n", "l.csv"); }), "l.csv:2: unterminated quoted field");
  EXPECT_NE(error_of([] { parse_csv("a\n\"x\"y,1\n", "l.csv"); }).find("l.csv:2: text after a closing quote"),
            std::string::npos);
  const std::string dir = test::temp_dir("csv-empty");
  std::ofstream(dir + "/e.csv") << "\n\n";
  EXPECT_EQ(error_of([&] { read_csv_file(dir + "/e.csv"); }), dir + "/e.csv: empty file");
}

TEST(Csv, PythonReadsWhatGadWritesAndGadReadsWhatPythonWrites) {
  const std::string dir = test::temp_dir("csv-roundtrip");
  CsvTable t({"name", "value"});
  for (size_t i = 0; i < kNasty.size(); ++i) t.add_row({kNasty[i], std::to_string(i)});
  write_file_atomically(dir + "/gad.csv", [&](std::FILE* f) { std::fputs(t.text().c_str(), f); });
  const auto rows = test::python_csv_rows(dir + "/gad.csv");
  ASSERT_EQ(rows.size(), kNasty.size() + 1);
  for (size_t i = 0; i < kNasty.size(); ++i)
    EXPECT_EQ(rows[i + 1], (std::vector<std::string>{kNasty[i], std::to_string(i)})) << i;

  // Python's writer (CRLF records, minimal quoting) read by gad.
  nlohmann::json names = kNasty;
  std::ofstream(dir + "/names.json") << names.dump();
  const std::string py = "import csv, json, sys\n"
                         "names = json.load(open(sys.argv[1], encoding='utf-8'))\n"
                         "with open(sys.argv[2], 'w', newline='', encoding='utf-8') as f:\n"
                         "    csv.writer(f).writerows([[n, i] for i, n in enumerate(names)])\n";
  std::ofstream(dir + "/write.py") << py;
  ASSERT_EQ(std::system(("/usr/bin/python3 " + dir + "/write.py " + dir + "/names.json " + dir + "/py.csv").c_str()), 0);
  const auto back = read_csv_file(dir + "/py.csv");
  ASSERT_EQ(back.size(), kNasty.size());
  for (size_t i = 0; i < kNasty.size(); ++i)
    EXPECT_EQ(back[i].fields, (std::vector<std::string>{kNasty[i], std::to_string(i)})) << i;
}

TEST(Csv, ScoreCsvAndLabelsFromTheCliWithNamesThatNeedQuoting) {
  const std::string dir = test::temp_dir("csv-score");
  const std::string images = dir + "/Part, rev B \"7\" \xC3\xBC";
  const std::string normal = images + "/n 1,\xC3\xBC.png", defect = images + "/a,b \"q\" \xE6\xA4\x9C.png";
  fs::create_directories(images);
  fs::copy_file("examples/tiles/test/good/000.png", normal);
  fs::copy_file("examples/tiles/test/defect/001_spot.png", defect);
  const std::string model = "--model " + kLiteModel, refs = test::shell_quote(dir + "/r.gadref");
  ASSERT_EQ(test::run_cli("refs build " + model + " --class tile examples/tiles/train/good -o " + refs).status, 0);

  // Without calibration: no "anomalous" column; a model without heads leaves s_img/s_text/s_hol empty.
  const std::string csv = dir + "/s.csv";
  test::CliResult r = test::run_cli("score " + model + " --refs " + refs + " " + test::shell_quote(images) + " --csv " +
                                    test::shell_quote(csv));
  ASSERT_EQ(r.status, 0) << r.err;
  auto rows = test::python_csv_rows(csv);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"path", "score", "s_patch", "s_img", "s_text", "s_hol", "ms", "map", "error"}));
  EXPECT_EQ(rows[1][0], defect);  // sorted: "a,b ..." before "n 1,..."
  EXPECT_EQ(rows[2][0], normal);
  std::istringstream lines(r.out);
  for (size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 9u) << i;
    std::string line;
    std::getline(lines, line);
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["path"], rows[i][0]);
    EXPECT_NEAR(std::stod(rows[i][1]), j["score"].get<double>(), 1e-8);  // %.9g vs the JSON's shortest form
    for (size_t c : {3, 4, 5}) EXPECT_EQ(rows[i][c], "") << rows[0][c] << " is absent for this model";
  }

  // Calibrated, with labels from a CSV that Python wrote (the folder names say nothing): the
  // "anomalous" column and the closing summary on stderr.
  r = test::run_cli("refs calibrate " + model + " --refs " + refs + " --normals examples/tiles/validation/good --far 0.1");
  ASSERT_EQ(r.status, 0) << r.err;
  std::ofstream(dir + "/labels.py") << "import csv, sys\n"
                                       "with open(sys.argv[1], 'w', newline='', encoding='utf-8') as f:\n"
                                       "    csv.writer(f).writerows([['path', 'label'], [sys.argv[2], 'normal'], "
                                       "[sys.argv[3], 'defect']])\n";
  const std::string labels = dir + "/labels, \"both\".csv";
  ASSERT_EQ(std::system(("/usr/bin/python3 " + dir + "/labels.py " + test::shell_quote(labels) + " " +
                         test::shell_quote(normal) + " " + test::shell_quote(defect)).c_str()), 0);
  r = test::run_cli("score " + model + " --refs " + refs + " " + test::shell_quote(images) + " --csv " +
                    test::shell_quote(csv) + " --labels " + test::shell_quote(labels));
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string& err = r.err;
  rows = test::python_csv_rows(csv);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0][6], "anomalous");
  EXPECT_EQ(rows[1][6], "true");   // the spot
  EXPECT_EQ(rows[2][6], "false");  // the normal tile
  EXPECT_NE(err.find("gad: 1 of 1 anomalous images flagged, 0 of 1 normal (score > "), std::string::npos) << err;
  EXPECT_NE(err.find("AUROC 1.000"), std::string::npos) << err;
  EXPECT_EQ(err.back(), '\n');
  EXPECT_EQ(err.find("missed"), std::string::npos) << err;
}

TEST(Csv, BenchCsvsWithCategoryAndDatasetNamesThatNeedQuoting) {
  const std::string dir = test::temp_dir("csv-bench");
  const std::string dataset = "Lot \"7\", \xC3\xBC", category = "tiles, rev B";
  const std::string root = dir + "/" + dataset;
  for (const char* part : {"train", "test"}) {
    fs::create_directories(root + "/" + category + "/" + part);
    fs::copy(std::string("examples/tiles/") + part, root + "/" + category + "/" + part, fs::copy_options::recursive);
  }
  BenchOptions o;
  o.files.model = kLiteModel;
  o.roots = {root};
  o.ks = {1};
  o.draws = 1;
  o.out_dir = dir + "/out";
  o.precision = "fp32";
  ASSERT_EQ(run_benchmark(o, nullptr), 1);
  const auto results = test::python_csv_rows(o.out_dir + "/results.csv");
  ASSERT_EQ(results.size(), 1u + 3);  // header + one row per scorer
  for (const auto& r : results) ASSERT_EQ(r.size(), results[0].size());
  EXPECT_EQ(results[0][0], "dataset");
  EXPECT_EQ(results[1][0], dataset);
  EXPECT_EQ(results[1][1], category);
  const auto scores = test::python_csv_rows(o.out_dir + "/scores.csv");
  ASSERT_EQ(scores.size(), 1u + 3 * 12);
  // One naming across gad's CSVs: results.csv and scores.csv both say scorer and k.
  EXPECT_EQ(scores[0], (std::vector<std::string>{"dataset", "category", "scorer", "k", "draw", "path", "label", "score"}));
  EXPECT_EQ(results[0][2], "scorer");
  EXPECT_EQ(results[0][3], "k");
  for (size_t i = 1; i < scores.size(); ++i) {
    ASSERT_EQ(scores[i].size(), 8u) << i;
    EXPECT_EQ(scores[i][0], dataset);
    EXPECT_EQ(scores[i][1], category);
    EXPECT_TRUE(fs::is_regular_file(scores[i][5])) << scores[i][5];  // the path column is the real file
  }
}

}  // namespace
}  // namespace gad
