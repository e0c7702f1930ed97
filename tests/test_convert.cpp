// `gad data convert`: MVTec-layout converters on tiny synthetic sources (counts, portable seeded
// splits, clean errors), plus the shared ELPV sample.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <random>
#include <set>

#include "data/convert.h"
#include "data/fetch_data.h"
#include "data/synthetic_anomaly.h"
#include "image/image.h"
#include "util/error.h"

namespace fs = std::filesystem;

namespace gad::test {
std::string temp_dir(const std::string& name);  // tests/support.cpp (declared here to keep ATen out)
}

namespace {

using gad::test::temp_dir;

void write_text(const fs::path& p, const std::string& s) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << s;
}

// A small distinct PNG (value encodes `seed`), so copies can be told apart.
void write_png(const fs::path& p, int seed, int w = 8, int h = 8, int channels = 1) {
  fs::create_directories(p.parent_path());
  cv::Mat m(h, w, CV_8UC(channels), cv::Scalar::all(seed % 256));
  ASSERT_TRUE(cv::imwrite(p.string(), m));
}

// Every file under dir, as sorted relative paths.
std::vector<std::string> tree(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(e.path().lexically_relative(dir).generic_string());
  std::sort(out.begin(), out.end());
  return out;
}

size_t count_files(const fs::path& dir) {
  if (!fs::exists(dir)) return 0;
  size_t n = 0;
  for (auto& e : fs::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const gad::Error& e) {
    return e.what();
  }
  return "";
}

// ELPV source: n_normal prob-0 cells, mono/poly defects, and dropped 1/3, 2/3 ones. The files are
// created (and listed in labels.csv) in forward or reverse order.
void make_elpv(const fs::path& src, bool reverse, bool upstream_format) {
  struct Row {
    std::string file, prob, type;
  };
  std::vector<Row> rows;
  for (int i = 0; i < 10; ++i) rows.push_back({"images/cell" + std::to_string(100 + i) + ".png", "0.0", i % 2 ? "mono" : "poly"});
  for (int i = 0; i < 3; ++i) rows.push_back({"images/cell" + std::to_string(200 + i) + ".png", "1.0", "mono"});
  for (int i = 0; i < 2; ++i) rows.push_back({"images/cell" + std::to_string(300 + i) + ".png", "1.0", "poly"});
  rows.push_back({"images/cell400.png", "0.3333333333333333", "mono"});
  rows.push_back({"images/cell401.png", "0.6666666666666666", "poly"});
  if (reverse) std::reverse(rows.begin(), rows.end());
  std::string csv = upstream_format ? "" : "file,defect_probability,cell_type,ad_label\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    write_png(src / rows[i].file, static_cast<int>(i));
    csv += upstream_format ? rows[i].file + "  " + rows[i].prob + "  " + rows[i].type + "\n"
                           : rows[i].file + "," + rows[i].prob + "," + rows[i].type + ",0\n";
  }
  write_text(src / "labels.csv", csv);
}

TEST(Convert, SplitIsCeilQuarterAndSeeded) {
  EXPECT_EQ(gad::split_test_indices(100, 0.25, 42).size(), 25u);
  EXPECT_EQ(gad::split_test_indices(10, 0.25, 42).size(), 3u);  // ceil(2.5), as sklearn
  EXPECT_EQ(gad::split_test_indices(0, 0.25, 42).size(), 0u);
  EXPECT_EQ(gad::split_test_indices(10, 0.25, 42), gad::split_test_indices(10, 0.25, 42));
  EXPECT_NE(gad::split_test_indices(100, 0.25, 42), gad::split_test_indices(100, 0.25, 7));
  auto d = gad::draw_indices(5, 9, 1);
  EXPECT_EQ(d, (std::vector<size_t>{0, 1, 2, 3, 4}));
}

