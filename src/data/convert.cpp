#include "data/convert.h"

#include <stdlib.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <random>
#include <set>
#include <sstream>

#include "data/mvtec_layout.h"
#include "data/synthetic_anomaly.h"
#include "image/image.h"
#include "util/csv.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/image_list.h"

namespace fs = std::filesystem;

namespace gad {

// ---- splits ------------------------------------------------------------------------------------

// k of n indices with the portable seeded draw (util/image_list.h), in ascending order.
std::vector<size_t> draw_indices(size_t n, size_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<size_t> pool = draw_indices(n, std::min(k, n), rng);
  std::sort(pool.begin(), pool.end());
  return pool;
}

std::vector<size_t> split_test_indices(size_t n, double fraction, uint64_t seed) {
  if (!(fraction >= 0.0 && fraction <= 1.0)) fail("--test-fraction: must be within [0, 1] (got ", fraction, ")");
  size_t n_test = static_cast<size_t>(std::ceil(fraction * static_cast<double>(n)));
  n_test = std::min(n_test, n);
  if (n_test == 0) return {};
  return draw_indices(n, n_test, seed);
}

std::string CategoryCounts::summary() const {
  std::ostringstream s;
  s << category << ": train/good " << train_good << ", test/good " << test_good;
  for (const auto& [d, c] : test_defects) s << ", test/" << d << " " << c;
  if (dropped) s << " (" << dropped << " dropped)";
  return s.str();
}

namespace {

// ---- small helpers ------------------------------------------------------------------------------

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// The records of a CSV file (RFC 4180, util/csv.h), fields trimmed of surrounding spaces.
std::vector<CsvRecord> read_csv_trimmed(const std::string& path) {
  std::vector<CsvRecord> rows = read_csv_file(path);
  for (auto& r : rows)
    for (auto& f : r.fields) f = trim(f);
  return rows;
}

std::vector<std::string> split_ws(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  std::string t;
  while (in >> t) out.push_back(t);
  return out;
}

// Lines of a text file with 1-based numbers; blank lines skipped.
std::vector<std::pair<size_t, std::string>> read_lines(const std::string& path) {
  std::string text = read_file_text(path);
  std::vector<std::pair<size_t, std::string>> out;
  std::istringstream in(text);
  std::string line;
  size_t no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line = line.substr(3);  // UTF-8 BOM
    if (trim(line).empty()) continue;
    out.emplace_back(no, line);
  }
  if (out.empty()) fail(path, ": empty file");
  return out;
}

bool parse_double(const std::string& s, double& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  v = std::strtod(s.c_str(), &end);
  return errno == 0 && end == s.c_str() + s.size() && std::isfinite(v);
}

bool parse_long(const std::string& s, long& v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  v = std::strtol(s.c_str(), &end, 10);
  return errno == 0 && end == s.c_str() + s.size();
}

bool is_image_file(const fs::path& p) {
  std::string ext = lower(p.extension().string());
  static const char* kExts[] = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"};
  return std::any_of(std::begin(kExts), std::end(kExts), [&](const char* e) { return ext == e; });
}

void require_dir(const std::string& dir, const std::string& what) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail(dir, ": no such directory (expected ", what, ")");
}

// Image files under `dir` (recursive), as sorted '/'-separated paths relative to `dir`.
std::vector<std::string> list_images(const std::string& dir, const std::string& what, bool allow_empty = false) {
  require_dir(dir, what);
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file() && is_image_file(it->path()))
      out.push_back(it->path().lexically_relative(dir).generic_string());
  if (ec) fail(dir, ": cannot list directory (", ec.message(), ")");
  if (out.empty() && !allow_empty) fail(dir, ": no image files (expected ", what, ")");
  std::sort(out.begin(), out.end());
  return out;
}

// "a/b/c.png" → "a_b_c.png": unique output names from nested source paths.
std::string flatten(const std::string& rel) {
  std::string s = rel;
  std::replace(s.begin(), s.end(), '/', '_');
  return s;
}

std::string stem_of(const std::string& name) { return fs::path(name).stem().string(); }

// RGB(A)/gray Image region → BGR(A)/gray cv::Mat (deep copy) for cv::imwrite.
cv::Mat to_mat(const Image& img, int x0, int y0, int w, int h) {
  const int c = img.channels;
  cv::Mat m(h, w, CV_8UC(c));
  for (int y = 0; y < h; ++y) {
    const uint8_t* src = img.pixels.data() + (static_cast<size_t>(y0 + y) * img.width + x0) * c;
    uint8_t* dst = m.ptr<uint8_t>(y);
    std::memcpy(dst, src, static_cast<size_t>(w) * c);
    if (c >= 3)
      for (int x = 0; x < w; ++x) std::swap(dst[x * c], dst[x * c + 2]);
  }
  return m;
}

bool any_nonzero(const Image& img, int x0, int y0, int w, int h) {
  for (int y = y0; y < y0 + h; ++y) {
    const uint8_t* p = img.pixels.data() + (static_cast<size_t>(y) * img.width + x0) * img.channels;
    for (size_t i = 0; i < static_cast<size_t>(w) * img.channels; ++i)
      if (p[i]) return true;
  }
  return false;
}

// ---- staging: all output goes to DST/.gad-convert-XXXXXX, renamed into place at the end -------

// One output file: hard-link/copy `src`, or encode `mat` as PNG.
struct Item {
  std::string key;   // sort key (source-relative path, unique)
  std::string name;  // output file name
  std::string src;
  cv::Mat mat;
};

