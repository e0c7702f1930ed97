// The HTML report: labels from folders or a CSV, the thumbnail cap and threshold line, nothing
// fetched from outside, and a real headless-Chromium render that must run its ready script with no
// console error (fails, not skips, when chromium is missing: CI installs it from deps-apt.txt).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>

#include "image/image.h"
#include "maps/anomaly_map.h"
#include "report/html_report.h"
#include "report/thumbnails.h"
#include "support.h"
#include "util/error.h"
#include "util/fs.h"

namespace gad {
namespace {

size_t count(const std::string& s, const std::string& what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + 1)) ++n;
  return n;
}

TEST(Report, LabelsFromFoldersOrCsv) {
  EXPECT_EQ(report_labels({"d/cat/test/good/a.png", "d/cat/test/crack/b.png", "x/c.png", "test/good/e.png"}, ""),
            (std::vector<int>{0, 1, -1, 0}));
  std::string dir = test::temp_dir("report-labels");
  std::ofstream(dir + "/l.csv") << "path,label\nq/a.png,1\nb.png,normal\n";
  EXPECT_EQ(report_labels({"q/a.png", "other/b.png", "c.png"}, dir + "/l.csv"), (std::vector<int>{1, 0, -1}));
  std::ofstream(dir + "/bad.csv") << "path,label\nq/a.png,maybe\n";
  try {
    report_labels({"q/a.png"}, dir + "/bad.csv");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/bad.csv:2"), std::string::npos) << e.what();
  }
  // RFC 4180: a path with ',' or '"' is quoted; unquoted, it is a row with too many fields.
  std::ofstream(dir + "/q.csv") << "\"Part, rev B/a \"\"q\"\".png\",defect\r\n";
  EXPECT_EQ(report_labels({"Part, rev B/a \"q\".png"}, dir + "/q.csv"), (std::vector<int>{1}));
  std::ofstream(dir + "/unquoted.csv") << "path,label\nPart, rev B/a.png,1\n";
  try {
    report_labels({"q/a.png"}, dir + "/unquoted.csv");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/unquoted.csv:2: expected 2 fields (path,label), got 3 (quote paths"),
              std::string::npos)
        << e.what();
  }
}

HtmlReport sixty_images(std::optional<double> threshold) {
  HtmlReport r;
  r.title = "t <&>";
  r.thumbnails_each_end = 5;
  ReportSection s;
  s.title = "sec";
  for (int i = 0; i < 60; ++i) s.images.push_back({"img" + std::to_string(i) + ".png", i / 60.0, i >= 40 ? 1 : 0});
  s.threshold = threshold;
  r.sections.push_back(s);
  r.tables.push_back({"cap", {"a", "b"}, {{"1", "2"}}});
  return r;
}

TEST(Report, CapsThumbnailsAndDrawsTheThreshold) {
  int calls = 0;
  ThumbnailFn fake = [&](const ReportImage&, int) {
    ++calls;
    return std::string("\x89PNG", 4);
  };
  // Threshold among the shown top: 3 images score above 0.94 (57/60 = 0.95 and up).
  std::string html = render_html_report(sixty_images(0.94), fake);
  EXPECT_EQ(calls, 10);
  EXPECT_EQ(count(html, "<div class=\"card"), 10u);
  EXPECT_EQ(count(html, "data:image/png;base64,iVBORw=="), 10u);
  EXPECT_NE(html.find("50 images ranked 6–55 not shown"), std::string::npos);
  const size_t line = html.find("threshold 0.9400: 3 of 60 above");
  ASSERT_NE(line, std::string::npos);
  EXPECT_LT(html.find("#3 "), line);
  EXPECT_GT(html.find("#4 "), line);
  EXPECT_NE(html.find("AUROC 1.0000"), std::string::npos);  // labels known: anomalies score highest
  EXPECT_NE(html.find("t &lt;&amp;&gt;"), std::string::npos);
  // Threshold in the hidden middle: said in the gap line.
  html = render_html_report(sixty_images(0.5), fake);
  EXPECT_NE(html.find("falls after rank 29 (29 of 60 flagged anomalous)"), std::string::npos);
  // Self-contained: nothing is loaded from elsewhere (the SVG namespace URI is only a name).
  std::string stripped = std::regex_replace(html, std::regex("xmlns='http://www.w3.org/2000/svg'"), "");
  EXPECT_EQ(stripped.find("http"), std::string::npos);
  EXPECT_EQ(stripped.find("<link"), std::string::npos);
  EXPECT_EQ(stripped.find("@import"), std::string::npos);
  EXPECT_EQ(count(html, "<script"), 1u);
}