TEST(Convert, ElpvCountsAndPortableSplit) {
  const fs::path root = temp_dir("convert-elpv");
  make_elpv(root / "src_a", false, false);
  make_elpv(root / "src_b", true, true);  // reverse creation order, upstream whitespace format
  auto a = gad::convert_dataset("elpv", (root / "src_a").string(), (root / "out_a").string());
  auto a2 = gad::convert_dataset("elpv", (root / "src_a").string(), (root / "out_a2").string());
  auto b = gad::convert_dataset("elpv", (root / "src_b").string(), (root / "out_b").string());
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].category, "elpv");
  EXPECT_EQ(a[0].train_good, 7u);
  EXPECT_EQ(a[0].test_good, 3u);
  EXPECT_EQ(a[0].test_defects.at("mono"), 3u);
  EXPECT_EQ(a[0].test_defects.at("poly"), 2u);
  EXPECT_EQ(a[0].dropped, 2u);
  EXPECT_EQ(a[0].summary(), "elpv: train/good 7, test/good 3, test/mono 3, test/poly 2 (2 dropped)");
  EXPECT_EQ(count_files(root / "out_a/elpv/train/good"), 7u);
  EXPECT_EQ(tree(root / "out_a"), tree(root / "out_a2"));
  EXPECT_EQ(tree(root / "out_a"), tree(root / "out_b"));
  // No temporary directory is left in DST.
  for (auto& e : fs::directory_iterator(root / "out_a")) EXPECT_EQ(e.path().filename(), "elpv");
  // A different seed changes the split but not the counts.
  gad::ConvertOptions o;
  o.seed = 1;
  auto c = gad::convert_dataset("elpv", (root / "src_a").string(), (root / "out_c").string(), o);
  EXPECT_EQ(c[0].test_good, 3u);
  EXPECT_NE(tree(root / "out_a"), tree(root / "out_c"));
  // An existing category is never overwritten.
  std::string err = error_of([&] { gad::convert_dataset("elpv", (root / "src_a").string(), (root / "out_a").string()); });
  EXPECT_NE(err.find("already exists"), std::string::npos) << err;
  EXPECT_EQ(tree(root / "out_a"), tree(root / "out_a2"));
  fs::remove_all(root);
}

TEST(Convert, ElpvMalformedLabelsNameFileAndLine) {
  const fs::path root = temp_dir("convert-elpv-bad");
  make_elpv(root / "src", false, false);
  std::string csv = "file,defect_probability,cell_type\nimages/cell100.png,0.0,mono\nimages/cell101.png,x,mono\n";
  write_text(root / "src/labels.csv", csv);
  std::string err = error_of([&] { gad::convert_dataset("elpv", (root / "src").string(), (root / "out").string()); });
  EXPECT_NE(err.find("labels.csv:3: bad defect probability 'x'"), std::string::npos) << err;
  // Nothing is left behind in DST.
  EXPECT_FALSE(fs::exists(root / "out"));
  write_text(root / "src/labels.csv", "file,defect_probability,cell_type\nimages/cell100.png,0.5,mono\n");
  err = error_of([&] { gad::convert_dataset("elpv", (root / "src").string(), (root / "out").string()); });
  EXPECT_NE(err.find("labels.csv:2: bad defect probability '0.5'"), std::string::npos) << err;
  write_text(root / "src/labels.csv", "file,defect_probability,cell_type\nimages/nope.png,0.0,mono\n");
  err = error_of([&] { gad::convert_dataset("elpv", (root / "src").string(), (root / "out").string()); });
  EXPECT_NE(err.find("labels.csv:2: no such image 'images/nope.png'"), std::string::npos) << err;
  write_text(root / "src/labels.csv", "file,defect_probability,cell_type\nimages/cell100.png,0.0,thin\n");
  err = error_of([&] { gad::convert_dataset("elpv", (root / "src").string(), (root / "out").string()); });
  EXPECT_NE(err.find("labels.csv:2: bad cell type 'thin'"), std::string::npos) << err;
  fs::remove_all(root);
}