class Staging {
 public:
  Staging(const std::string& dst, const ConvertOptions& o) : dst_(dst), options_(o) {
    std::error_code ec;
    created_dst_ = fs::create_directories(dst, ec);
    if (ec) fail(dst, ": cannot create (", ec.message(), ")");
    std::string tmpl = (fs::path(dst) / ".gad-convert-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) fail(dst, ": cannot create a temporary directory (", std::strerror(errno), ")");
    tmp_ = tmpl;
  }
  ~Staging() {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
    if (created_dst_ && !committed_ && fs::is_empty(dst_, ec)) fs::remove(dst_, ec);  // leave no trace on error
  }

  void add(const std::string& category, const std::string& folder, const Item& item) {
    const fs::path dir = fs::path(tmp_) / category / folder;
    if (made_.insert(dir.string()).second) {
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec) fail(dir.string(), ": cannot create (", ec.message(), ")");
    }
    const fs::path out = dir / item.name;
    std::error_code ec;
    if (fs::exists(out, ec))
      fail(item.key, ": output name ", category, "/", folder, "/", item.name, " is used twice (rename the source files)");
    if (!item.mat.empty()) {
      std::vector<uchar> png;
      if (!cv::imencode(".png", item.mat, png)) fail(out.string(), ": cannot encode PNG");
      write_file_atomically(out.string(), [&](std::FILE* f) { std::fwrite(png.data(), 1, png.size(), f); });
    } else {
      fs::create_hard_link(item.src, out, ec);
      if (ec) {
        ec.clear();
        fs::copy_file(item.src, out, ec);
        if (ec) fail(item.src, ": cannot copy to ", out.string(), " (", ec.message(), ")");
      }
    }
    if (folder.rfind("ground_truth/", 0) == 0) return;
    CategoryCounts& c = count(category);
    if (folder == "train/good") ++c.train_good;
    else if (folder == "test/good") ++c.test_good;
    else if (folder.rfind("test/", 0) == 0) ++c.test_defects[folder.substr(5)];
    if (options_.log && ++written_ % 10000 == 0) options_.log("written " + std::to_string(written_) + " files");
  }

  CategoryCounts& count(const std::string& category) {
    CategoryCounts& c = counts_[category];
    c.category = category;
    return c;
  }

  // Normals: sorted by key, ceil(fraction·n) drawn for test/good, the rest to train/good.
  void add_split_normals(const std::string& category, std::vector<Item> normals) {
    std::sort(normals.begin(), normals.end(), [](const Item& a, const Item& b) { return a.key < b.key; });
    for (size_t i = 1; i < normals.size(); ++i)
      if (normals[i].key == normals[i - 1].key) fail(normals[i].key, ": listed twice");
    const auto test = split_test_indices(normals.size(), options_.test_fraction, options_.seed);
    std::vector<bool> is_test(normals.size(), false);
    for (size_t i : test) is_test[i] = true;
    count(category);
    for (size_t i = 0; i < normals.size(); ++i) add(category, is_test[i] ? "test/good" : "train/good", normals[i]);
  }

  std::vector<CategoryCounts> commit() {
    if (counts_.empty()) fail("nothing to convert");
    for (auto& [cat, c] : counts_) {
      c.path = (fs::path(dst_) / cat).string();
      std::error_code ec;
      if (fs::exists(c.path, ec)) fail(c.path, ": already exists; remove it or choose another DST (nothing was written)");
      for (const char* d : {"train/good", "test/good"}) fs::create_directories(fs::path(tmp_) / cat / d, ec);
    }
    std::vector<CategoryCounts> out;
    for (auto& [cat, c] : counts_) {
      std::error_code ec;
      fs::rename(fs::path(tmp_) / cat, c.path, ec);
      if (ec) fail(c.path, ": cannot rename into place (", ec.message(), ")");
      out.push_back(c);
      committed_ = true;
    }
    return out;
  }

 private:
  std::string dst_, tmp_;
  const ConvertOptions& options_;
  std::set<std::string> made_;
  std::map<std::string, CategoryCounts> counts_;
  size_t written_ = 0;
  bool created_dst_ = false, committed_ = false;
};

Item file_item(const std::string& key, const std::string& name, const std::string& src) { return Item{key, name, src, {}}; }

// ---- ELPV ---------------------------------------------------------------------------------------

