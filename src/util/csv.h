// CSV as RFC 4180 defines it, for every CSV gad writes or reads.
//
// Writing: a field is quoted when it contains ',', '"', CR or LF, with inner quotes doubled, so a
// path like `Part, rev B/a "q".png` stays one field for pandas, Excel or a MES import. Records end
// in LF (every reader accepts it; RFC 4180's CRLF would put '\r' into line-based tools). A table
// refuses rows whose field count differs from its header, and an absent value is an empty cell,
// never a made-up 0.
// Reading: the same rules (quoted fields may hold ',', '""' and line breaks); CRLF or LF, a UTF-8
// byte-order mark and blank lines are accepted, fields are not trimmed, a quote inside an unquoted
// field is kept as it is (as Python's csv does); text after a closing quote and an unterminated
// quote are errors naming the file and line.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace gad {

// One field as it appears in the file.
std::string csv_field(const std::string& value);
// printf-formatted number ("%.9g" by default); std::nullopt -> "" (an empty cell).
std::string csv_number(std::optional<double> value, const char* format = "%.9g");

// A table built row by row; text() is the whole file.
class CsvTable {
 public:
  explicit CsvTable(const std::vector<std::string>& header);
  // Throws gad::Error when `fields` does not have one entry per header column.
  void add_row(const std::vector<std::string>& fields);
  const std::string& text() const { return text_; }

 private:
  size_t columns_;
  std::string text_;
};

struct CsvRecord {
  size_t line = 0;  // 1-based line where the record starts
  std::vector<std::string> fields;
};

// Parses CSV text; `source` names the file in errors ("labels.csv:3: unterminated quoted field").
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& source);
// Reads and parses a file; an unreadable or empty file is an error naming it.
std::vector<CsvRecord> read_csv_file(const std::string& path);

}  // namespace gad