TEST(Convert, HeadCt) {
  const fs::path root = temp_dir("convert-headct");
  std::string csv = "id, hemorrhage\n";
  for (int i = 0; i < 12; ++i) {
    char name[16];
    std::snprintf(name, sizeof name, "%03d.png", i);
    write_png(root / "src/head_ct/head_ct" / name, i);
    csv += std::to_string(i) + ", " + (i < 8 ? "0" : "1") + "\n";
  }
  write_text(root / "src/labels.csv", csv);
  auto r = gad::convert_dataset("headct", (root / "src").string(), (root / "out").string());
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].category, "headct");
  EXPECT_EQ(r[0].train_good, 6u);
  EXPECT_EQ(r[0].test_good, 2u);
  EXPECT_EQ(r[0].test_defects.at("defect"), 4u);
  EXPECT_TRUE(fs::exists(root / "out/headct/test/defect/011.png"));
  write_text(root / "src/labels.csv", "id,hemorrhage\n0,0\n1,2\n");
  std::string err = error_of([&] { gad::convert_dataset("headct", (root / "src").string(), (root / "out2").string()); });
  EXPECT_NE(err.find("labels.csv:3: bad label '2'"), std::string::npos) << err;
  fs::remove_all(root);
}

TEST(Convert, BrainMriAndFolderAreOrderIndependent) {
  const fs::path root = temp_dir("convert-brain");
  for (int pass = 0; pass < 2; ++pass) {
    const fs::path src = root / ("src" + std::to_string(pass));
    for (int k = 0; k < 9; ++k) {
      const int i = pass ? 8 - k : k;
      write_png(src / "no" / ("N" + std::to_string(i) + ".jpg"), i);
      if (i < 5) write_png(src / "yes" / ("Y" + std::to_string(i) + ".jpg"), 100 + i);
    }
    auto r = gad::convert_dataset("brainmri", src.string(), (root / ("out" + std::to_string(pass))).string());
    EXPECT_EQ(r[0].summary(), "brainmri: train/good 6, test/good 3, test/defect 5");
  }
  EXPECT_EQ(tree(root / "out0"), tree(root / "out1"));
  // folder: the same files through --normal / --anomalous, with a category name.
  gad::ConvertOptions o;
  o.normal_dir = "no";
  o.anomalous_dirs = {(root / "src0/yes").string()};  // absolute works too
  o.defect_name = "defect";
  o.category = "tumour";
  auto f = gad::convert_dataset("folder", (root / "src0").string(), (root / "outf").string(), o);
  EXPECT_EQ(f[0].summary(), "tumour: train/good 6, test/good 3, test/defect 5");
  // Magnetic-tile style masks next to the images are left out of the images and carried to ground_truth.
  write_png(root / "src0/yes/Y0_mask.png", 255);
  write_png(root / "src0/no/N0_mask.png", 255);
  o.category = "masked";
  f = gad::convert_dataset("folder", (root / "src0").string(), (root / "outf").string(), o);
  EXPECT_EQ(f[0].summary(), "masked: train/good 6, test/good 3, test/defect 5");
  EXPECT_EQ(tree(root / "outf/masked/ground_truth"), std::vector<std::string>{"defect/Y0_mask.png"});
  // Same split as brainmri (same sorted normals, same seed) up to the category name.
  std::vector<std::string> a = tree(root / "out0/brainmri"), b = tree(root / "outf/tumour");
  EXPECT_EQ(a, b);
  // Several anomalous directories: each keeps its own name under test/.
  write_png(root / "src0/more/M0.jpg", 7);
  gad::ConvertOptions multi;
  multi.normal_dir = "no";
  multi.anomalous_dirs = {"yes", "more"};
  multi.category = "multi";
  f = gad::convert_dataset("folder", (root / "src0").string(), (root / "outf").string(), multi);
  EXPECT_EQ(f[0].summary(), "multi: train/good 6, test/good 3, test/more 1, test/yes 5");
  std::string err = error_of([&] { gad::convert_dataset("brainmri", (root / "nope").string(), (root / "o").string()); });
  EXPECT_NE(err.find("no such directory"), std::string::npos) << err;
  fs::create_directories(root / "bad/no");
  err = error_of([&] { gad::convert_dataset("brainmri", (root / "bad").string(), (root / "o").string()); });
  EXPECT_NE(err.find("yes: no such directory"), std::string::npos) << err;
  fs::remove_all(root);
}