// labels.csv: upstream whitespace format "images/cell0001.png  1.0  mono", or a CSV with a header
// naming file / defect_probability / cell_type columns.
void convert_elpv(const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string labels = (fs::path(src) / "labels.csv").string();
  std::vector<CsvRecord> rows;
  const auto lines = read_lines(labels);
  const bool csv = lines[0].second.find(',') != std::string::npos;
  if (csv) rows = read_csv_trimmed(labels);
  else
    for (const auto& [no, line] : lines) rows.push_back({no, split_ws(line)});
  int col_file = 0, col_prob = 1, col_type = 2;
  size_t first = 0;
  if (csv) {
    const auto& cols = rows[0].fields;
    double dummy;
    if (cols.size() >= 2 && !parse_double(cols[1], dummy)) {  // header row
      first = 1;
      col_file = col_prob = col_type = -1;
      for (size_t i = 0; i < cols.size(); ++i) {
        const std::string c = lower(cols[i]);
        if (c == "file" || c == "path" || c == "image" || c == "filename") col_file = static_cast<int>(i);
        if (c == "defect_probability" || c == "probability" || c == "prob") col_prob = static_cast<int>(i);
        if (c == "cell_type" || c == "type") col_type = static_cast<int>(i);
      }
      if (col_file < 0 || col_prob < 0 || col_type < 0)
        fail(labels, ":", rows[0].line, ": header needs file, defect_probability and cell_type columns");
    }
  }
  std::vector<Item> normals;
  std::set<std::string> seen;
  const int need = std::max({col_file, col_prob, col_type}) + 1;
  for (size_t i = first; i < rows.size(); ++i) {
    const size_t no = rows[i].line;
    const auto& f = rows[i].fields;
    if (static_cast<int>(f.size()) < need)
      fail(labels, ":", no, ": expected ", need, " fields (file, defect probability, cell type), got ", f.size());
    const std::string file = f[col_file], type = lower(f[col_type]);
    double p = 0;
    if (!parse_double(f[col_prob], p)) fail(labels, ":", no, ": bad defect probability '", f[col_prob], "'");
    if (type != "mono" && type != "poly") fail(labels, ":", no, ": bad cell type '", f[col_type], "' (expected mono or poly)");
    if (!seen.insert(file).second) fail(labels, ":", no, ": '", file, "' listed twice");
    const std::string path = (fs::path(src) / file).string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) fail(labels, ":", no, ": no such image '", file, "'");
    const std::string name = fs::path(file).filename().string();
    if (std::fabs(p) < 1e-6) {
      normals.push_back(file_item(file, name, path));
    } else if (std::fabs(p - 1.0) < 1e-6) {
      st.add("elpv", "test/" + type, file_item(file, name, path));
    } else if (std::fabs(p - 1.0 / 3) < 1e-3 || std::fabs(p - 2.0 / 3) < 1e-3) {
      ++st.count("elpv").dropped;
    } else {
      fail(labels, ":", no, ": bad defect probability '", f[col_prob], "' (expected 0, 1/3, 2/3 or 1)");
    }
  }
  st.add_split_normals("elpv", std::move(normals));
}

// ---- HeadCT -------------------------------------------------------------------------------------

void convert_headct(const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string labels = (fs::path(src) / "labels.csv").string();
  const auto rows = read_csv_trimmed(labels);
  std::string img_dir;
  for (const char* d : {"head_ct/head_ct", "head_ct", "."}) {
    std::error_code ec;
    if (fs::is_directory(fs::path(src) / d, ec) && !list_images((fs::path(src) / d).string(), "", true).empty()) {
      img_dir = (fs::path(src) / d).lexically_normal().string();
      break;
    }
  }
  if (img_dir.empty()) fail(src, ": no head_ct/head_ct/NNN.png images");
  long dummy;
  const size_t first = parse_long(rows[0].fields[0], dummy) ? 0 : 1;
  std::vector<Item> normals;
  std::set<long> seen;
  for (size_t i = first; i < rows.size(); ++i) {
    const size_t no = rows[i].line;
    const auto& f = rows[i].fields;
    if (f.size() < 2) fail(labels, ":", no, ": expected 2 fields (id, hemorrhage), got ", f.size());
    long id = 0, label = 0;
    if (!parse_long(f[0], id) || id < 0) fail(labels, ":", no, ": bad id '", f[0], "'");
    if (!parse_long(f[1], label) || (label != 0 && label != 1))
      fail(labels, ":", no, ": bad label '", f[1], "' (expected 0 or 1)");
    if (!seen.insert(id).second) fail(labels, ":", no, ": id ", id, " listed twice");
    char name[32];
    std::snprintf(name, sizeof name, "%03ld.png", id);
    const std::string path = (fs::path(img_dir) / name).string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) fail(labels, ":", no, ": no such image ", path);
    Item it = file_item(name, name, path);
    if (label == 0) normals.push_back(it);
    else st.add("headct", "test/defect", it);
  }
  st.add_split_normals("headct", std::move(normals));
}

// ---- BrainMRI -----------------------------------------------------------------------------------

void convert_brainmri(const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string no = (fs::path(src) / "no").string(), yes = (fs::path(src) / "yes").string();
  require_dir(no, "brain MRI no/ and yes/ folders");
  require_dir(yes, "brain MRI no/ and yes/ folders");
  std::vector<Item> normals;
  for (const auto& rel : list_images(no, "normal brain MRI images"))
    normals.push_back(file_item("no/" + rel, flatten(rel), no + "/" + rel));
  for (const auto& rel : list_images(yes, "tumour brain MRI images"))
    st.add("brainmri", "test/defect", file_item("yes/" + rel, flatten(rel), yes + "/" + rel));
  st.add_split_normals("brainmri", std::move(normals));
}

// ---- folder -------------------------------------------------------------------------------------