int run(const std::string& cmd) { return WEXITSTATUS(std::system(cmd.c_str())); }

TEST(Report, RendersInHeadlessChromiumWithoutErrors) {
  ASSERT_EQ(run("command -v chromium >/dev/null 2>&1"), 0) << "chromium is not installed (see scripts/deps-apt.txt)";
  std::string dir = test::temp_dir("report-chromium");
  Thumbnails thumbs;
  const std::string tile = "examples/tiles/test/defect/001_spot.png";
  Image image = decode_image(tile);
  CropGeometry g{image.width, image.height, 224, 224, 0, 0, 224};
  std::vector<float> grid(49, 0.1f);
  grid[24] = 0.9f;
  thumbs.add(tile, grid, 7, g);
  HtmlReport r = sixty_images(0.95);
  r.sections[0].images[59].path = tile;  // the top-scored image gets a real overlay
  std::string html = render_html_report(r, std::cref(thumbs));
  ASSERT_NE(html.find("data:image/png;base64,iVBOR"), std::string::npos);
  write_file_atomically(dir + "/r.html", [&](std::FILE* f) { std::fwrite(html.data(), 1, html.size(), f); });
  const std::string cmd = "timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking "
                          "--user-data-dir=" + dir + "/profile --enable-logging=stderr --v=0 --dump-dom " + dir +
                          "/r.html >" + dir + "/dom.html 2>" + dir + "/err.txt";
  ASSERT_EQ(run(cmd), 0) << read_file_text(dir + "/err.txt");
  const std::string dom = read_file_text(dir + "/dom.html"), err = read_file_text(dir + "/err.txt");
  EXPECT_NE(dom.find("data-ready=\"1\""), std::string::npos) << dom.substr(0, 300);
  EXPECT_EQ(err.find("Uncaught"), std::string::npos) << err;
  EXPECT_EQ(err.find(":CONSOLE"), std::string::npos) << err;  // any console line (errors log as INFO:CONSOLE)
  EXPECT_EQ(count(dom, "<svg"), 2u);  // the histogram and the ROC/PR pair
}

TEST(Report, ScoreReportFromTheCliAndBadLabelsLeaveNoFile) {
  std::string dir = test::temp_dir("report-cli");
  const std::string base = std::string(GAD_CLI) + " score --model " + test::shared("fixtures/lite/mobilenet_v2/model.json") +
                           " --ref-images examples/tiles/train/good --class tile examples/tiles/test";
  ASSERT_EQ(run(base + " --report " + dir + "/r.html >/dev/null 2>" + dir + "/err"), 0) << read_file_text(dir + "/err");
  const std::string html = read_file_text(dir + "/r.html");
  EXPECT_NE(html.find("AUROC "), std::string::npos);  // labels from test/good vs test/defect
  EXPECT_EQ(count(html, "<div class=\"card"), 12u);
  std::ofstream(dir + "/bad.csv") << "path,label\nexamples/tiles/test/good/000.png,2\n";
  EXPECT_NE(run(base + " --report " + dir + "/r2.html --labels " + dir + "/bad.csv >/dev/null 2>" + dir + "/err"), 0);
  const std::string err = read_file_text(dir + "/err");
  EXPECT_NE(err.find("gad: error: " + dir + "/bad.csv:2: label '2'"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(dir + "/r2.html"));
}

}  // namespace
}  // namespace gad