// IDX writers for the MNIST tests.
void put32(std::string& s, uint32_t v) {
  for (int sh = 24; sh >= 0; sh -= 8) s.push_back(static_cast<char>(v >> sh & 0xff));
}
void write_idx(const fs::path& dir, const std::string& prefix, const std::vector<int>& labels, bool gz) {
  std::string img, lab;
  put32(img, 0x803), put32(img, static_cast<uint32_t>(labels.size())), put32(img, 4), put32(img, 3);
  put32(lab, 0x801), put32(lab, static_cast<uint32_t>(labels.size()));
  for (size_t i = 0; i < labels.size(); ++i) {
    for (int p = 0; p < 12; ++p) img.push_back(static_cast<char>(i * 7 + p));
    lab.push_back(static_cast<char>(labels[i]));
  }
  auto put = [&](const std::string& name, const std::string& data) {
    fs::create_directories(dir);
    if (!gz) return write_text(dir / name, data);
    gzFile f = gzopen((dir / (name + ".gz")).string().c_str(), "wb");
    gzwrite(f, data.data(), static_cast<unsigned>(data.size()));
    gzclose(f);
  };
  put(prefix + "-images-idx3-ubyte", img);
  put(prefix + "-labels-idx1-ubyte", lab);
}

TEST(Convert, MnistProtocols) {
  const fs::path root = temp_dir("convert-mnist");
  std::vector<int> train, test;
  for (int i = 0; i < 40; ++i) train.push_back(i % 10);
  for (int i = 0; i < 20; ++i) test.push_back((i * 3) % 10);
  write_idx(root / "raw", "train", train, false);
  write_idx(root / "raw", "t10k", test, true);  // gzip is read transparently
  gad::ConvertOptions o;
  o.protocol = "one-vs-all";
  o.normal_class = "3";
  auto r = gad::convert_dataset("mnist", (root / "raw").string(), (root / "out").string(), o);
  EXPECT_EQ(r[0].summary(), "mnist_3: train/good 4, test/good 2, test/anomaly 18");
  cv::Mat m = cv::imread((root / "out/mnist_3/train/good/train_00003.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.rows, 4);
  EXPECT_EQ(m.cols, 3);
  EXPECT_EQ(m.channels(), 1);
  EXPECT_EQ(m.at<uint8_t>(1, 2), 3 * 7 + 5);
  o.protocol = "multiclass";
  r = gad::convert_dataset("fashion-mnist", (root / "raw").string(), (root / "out").string(), o);
  EXPECT_EQ(r[0].summary(), "fashion_mnist_even: train/good 20, test/good 10, test/anomaly 10");
  o.limit = 3;
  r = gad::convert_dataset("mnist", (root / "raw").string(), (root / "lim1").string(), o);
  EXPECT_EQ(r[0].summary(), "mnist_even: train/good 3, test/good 3, test/anomaly 3");
  gad::convert_dataset("mnist", (root / "raw").string(), (root / "lim2").string(), o);
  EXPECT_EQ(tree(root / "lim1"), tree(root / "lim2"));
  // Errors.
  o.protocol = "";
  std::string err = error_of([&] { gad::convert_dataset("mnist", (root / "raw").string(), (root / "x").string(), o); });
  EXPECT_NE(err.find("--protocol"), std::string::npos) << err;
  write_text(root / "raw/train-labels-idx1-ubyte", std::string("\0\0\x08\x02\0\0\0\0", 8));
  o.protocol = "multiclass";
  err = error_of([&] { gad::convert_dataset("mnist", (root / "raw").string(), (root / "x").string(), o); });
  EXPECT_NE(err.find("train-labels-idx1-ubyte: not an IDX label file"), std::string::npos) << err;
  err = error_of([&] { gad::convert_dataset("mnist", root.string(), (root / "x").string(), o); });
  EXPECT_NE(err.find("no train-images-idx3-ubyte"), std::string::npos) << err;
  fs::remove_all(root);
}

TEST(Convert, Cifar10Protocols) {
  const fs::path root = temp_dir("convert-cifar");
  const std::vector<std::string> classes = {"airplane", "automobile", "bird", "cat", "deer",
                                            "dog",      "frog",       "horse", "ship", "truck"};
  for (size_t c = 0; c < classes.size(); ++c)
    for (int i = 0; i < 3; ++i) {
      write_png(root / "src/train" / classes[c] / (std::to_string(i) + ".png"), static_cast<int>(c * 10 + i), 4, 4, 3);
      if (i < 2) write_png(root / "src/test" / classes[c] / (std::to_string(i) + ".png"), static_cast<int>(c * 10 + i), 4, 4, 3);
    }
  gad::ConvertOptions o;
  o.protocol = "one-vs-all";
  o.normal_class = "3";  // cat
  auto r = gad::convert_dataset("cifar10", (root / "src").string(), (root / "out").string(), o);
  EXPECT_EQ(r[0].summary(), "cat: train/good 3, test/good 2, test/anomaly 18");
  EXPECT_TRUE(fs::exists(root / "out/cat/test/anomaly/truck_1.png"));
  o.protocol = "animal-vs-vehicle";
  r = gad::convert_dataset("cifar10", (root / "src").string(), (root / "out").string(), o);
  EXPECT_EQ(r[0].summary(), "animal: train/good 18, test/good 12, test/anomaly 8");
  o.protocol = "one-vs-all";
  o.normal_class = "unicorn";
  std::string err = error_of([&] { gad::convert_dataset("cifar10", (root / "src").string(), (root / "x").string(), o); });
  EXPECT_NE(err.find("no class folder 'unicorn'"), std::string::npos) << err;
  fs::remove_all(root);
}

TEST(Convert, VisaSddAitex) {
  const fs::path root = temp_dir("convert-misc");
  // VisA: split_csv/1cls.csv with masks (binarised to 0/255).
  std::string csv = "object,split,label,image,mask\n";
  for (int i = 0; i < 4; ++i) {
    const std::string n = "candle/Data/Images/Normal/000" + std::to_string(i) + ".JPG";
    write_png(root / "visa" / n, i);  // a JPEG
    csv += "candle," + std::string(i < 3 ? "train" : "test") + ",normal," + n + ",\n";
  }
  write_png(root / "visa/candle/Data/Images/Anomaly/000.png", 9);
  write_png(root / "visa/candle/Data/Masks/Anomaly/000.png", 1);
  csv += "candle,test,anomaly,candle/Data/Images/Anomaly/000.png,candle/Data/Masks/Anomaly/000.png\n";
  write_text(root / "visa/split_csv/1cls.csv", csv);
  auto r = gad::convert_dataset("visa", (root / "visa").string(), (root / "out").string());
  EXPECT_EQ(r[0].summary(), "candle: train/good 3, test/good 1, test/defect 1");
  cv::Mat m = cv::imread((root / "out/candle/ground_truth/defect/000_mask.png").string(), cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.at<uint8_t>(0, 0), 255);
  // SDD: 3 bands per image; a band with any label pixel is a defect.
  for (int k = 0; k < 4; ++k) {
    const fs::path d = root / "sdd" / ("kos0" + std::to_string(k));
    cv::Mat img(9, 4, CV_8UC1, cv::Scalar(50 + k)), lab(9, 4, CV_8UC1, cv::Scalar(0));
    if (k == 0) lab.at<uint8_t>(4, 1) = 255;  // middle band of the first image
    fs::create_directories(d);
    ASSERT_TRUE(cv::imwrite((d / "Part0.jpg").string(), img));
    cv::imwrite((d / "Part0_label.bmp").string(), lab);
  }
  r = gad::convert_dataset("sdd", (root / "sdd").string(), (root / "out").string());
  EXPECT_EQ(r[0].summary(), "SDD: train/good 8, test/good 3, test/defect 1");
  EXPECT_TRUE(fs::exists(root / "out/SDD/test/defect/kos00_Part0_1.png"));
  // AITEX: defect-free 4:1 images → 4 tiles; defect tiles kept when their mask is nonzero.
  write_png(root / "aitex/NODefect_images/2311694-2040n7u/0001_000_05.png", 1, 16, 4);
  write_png(root / "aitex/NODefect_images/2311694-2040n7u/0002_000_05.png", 2, 16, 4);
  write_png(root / "aitex/Defect_images/0044_019_04.png", 3, 16, 4);
  cv::Mat mask(4, 16, CV_8UC1, cv::Scalar(0));
  mask.at<uint8_t>(2, 13) = 255;
  fs::create_directories(root / "aitex/Mask_images");
  ASSERT_TRUE(cv::imwrite((root / "aitex/Mask_images/0044_019_04_mask.png").string(), mask));
  write_png(root / "aitex/Defect_images/0045_002_04.png", 3, 16, 4);  // no mask: skipped
  r = gad::convert_dataset("aitex", (root / "aitex").string(), (root / "out").string());
  EXPECT_EQ(r[0].summary(), "AITEX: train/good 6, test/good 2, test/Fuzzyball 1 (1 dropped)");
  EXPECT_TRUE(fs::exists(root / "out/AITEX/test/Fuzzyball/0044_019_04_3.png"));
  fs::remove_all(root);
}

TEST(Convert, ElpvSharedSample) {
  const std::string src = std::string(GAD_SHARED_DIR) + "/data/elpv_sample";
  if (!fs::exists(src + "/labels.csv")) GTEST_SKIP() << "no " << src;
  const fs::path root = temp_dir("convert-elpv-sample");
  auto r = gad::convert_dataset("elpv", src, (root / "out").string());
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].summary(), "elpv: train/good 75, test/good 25, test/mono 50, test/poly 50");
  fs::remove_all(root);
}