void convert_folder(const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string normal = (fs::path(src) / o.normal_dir).string();
  std::string category = o.category;
  if (category.empty()) {
    fs::path p = fs::absolute(src).lexically_normal();
    category = p.filename().empty() ? p.parent_path().filename().string() : p.filename().string();
  }
  if (category.empty() || category.find('/') != std::string::npos || category[0] == '.')
    fail("--category: bad category name '", category, "'");
  if (o.anomalous_dirs.empty()) fail("--anomalous: no anomalous directory given");
  if (!o.defect_name.empty() && o.anomalous_dirs.size() > 1)
    fail("--defect: names a single anomalous directory; with several, each keeps its own name");
  // Magnetic-tile style masks (X_mask.png next to X.jpg) are not images to score: they are left out,
  // and an anomalous image's mask goes to ground_truth/<defect>/<name>_mask.png.
  auto is_mask = [](const std::string& rel) {
    const std::string st = lower(stem_of(rel));
    return st.size() > 5 && st.compare(st.size() - 5, 5, "_mask") == 0;
  };
  std::vector<Item> normals;
  for (const auto& rel : list_images(normal, "normal images (--normal)"))
    if (!is_mask(rel)) normals.push_back(file_item(rel, flatten(rel), normal + "/" + rel));
  if (normals.empty()) fail(normal, ": no normal images (only *_mask files)");
  for (const auto& dir : o.anomalous_dirs) {
    const std::string anomalous = (fs::path(src) / dir).string();
    fs::path dir_path = fs::path(dir).lexically_normal();
    const std::string defect = !o.defect_name.empty() ? o.defect_name
                               : dir_path.filename().empty() ? dir_path.parent_path().filename().string()
                                                             : dir_path.filename().string();
    if (defect.empty() || defect == "good" || defect.find('/') != std::string::npos)
      fail("--defect: bad defect name '", defect, "'");
    size_t n_anomalous = 0;
    for (const auto& rel : list_images(anomalous, "anomalous images (--anomalous)")) {
      if (is_mask(rel)) continue;
      ++n_anomalous;
      st.add(category, "test/" + defect, file_item(rel, flatten(rel), anomalous + "/" + rel));
      const fs::path mask = fs::path(anomalous) / fs::path(rel).parent_path() / (stem_of(rel) + "_mask.png");
      std::error_code ec;
      if (fs::is_regular_file(mask, ec))
        st.add(category, "ground_truth/" + defect, file_item(mask.string(), stem_of(flatten(rel)) + "_mask.png", mask.string()));
    }
    if (n_anomalous == 0) fail(anomalous, ": no anomalous images (only *_mask files)");
  }
  st.add_split_normals(category, std::move(normals));
}

// ---- synthetic anomalies on an MVTec-layout dataset ---------------------------------------------

// Keeps every category's files as they are and adds, per kind, N synthetic anomalies made from
// its train/good images (test/synthetic_<kind>/ with masks in ground_truth/synthetic_<kind>/).
void convert_synthetic(const std::string& src, Staging& st, const ConvertOptions& o) {
  if (o.synthetic_count == 0) fail("--synthetic: must be at least 1");
  for (const auto& c : discover_categories({src})) {
    for (const auto& p : c.train) st.add(c.name, "train/good", file_item(p, fs::path(p).filename().string(), p));
    for (const auto& p : c.test) {
      const fs::path rel = fs::relative(p, fs::path(c.dir) / "test");
      st.add(c.name, "test/" + rel.parent_path().string(), file_item(p, rel.filename().string(), p));
    }
    std::mt19937_64 rng(name_seed(o.seed, c.name));  // independent streams per category
    for (const auto& kind : synthetic_kinds())
      for (size_t i = 0; i < o.synthetic_count; ++i) {
        const std::string& base = c.train[rng() % c.train.size()];
        const std::string& donor = c.train[rng() % c.train.size()];
        SyntheticAnomaly a = make_synthetic_anomaly(decode_image(base), decode_image(donor), kind, rng);
        char name[64];
        std::snprintf(name, sizeof name, "%s_%05zu", kind.c_str(), i);
        Image mask{a.image.width, a.image.height, 1, std::move(a.mask)};
        const std::string key = c.name + "/" + name;
        st.add(c.name, "test/synthetic_" + kind, Item{key, std::string(name) + ".png", "", to_mat(a.image, 0, 0, a.image.width, a.image.height)});
        st.add(c.name, "ground_truth/synthetic_" + kind, Item{key, std::string(name) + "_mask.png", "", to_mat(mask, 0, 0, mask.width, mask.height)});
      }
  }
}

// ---- mosaics: small images tiled into texture-like scenes with one local anomaly ----------------

// Per category of an MVTec-layout dataset of equal-size images: N normal T×T mosaics of random
// normal tiles for train/good (N/4 for test/good), and N anomalous ones in test/tile whose one
// random tile is an anomalous image, with its mask. Digits or clothing become full-frame scenes
// where an anomaly is local, as on an inspected surface.
void convert_mosaic(const std::string& src, Staging& st, const ConvertOptions& o) {
  const int t = o.mosaic_tiles;
  if (t < 2) fail("--tiles: must be at least 2");
  if (o.synthetic_count == 0) fail("--synthetic: must be at least 1");
  for (const auto& c : discover_categories({src})) {
    std::vector<std::string> normals = c.train, anomalies;
    for (size_t i = 0; i < c.test.size(); ++i) (c.labels[i] ? anomalies : normals).push_back(c.test[i]);
    std::mt19937_64 rng(name_seed(o.seed, c.name));
    const Image first = decode_image(normals.at(0));
    const int w = first.width, hgt = first.height, ch = first.channels;
    auto tile = [&](const std::string& path) {
      Image img = decode_image(path);
      if (img.width != w || img.height != hgt || img.channels != ch)
        fail(path, ": mosaic tiles must all be ", w, "x", hgt, " with ", ch, " channel(s)");
      return img;
    };
    auto mosaic = [&](int anomalous_tile, Image* mask) {
      Image m{w * t, hgt * t, ch, std::vector<uint8_t>(static_cast<size_t>(w) * t * hgt * t * ch)};
      if (mask) *mask = Image{w * t, hgt * t, 1, std::vector<uint8_t>(static_cast<size_t>(w) * t * hgt * t)};
      for (int k = 0; k < t * t; ++k) {
        const bool bad = k == anomalous_tile;
        const Image img = tile(bad ? anomalies[rng() % anomalies.size()] : normals[rng() % normals.size()]);
        const int x0 = (k % t) * w, y0 = (k / t) * hgt;
        for (int y = 0; y < hgt; ++y) {
          std::memcpy(&m.pixels[(static_cast<size_t>(y0 + y) * m.width + x0) * ch], &img.pixels[static_cast<size_t>(y) * w * ch],
                      static_cast<size_t>(w) * ch);
          if (bad) std::memset(&mask->pixels[static_cast<size_t>(y0 + y) * mask->width + x0], 255, w);
        }
      }
      return m;
    };
    auto add = [&](const std::string& folder, const std::string& name, const Image& img) {
      st.add(c.name, folder, Item{c.name + "/" + folder + "/" + name, name, "", to_mat(img, 0, 0, img.width, img.height)});
    };
    char name[32];
    for (size_t i = 0; i < o.synthetic_count; ++i) {
      std::snprintf(name, sizeof name, "%05zu.png", i);
      add("train/good", name, mosaic(-1, nullptr));
    }
    for (size_t i = 0; i < std::max<size_t>(1, o.synthetic_count / 4); ++i) {
      std::snprintf(name, sizeof name, "%05zu.png", i);
      add("test/good", name, mosaic(-1, nullptr));
    }
    for (size_t i = 0; i < o.synthetic_count; ++i) {
      Image mask;
      Image m = mosaic(static_cast<int>(rng() % (t * t)), &mask);
      std::snprintf(name, sizeof name, "%05zu", i);
      add("test/tile", std::string(name) + ".png", m);
      add("ground_truth/tile", std::string(name) + "_mask.png", mask);
    }
  }
}

