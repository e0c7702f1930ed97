// Label and image lists users hand to gad: CSV (RFC 4180 reader behind --labels and the dataset
// converters) and the reference's JSON training lists ([{"image_path", "target", "type"}, ...])
// read by `gad train --data LIST.json`, followed by the seeded validation split.
// Input: one selector byte (even: CSV, odd: JSON list), then the file's bytes.
#include "fuzz_support.h"
#include "train/training_data.h"
#include "util/csv.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  try {
    if (data[0] % 2 == 0) {
      const std::string text(reinterpret_cast<const char*>(data + 1), size - 1);
      for (const auto& record : gad::parse_csv(text, "labels.csv")) (void)record.fields.size();
    } else {
      const std::string path = gad::fuzz::write_input_file(data + 1, size - 1, "train.json");
      const gad::TrainingData d = gad::read_training_data({path});
      (void)gad::split_validation(d, 0.2, 42, 1);
    }
  } catch (const gad::Error& e) {
    gad::fuzz::note(e);
  }
  return 0;
}