TEST(Convert, UnknownKindAndFashionMnistHint) {
  std::string err = error_of([] { gad::convert_dataset("imagenet", "/tmp", "/tmp/x"); });
  EXPECT_NE(err.find("unknown kind 'imagenet'"), std::string::npos) << err;
  gad::DataFetchOptions o;
  o.fashion_mnist_dir = "/nonexistent/fashion-mnist";
  err = error_of([&] { gad::fetch_fashion_mnist(o); });
  EXPECT_NE(err.find("apt-get install dataset-fashion-mnist"), std::string::npos) << err;
}

// A textured gray image (so every kind has something to change and something to copy).
gad::Image texture(int w, int h, int seed) {
  gad::Image img{w, h, 1, std::vector<uint8_t>(static_cast<size_t>(w) * h)};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) img.pixels[y * w + x] = static_cast<uint8_t>(100 + ((x / 4 + y / 4 + seed) % 2) * 40);
  return img;
}

// Each kind changes a masked region visibly, leaves the far field alone, and is seeded.
TEST(Synthetic, AnomaliesAreVisibleMaskedAndSeeded) {
  const gad::Image normal = texture(96, 64, 0), donor = texture(96, 64, 1);
  for (const auto& kind : gad::synthetic_kinds()) {
    for (uint64_t seed = 0; seed < 5; ++seed) {
      std::mt19937_64 a(seed), b(seed);
      auto x = gad::make_synthetic_anomaly(normal, donor, kind, a), y = gad::make_synthetic_anomaly(normal, donor, kind, b);
      EXPECT_EQ(x.image.pixels, y.image.pixels) << kind;
      ASSERT_EQ(x.mask.size(), normal.pixels.size());
      double inside = 0;
      size_t n_in = 0, changed_far = 0, n_far = 0;
      cv::Mat mask(64, 96, CV_8UC1, x.mask.data()), near;
      cv::dilate(mask, near, cv::Mat::ones(31, 31, CV_8UC1));  // blob edges are soft (blurred)
      for (size_t i = 0; i < x.mask.size(); ++i) {
        const int d = std::abs(int(x.image.pixels[i]) - int(normal.pixels[i]));
        if (x.mask[i]) {
          inside += d;
          ++n_in;
        } else if (!near.data[i]) {
          ++n_far;
          changed_far += d > 0;
        }
      }
      ASSERT_GT(n_in, 0u) << kind;
      EXPECT_GE(inside / n_in, 12.0) << kind << " seed " << seed;
      EXPECT_EQ(changed_far, 0u) << kind << " seed " << seed << " of " << n_far;
    }
  }
  std::string err = error_of([&] {
    std::mt19937_64 r(0);
    gad::make_synthetic_anomaly(normal, donor, "rust", r);
  });
  EXPECT_NE(err.find("unknown kind 'rust'"), std::string::npos) << err;
}