// ---- MNIST / Fashion-MNIST (IDX) ----------------------------------------------------------------

std::vector<uint8_t> read_maybe_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads uncompressed files as-is
  if (!f) fail(path, ": cannot open (", std::strerror(errno), ")");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) out.insert(out.end(), buf, buf + n);
  const bool bad = n < 0;
  gzclose(f);
  if (bad) fail(path, ": corrupt gzip data");
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t{b[at]} << 24 | uint32_t{b[at + 1]} << 16 | uint32_t{b[at + 2]} << 8 | uint32_t{b[at + 3]};
}

// Finds NAME / NAME with '.' before idx / .gz variants in dir.
std::string find_idx(const std::string& dir, const std::string& prefix, const std::string& idx) {
  for (const char* sep : {"-", "."})
    for (const char* gz : {"", ".gz"}) {
      const std::string p = (fs::path(dir) / (prefix + sep + idx + gz)).string();
      std::error_code ec;
      if (fs::is_regular_file(p, ec)) return p;
    }
  fail(dir, ": no ", prefix, "-", idx, "[.gz] (expected MNIST IDX files: train-images-idx3-ubyte, "
       "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)");
}

struct IdxSplit {
  IdxImages images;
  std::vector<uint8_t> labels;
};

IdxSplit read_idx_split(const std::string& dir, const std::string& prefix) {
  IdxSplit s;
  const std::string ip = find_idx(dir, prefix + "-images", "idx3-ubyte");
  const std::string lp = find_idx(dir, prefix + "-labels", "idx1-ubyte");
  s.images = read_idx_images(ip);
  s.labels = read_idx_labels(lp);
  if (s.labels.size() != s.images.count)
    fail(lp, ": ", s.labels.size(), " labels for ", s.images.count, " images in ", ip);
  for (size_t i = 0; i < s.labels.size(); ++i)
    if (s.labels[i] > 9) fail(lp, ": label ", int{s.labels[i]}, " of item ", i, " is not a class 0-9");
  return s;
}

void add_idx_images(Staging& st, const std::string& category, const std::string& folder, const IdxSplit& s,
                    const std::vector<size_t>& idx, const std::string& prefix, const ConvertOptions& o) {
  const size_t px = static_cast<size_t>(s.images.rows) * s.images.cols;
  for (size_t k : draw_indices(idx.size(), o.limit ? o.limit : idx.size(), o.seed)) {
    const size_t i = idx[k];
    char name[48];
    std::snprintf(name, sizeof name, "%s_%05zu.png", prefix.c_str(), i);
    cv::Mat m(s.images.rows, s.images.cols, CV_8UC1, const_cast<uint8_t*>(s.images.pixels.data() + i * px));
    st.add(category, folder, Item{name, name, "", m});
  }
}

int parse_class_digit(const std::string& s) {
  long v;
  if (!parse_long(s, v) || v < 0 || v > 9) fail("--normal-class: expected a class 0-9, got '", s, "'");
  return static_cast<int>(v);
}

void convert_mnist(const std::string& kind, const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string prefix = kind == "mnist" ? "mnist" : "fashion_mnist";
  std::function<bool(int)> normal;
  std::string category;
  if (o.protocol == "one-vs-all") {
    if (o.normal_class.empty()) fail("--protocol one-vs-all: give --normal-class 0-9");
    const int c = parse_class_digit(o.normal_class);
    normal = [c](int l) { return l == c; };
    category = prefix + "_" + std::to_string(c);
  } else if (o.protocol == "multiclass") {
    normal = [](int l) { return l % 2 == 0; };
    category = prefix + "_even";
  } else {
    fail("--protocol: ", kind, " needs one-vs-all (with --normal-class) or multiclass (even classes normal); got '",
         o.protocol, "'");
  }
  IdxSplit train = read_idx_split(src, "train"), test = read_idx_split(src, "t10k");
  std::vector<size_t> train_normal, test_normal, test_anomaly;
  for (size_t i = 0; i < train.labels.size(); ++i)
    if (normal(train.labels[i])) train_normal.push_back(i);
  for (size_t i = 0; i < test.labels.size(); ++i) (normal(test.labels[i]) ? test_normal : test_anomaly).push_back(i);
  st.count(category);
  add_idx_images(st, category, "train/good", train, train_normal, "train", o);
  add_idx_images(st, category, "test/good", test, test_normal, "test", o);
  add_idx_images(st, category, "test/anomaly", test, test_anomaly, "test", o);
}

