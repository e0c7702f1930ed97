#include "util/csv.h"

#include <cstdio>

#include "util/error.h"
#include "util/fs.h"

namespace gad {

std::string csv_field(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string csv_number(std::optional<double> value, const char* format) {
  if (!value) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, format, *value);
  return buf;
}

CsvTable::CsvTable(const std::vector<std::string>& header) : columns_(header.size()) { add_row(header); }

void CsvTable::add_row(const std::vector<std::string>& fields) {
  if (fields.size() != columns_) fail("CSV row with ", fields.size(), " fields under a ", columns_, "-column header");
  for (size_t i = 0; i < fields.size(); ++i) text_ += (i ? "," : "") + csv_field(fields[i]);
  text_ += '\n';
}

namespace {

// A cursor over CSV text that knows its line number.
class CsvParser {
 public:
  CsvParser(const std::string& text, const std::string& source) : s_(text), src_(source) {
    if (s_.compare(0, 3, "\xEF\xBB\xBF") == 0) p_ = 3;
  }

  std::vector<CsvRecord> records() {
    std::vector<CsvRecord> out;
    while (p_ < s_.size()) {
      if (end_of_line()) continue;  // a blank line
      CsvRecord r{line_, {}};
      r.fields.push_back(field());
      while (p_ < s_.size() && s_[p_] == ',') {
        ++p_;
        r.fields.push_back(field());
      }
      if (p_ < s_.size()) end_of_line();  // field() stops only at ',', a line break or the end
      out.push_back(std::move(r));
    }
    return out;
  }

 private:
  // Consumes one line break at the cursor, if there is one.
  bool end_of_line() {
    if (s_[p_] == '\n' || s_[p_] == '\r') {
      if (s_[p_] == '\r' && p_ + 1 < s_.size() && s_[p_ + 1] == '\n') ++p_;
      ++p_;
      ++line_;
      return true;
    }
    return false;
  }

  // One field; leaves the cursor on the ',' or line break after it (or at the end).
  std::string field() {
    std::string out;
    if (p_ < s_.size() && s_[p_] == '"') {
      const size_t start = line_;
      for (++p_;; ++p_) {
        if (p_ >= s_.size()) fail(src_, ":", start, ": unterminated quoted field");
        if (s_[p_] == '\n') ++line_;
        if (s_[p_] != '"') {
          out += s_[p_];
        } else if (p_ + 1 < s_.size() && s_[p_ + 1] == '"') {
          out += '"';
          ++p_;
        } else {
          break;
        }
      }
      ++p_;  // the closing quote
      if (p_ < s_.size() && s_[p_] != ',' && s_[p_] != '\n' && s_[p_] != '\r')
        fail(src_, ":", line_, ": text after a closing quote (a quote inside a quoted field is written \"\")");
      return out;
    }
    while (p_ < s_.size() && s_[p_] != ',' && s_[p_] != '\n' && s_[p_] != '\r') out += s_[p_++];
    return out;
  }

  const std::string& s_;
  const std::string& src_;
  size_t p_ = 0, line_ = 1;
};

}  // namespace

std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& source) {
  return CsvParser(text, source).records();
}

std::vector<CsvRecord> read_csv_file(const std::string& path) {
  std::vector<CsvRecord> records = parse_csv(read_file_text(path), path);
  if (records.empty()) fail(path, ": empty file");
  return records;
}

}  // namespace gad