TEST(Convert, SyntheticKeepsFilesAndAddsMaskedAnomalies) {
  const fs::path root = temp_dir("convert-synthetic");
  for (int i = 0; i < 6; ++i) write_png(root / "src/tile/train/good" / ("n" + std::to_string(i) + ".png"), 10 * i, 32, 32);
  write_png(root / "src/tile/test/good/g.png", 3, 32, 32);
  write_png(root / "src/tile/test/crack/c.png", 250, 32, 32);
  gad::ConvertOptions o;
  o.synthetic_count = 4;
  auto r = gad::convert_dataset("synthetic", (root / "src").string(), (root / "a").string(), o);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].summary(), "tile: train/good 6, test/good 1, test/crack 1, test/synthetic_blob 4, "
                            "test/synthetic_cutpaste 4, test/synthetic_scratch 4");
  EXPECT_EQ(count_files(root / "a/tile/ground_truth/synthetic_scratch"), 4u);
  gad::convert_dataset("synthetic", (root / "src").string(), (root / "b").string(), o);
  EXPECT_EQ(tree(root / "a"), tree(root / "b"));
  std::ifstream f1(root / "a/tile/test/synthetic_blob/blob_00002.png", std::ios::binary), f2(root / "b/tile/test/synthetic_blob/blob_00002.png", std::ios::binary);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(f1), {}), std::string(std::istreambuf_iterator<char>(f2), {}));
  fs::remove_all(root);
}