// ---- CIFAR-10 (class folders) -------------------------------------------------------------------

const std::vector<std::string> kCifarClasses = {"airplane", "automobile", "bird",  "cat",  "deer",
                                                "dog",      "frog",       "horse", "ship", "truck"};

std::vector<std::string> subdirs(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory() && e.path().filename().string()[0] != '.') out.push_back(e.path().filename().string());
  if (ec) fail(dir, ": cannot list directory (", ec.message(), ")");
  std::sort(out.begin(), out.end());
  return out;
}

void convert_cifar10(const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string train_dir = (fs::path(src) / "train").string(), test_dir = (fs::path(src) / "test").string();
  require_dir(train_dir, "CIFAR-10 train/<class>/ and test/<class>/ folders");
  require_dir(test_dir, "CIFAR-10 train/<class>/ and test/<class>/ folders");
  const auto classes = subdirs(train_dir);
  if (classes.empty()) fail(train_dir, ": no class folders");
  if (subdirs(test_dir) != classes) fail(test_dir, ": class folders differ from ", train_dir);
  std::function<bool(const std::string&)> normal;
  std::string category;
  if (o.protocol == "one-vs-all") {
    if (o.normal_class.empty()) fail("--protocol one-vs-all: give --normal-class NAME (or CIFAR-10 index 0-9)");
    std::string c = o.normal_class;
    long idx;
    if (parse_long(c, idx)) {
      if (idx < 0 || idx > 9) fail("--normal-class: CIFAR-10 index must be 0-9, got ", idx);
      c = kCifarClasses[idx];
    }
    if (!std::count(classes.begin(), classes.end(), c)) fail("--normal-class: no class folder '", c, "' in ", train_dir);
    normal = [c](const std::string& k) { return k == c; };
    category = c;
  } else if (o.protocol == "animal-vs-vehicle") {
    const std::set<std::string> animals = {"bird", "cat", "deer", "dog", "frog", "horse"};
    const std::set<std::string> vehicles = {"airplane", "automobile", "ship", "truck"};
    for (const auto& c : classes)
      if (!animals.count(c) && !vehicles.count(c))
        fail(train_dir, "/", c, ": not a CIFAR-10 class (animal-vs-vehicle needs the CIFAR-10 class names)");
    normal = [animals](const std::string& k) { return animals.count(k) > 0; };
    category = "animal";
  } else {
    fail("--protocol: cifar10 needs one-vs-all (with --normal-class) or animal-vs-vehicle; got '", o.protocol, "'");
  }
  auto add_all = [&](const std::string& dir, const std::string& folder, bool want_normal) {
    std::vector<Item> items;
    for (const auto& c : classes) {
      if (normal(c) != want_normal) continue;
      for (const auto& rel : list_images(dir + "/" + c, "CIFAR-10 images", true))
        items.push_back(file_item(c + "/" + rel, c + "_" + flatten(rel), dir + "/" + c + "/" + rel));
    }
    for (size_t k : draw_indices(items.size(), o.limit ? o.limit : items.size(), o.seed)) st.add(category, folder, items[k]);
  };
  st.count(category);
  add_all(train_dir, "train/good", true);
  add_all(test_dir, "test/good", true);
  add_all(test_dir, "test/anomaly", false);
}

// ---- VisA (split_csv/1cls.csv) ------------------------------------------------------------------

void convert_visa(const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string csv = (fs::path(src) / "split_csv" / "1cls.csv").string();
  const auto rows = read_csv_trimmed(csv);
  const auto& head = rows[0].fields;
  int c_obj = -1, c_split = -1, c_label = -1, c_image = -1, c_mask = -1;
  for (size_t i = 0; i < head.size(); ++i) {
    const std::string h = lower(head[i]);
    if (h == "object") c_obj = static_cast<int>(i);
    if (h == "split") c_split = static_cast<int>(i);
    if (h == "label") c_label = static_cast<int>(i);
    if (h == "image") c_image = static_cast<int>(i);
    if (h == "mask") c_mask = static_cast<int>(i);
  }
  if (c_obj < 0 || c_split < 0 || c_label < 0 || c_image < 0)
    fail(csv, ":", rows[0].line, ": header needs object, split, label, image (and mask) columns");
  const int need = std::max({c_obj, c_split, c_label, c_image}) + 1;
  for (size_t i = 1; i < rows.size(); ++i) {
    const size_t no = rows[i].line;
    const auto& f = rows[i].fields;
    if (static_cast<int>(f.size()) < need) fail(csv, ":", no, ": expected ", need, " fields, got ", f.size());
    const std::string obj = f[c_obj], split = lower(f[c_split]), label = lower(f[c_label]), image = f[c_image];
    if (obj.empty() || obj.find('/') != std::string::npos || obj[0] == '.') fail(csv, ":", no, ": bad object '", obj, "'");
    if (split != "train" && split != "test") fail(csv, ":", no, ": bad split '", f[c_split], "' (expected train or test)");
    if (label != "normal" && label != "anomaly") fail(csv, ":", no, ": bad label '", f[c_label], "' (expected normal or anomaly)");
    const std::string path = (fs::path(src) / image).string();
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) fail(csv, ":", no, ": no such image '", image, "'");
    const std::string name = fs::path(image).filename().string();
    if (label == "normal") {
      st.add(obj, split == "train" ? "train/good" : "test/good", file_item(image, name, path));
      continue;
    }
    if (split == "train") fail(csv, ":", no, ": anomaly in the train split");
    st.add(obj, "test/defect", file_item(image, name, path));
    const std::string mask = c_mask >= 0 && c_mask < static_cast<int>(f.size()) ? f[c_mask] : "";
    if (mask.empty()) continue;
    const std::string mpath = (fs::path(src) / mask).string();
    if (!fs::is_regular_file(mpath, ec)) fail(csv, ":", no, ": no such mask '", mask, "'");
    Image m = decode_image(mpath);
    cv::Mat bin(m.height, m.width, CV_8UC1);
    for (int y = 0; y < m.height; ++y)
      for (int x = 0; x < m.width; ++x) {
        const uint8_t* p = m.pixels.data() + (static_cast<size_t>(y) * m.width + x) * m.channels;
        bin.at<uint8_t>(y, x) = std::any_of(p, p + std::min(m.channels, 3), [](uint8_t v) { return v != 0; }) ? 255 : 0;
      }
    st.add(obj, "ground_truth/defect", Item{mask, stem_of(name) + "_mask.png", "", bin});
  }
}

// ---- SDD (KolektorSDD): each .jpg cut into 3 horizontal bands ----------------------------------

void convert_sdd(const std::string& src, Staging& st, const ConvertOptions& o) {
  std::vector<std::string> jpgs;
  for (const auto& rel : list_images(src, "KolektorSDD kosNN/PartK.jpg images"))
    if (lower(fs::path(rel).extension().string()) == ".jpg") jpgs.push_back(rel);
  if (jpgs.empty()) fail(src, ": no .jpg images (expected KolektorSDD kosNN/PartK.jpg + PartK_label.bmp)");
  std::vector<Item> normals;
  for (const auto& rel : jpgs) {
    const fs::path img_path = fs::path(src) / rel;
    const fs::path label_path = img_path.parent_path() / (img_path.stem().string() + "_label.bmp");
    std::error_code ec;
    if (!fs::is_regular_file(label_path, ec)) fail(label_path.string(), ": missing label for ", img_path.string());
    Image img = decode_image(img_path.string()), label = decode_image(label_path.string());
    if (img.width != label.width || img.height != label.height)
      fail(label_path.string(), ": ", label.width, "x", label.height, " label for a ", img.width, "x", img.height, " image");
    if (img.height < 3) fail(img_path.string(), ": too small to cut into 3 bands");
    const std::string base = flatten(fs::path(rel).replace_extension("").generic_string());
    for (int b = 0; b < 3; ++b) {
      const int y0 = b * img.height / 3, y1 = (b + 1) * img.height / 3;
      const std::string name = base + "_" + std::to_string(b) + ".png";
      Item it{rel + "#" + std::to_string(b), name, "", to_mat(img, 0, y0, img.width, y1 - y0)};
      if (any_nonzero(label, 0, y0, label.width, y1 - y0)) st.add("SDD", "test/defect", it);
      else normals.push_back(std::move(it));
    }
  }
  st.add_split_normals("SDD", std::move(normals));
}

// ---- AITEX --------------------------------------------------------------------------------------

std::string aitex_defect(const std::string& code) {
  static const std::map<std::string, std::string> k = {
      {"002", "Broken_end"},   {"006", "Broken_yarn"}, {"010", "Broken_pick"}, {"016", "Weft_curling"},
      {"019", "Fuzzyball"},    {"022", "Cut_selvage"}, {"023", "Crease"},      {"025", "Warp_ball"},
      {"027", "Knots"},        {"029", "Contamination"}, {"030", "Nep"},       {"036", "Weft_crack"}};
  auto it = k.find(code);
  return it == k.end() ? "defect_" + code : it->second;
}

void convert_aitex(const std::string& src, Staging& st, const ConvertOptions& o) {
  const std::string nodef = (fs::path(src) / "NODefect_images").string();
  const std::string def = (fs::path(src) / "Defect_images").string();
  const std::string masks = (fs::path(src) / "Mask_images").string();
  std::vector<Item> normals;
  for (const auto& rel : list_images(nodef, "AITEX NODefect_images/")) {
    Image img = decode_image(nodef + "/" + rel);
    const int t = img.height, n = img.width / t;
    const std::string base = flatten(fs::path(rel).replace_extension("").generic_string());
    for (int i = 0; i < n; ++i)
      normals.push_back(Item{rel + "#" + std::to_string(100 + i), base + "_" + std::to_string(i) + ".png", "",
                             to_mat(img, i * t, 0, t, t)});
  }
  require_dir(masks, "AITEX Mask_images/");
  for (const auto& rel : list_images(def, "AITEX Defect_images/")) {
    const std::string stem = fs::path(rel).stem().string();
    const size_t u1 = stem.find('_'), u2 = u1 == std::string::npos ? u1 : stem.find('_', u1 + 1);
    if (u2 == std::string::npos) fail(def, "/", rel, ": name is not NNNN_CCC_NN (no defect code)");
    const std::string defect = aitex_defect(stem.substr(u1 + 1, u2 - u1 - 1));
    const std::string mpath = masks + "/" + stem + "_mask.png";
    std::error_code ec;
    if (!fs::is_regular_file(mpath, ec)) {
      if (o.log) o.log("warning: " + mpath + " missing; skipping " + def + "/" + rel);
      ++st.count("AITEX").dropped;
      continue;
    }
    Image img = decode_image(def + "/" + rel), mask = decode_image(mpath);
    if (img.width != mask.width || img.height != mask.height) fail(mpath, ": size differs from ", def, "/", rel);
    const int t = img.height, n = (img.width + t - 1) / t;
    for (int i = 0; i < n; ++i) {
      const int x0 = i * t, w = std::min(t, img.width - x0);
      if (!any_nonzero(mask, x0, 0, w, t)) continue;
      st.add("AITEX", "test/" + defect, Item{rel, stem + "_" + std::to_string(i) + ".png", "", to_mat(img, x0, 0, w, t)});
    }
  }
  st.add_split_normals("AITEX", std::move(normals));
}

}  // namespace