TEST(Convert, MosaicTilesNormalsAndMasksOneAnomalousTile) {
  const fs::path root = temp_dir("convert-mosaic");
  for (int i = 0; i < 4; ++i) write_png(root / "src/digit/train/good" / ("n" + std::to_string(i) + ".png"), 10 + i, 8, 6);
  write_png(root / "src/digit/test/good/g.png", 20, 8, 6);
  write_png(root / "src/digit/test/other/o.png", 250, 8, 6);
  gad::ConvertOptions o;
  o.synthetic_count = 4;
  o.mosaic_tiles = 2;
  auto r = gad::convert_dataset("mosaic", (root / "src").string(), (root / "out").string(), o);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].summary(), "digit: train/good 4, test/good 1, test/tile 4");
  for (int i = 0; i < 4; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "%05d", i);
    cv::Mat img = cv::imread((root / "out/digit/test/tile" / (std::string(name) + ".png")).string(), cv::IMREAD_UNCHANGED);
    cv::Mat mask = cv::imread((root / "out/digit/ground_truth/tile" / (std::string(name) + "_mask.png")).string(), cv::IMREAD_UNCHANGED);
    ASSERT_EQ(img.cols, 16);
    ASSERT_EQ(img.rows, 12);
    EXPECT_EQ(cv::countNonZero(mask), 8 * 6);                 // exactly one tile
    EXPECT_EQ(cv::countNonZero(img == 250), 8 * 6);           // and it is the anomalous image
    EXPECT_EQ(cv::countNonZero((img == 250) != (mask == 255)), 0);
  }
  write_png(root / "src/digit/train/good/big.png", 1, 9, 6);
  std::string err = error_of([&] { gad::convert_dataset("mosaic", (root / "src").string(), (root / "out2").string(), o); });
  EXPECT_NE(err.find(": mosaic tiles must all be "), std::string::npos) << err;
  EXPECT_FALSE(fs::exists(root / "out2/digit"));
  fs::remove_all(root);
}

}  // namespace