// ---- IDX ----------------------------------------------------------------------------------------

IdxImages read_idx_images(const std::string& path) {
  auto b = read_maybe_gz(path);
  if (b.size() < 16 || be32(b, 0) != 0x00000803) fail(path, ": not an IDX image file (bad magic)");
  IdxImages out;
  out.count = be32(b, 4);
  out.rows = static_cast<int>(be32(b, 8));
  out.cols = static_cast<int>(be32(b, 12));
  if (out.rows <= 0 || out.cols <= 0 || out.rows > 4096 || out.cols > 4096) fail(path, ": bad image size");
  const size_t need = 16 + out.count * static_cast<size_t>(out.rows) * out.cols;
  if (b.size() != need) fail(path, ": ", b.size(), " bytes, expected ", need, " for ", out.count, " images");
  out.pixels.assign(b.begin() + 16, b.end());
  return out;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  auto b = read_maybe_gz(path);
  if (b.size() < 8 || be32(b, 0) != 0x00000801) fail(path, ": not an IDX label file (bad magic)");
  const size_t n = be32(b, 4);
  if (b.size() != 8 + n) fail(path, ": ", b.size(), " bytes, expected ", 8 + n, " for ", n, " labels");
  return std::vector<uint8_t>(b.begin() + 8, b.end());
}

// ---- entry points -------------------------------------------------------------------------------

std::vector<std::string> convert_kinds() {
  return {"elpv", "headct", "brainmri", "visa", "aitex", "sdd", "mnist", "fashion-mnist", "cifar10", "folder", "synthetic", "mosaic"};
}

std::string convert_usage() {
  return "kinds (SRC contents → DST/<category>):\n"
         "  elpv           labels.csv (upstream 'images/cellNNNN.png prob type' or CSV file,defect_probability,cell_type)\n"
         "                 → elpv: prob 0 split, 1 → test/mono|poly, 1/3 and 2/3 dropped\n"
         "  headct         labels.csv (id,hemorrhage) + head_ct/head_ct/NNN.png → headct: 0 split, 1 → test/defect\n"
         "  brainmri       no/ and yes/ → brainmri: no/ split, yes/ → test/defect\n"
         "  visa           split_csv/1cls.csv → <object>: its own split, anomaly → test/defect, masks → 0/255\n"
         "  aitex          NODefect_images/ (16 tiles each, split), Defect_images/ + Mask_images/ → AITEX\n"
         "  sdd            kosNN/PartK.jpg + PartK_label.bmp, 3 bands each → SDD\n"
         "  mnist          IDX files (train-/t10k-images/labels[.gz]) → mnist_<N> (--protocol one-vs-all\n"
         "                 --normal-class N) or mnist_even (--protocol multiclass: even digits normal)\n"
         "  fashion-mnist  as mnist → fashion_mnist_<N> / fashion_mnist_even\n"
         "  cifar10        train/<class>/, test/<class>/ → <class> (--protocol one-vs-all --normal-class cat)\n"
         "                 or animal (--protocol animal-vs-vehicle: animals normal, vehicles → test/anomaly)\n"
         "  folder         --normal DIR --anomalous DIR (relative to SRC) → --category (default SRC's name)\n"
         "  synthetic      an MVTec-layout dataset → the same categories plus --synthetic N anomalies per kind\n"
         "                 (cutpaste, blob, scratch) made from train/good, with masks (training data for gad train)\n"
         "  mosaic         an MVTec-layout dataset of small equal-size images → per category --synthetic N mosaics of\n"
         "                 --tiles T x T normal tiles (train/good; N/4 test/good) and N with one anomalous tile (test/tile, masks)\n"
         "Normals are split by sorting paths and drawing ceil(0.25 n) for test/good with std::mt19937_64(--seed):\n"
         "portable, unlike the reference's sklearn split over os.listdir order.";
}

std::vector<CategoryCounts> convert_dataset(const std::string& kind, const std::string& src, const std::string& dst,
                                            const ConvertOptions& options) {
  const auto kinds = convert_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
    fail("data convert: unknown kind '", kind, "' (elpv, headct, brainmri, visa, aitex, sdd, mnist, fashion-mnist, cifar10, folder, synthetic, mosaic)");
  std::error_code ec;
  if (!fs::is_directory(src, ec)) fail(src, ": no such directory");
  Staging st(dst, options);
  if (kind == "elpv") convert_elpv(src, st, options);
  else if (kind == "headct") convert_headct(src, st, options);
  else if (kind == "brainmri") convert_brainmri(src, st, options);
  else if (kind == "folder") convert_folder(src, st, options);
  else if (kind == "mnist" || kind == "fashion-mnist") convert_mnist(kind, src, st, options);
  else if (kind == "cifar10") convert_cifar10(src, st, options);
  else if (kind == "visa") convert_visa(src, st, options);
  else if (kind == "sdd") convert_sdd(src, st, options);
  else if (kind == "synthetic") convert_synthetic(src, st, options);
  else if (kind == "mosaic") convert_mosaic(src, st, options);
  else convert_aitex(src, st, options);
  return st.commit();
}

}  // namespace gad
