// Inputs the fuzz targets (fuzz/) found, or hand-made variants of them, kept as regression tests
// in the normal suite: each must now fail with a clear gad::Error naming the problem (before the
// fix they crashed, hit undefined behaviour or allocated gigabytes). Inputs: tests/data/fuzz/.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "backbone/backbone.h"
#include "fingerprint_backbone.h"
#include "scorers/reference_set.h"
#include "io/safetensors.h"
#include "io/torch_archive.h"
#include "lite/tfjs_model.h"
#include "model/weights.h"
#include "util/error.h"

namespace {

const std::string kDir = GAD_TEST_DATA_DIR "/fuzz/";

std::string read_input(const std::string& name) {
  std::ifstream in(kDir + name, std::ios::binary);
  EXPECT_TRUE(in.good()) << kDir + name;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const gad::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// The tfjs_model target's input: model.json, the separator, the shard bytes.
std::string tfjs_error(const std::string& name) {
  const std::string input = read_input(name), sep = "\n--gad-part--\n";
  const size_t at = input.find(sep);
  EXPECT_NE(at, std::string::npos);
  const std::string shard = input.substr(at + sep.size());
  return error_of([&] {
    gad::TfjsModel::from_tfjs_memory(input.substr(0, at), std::vector<uint8_t>(shard.begin(), shard.end()), name);
  });
}

TEST(FuzzRegressions, TorchArchiveEntryClaimingGigabytesIsRefusedBeforeAllocating) {
  // A 789-byte archive whose data.pkl entry states 4 GB uncompressed from 311 stored bytes.
  const std::string path = kDir + "torch_archive-entry-claims-4gb.pt";
  const std::string e = error_of([&] { gad::read_torch_archive(path); });
  EXPECT_NE(e.find(path + ": truncated or corrupt archive (entry archive/data.pkl claims 4160749879 bytes"),
            std::string::npos)
      << e;
  EXPECT_NE(error_of([&] { gad::Weights::load(path); }).find("claims 4160749879 bytes"), std::string::npos);
}

TEST(FuzzRegressions, TorchArchiveContainersHoldingThemselvesAreRefused) {
  // Through the memo a pickle can put a dict or list inside itself: before, such values leaked
  // (shared_ptr cycles) and a {"model_state": itself} wrapper was followed without end.
  for (const std::string name : {"torch_archive-dict-holds-itself.pt", "torch_archive-list-holds-itself.pt"}) {
    const std::string path = kDir + name;
    EXPECT_NE(error_of([&] { gad::read_torch_archive(path); }).find("a container holds itself (a cyclic pickle)"),
              std::string::npos)
        << name;
  }
  // A list appended to itself (DUP, APPEND) and then dropped by a failing opcode: its cycle is cut
  // when the unpickler goes (the leak shows under the fuzz build's LeakSanitizer).
  const std::string path = kDir + "torch_archive-dropped-cyclic-list.pt";
  EXPECT_EQ(error_of([&] { gad::read_torch_archive(path); }),
            path + ": bad pickle in archive/data.pkl at offset 39: APPENDS without a MARK");
}

TEST(FuzzRegressions, TfjsZeroSizeWeightDecodesWithoutTouchingMemory) {
  // A [0,3] weight has no bytes (its tensor has no buffer): it decodes, and is then reported as
  // a key the topology does not use.
  EXPECT_NE(tfjs_error("tfjs-zero-size-weight").find("unexpected key 'empty' [0,3]"), std::string::npos);
}

TEST(FuzzRegressions, TfjsNegativeOrOverflowingShapesAreRefused) {
  EXPECT_NE(tfjs_error("tfjs-negative-dimension").find("weight 'bn/gamma' has a negative dimension -2"),
            std::string::npos);
  EXPECT_NE(tfjs_error("tfjs-overflowing-shape")
                .find("weight 'bn/gamma' has shape [4294967296,4294967296,4], more values than the shard's 344 bytes hold"),
            std::string::npos);
}

TEST(FuzzRegressions, TfjsFloatsWhereIntegersBelongAreRefused) {
  // Before: nlohmann's float-to-int64 conversion of 3e20, undefined behaviour.
  EXPECT_NE(tfjs_error("tfjs-huge-float-dimension")
                .find("weight 'dw/depthwise_kernel' has a non-integer dimension 3.1844674407370955e+20"),
            std::string::npos);
  EXPECT_NE(tfjs_error("tfjs-float-filters").find("layer 'conv' (Conv2D): 'filters' must be an integer, got 3.5e+20"),
            std::string::npos);
}

TEST(FuzzRegressions, TfjsZeroWindowsAndStridesAreRefused) {
  // Before: a pooling/conv window or stride of 0 divided by zero computing the output shape (UB).
  EXPECT_NE(tfjs_error("tfjs-zero-window").find("must be 1..65536"), std::string::npos) << tfjs_error("tfjs-zero-window");
}

// Before: nlohmann::json exceptions without the file name (or a wrapped-around numel()).
TEST(FuzzRegressions, SafetensorsHeaderOfTheWrongJsonTypesIsACleanError) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"safetensors-dtype-not-string.safetensors", ": tensor 'a' has a dtype that is not a string"},
      {"safetensors-offset-not-number.safetensors", ": tensor 'a' has bad data_offsets"},
      {"safetensors-metadata-array.safetensors", ": corrupt safetensors header (__metadata__ is not an object)"},
      {"safetensors-overflowing-shape.safetensors",
       ": tensor 'a' has shape [4294967296,4294967296,4], more than the file's 16 data bytes hold"},
  };
  for (const auto& [name, problem] : cases) {
    const std::string path = kDir + name;
    EXPECT_EQ(error_of([&] { gad::read_safetensors(path); }), path + problem);
  }
}

TEST(FuzzRegressions, GadrefMetadataOfTheWrongJsonTypesIsACleanError) {
  const gad::fuzz::FingerprintOnlyBackbone backbone;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"gadref-metadata-array.gadref", ": corrupt reference-set metadata (not a JSON object)"},
      {"gadref-source-not-object.gadref", ": corrupt reference-set metadata ([json.exception.type_error.306]"},
      {"gadref-threshold-far-string.gadref", ": corrupt reference-set metadata ([json.exception.type_error.302]"},
      {"gadref-no-references.gadref", ": holds no reference images (K = 0)"},
  };
  for (const auto& [name, problem] : cases) {
    const std::string path = kDir + name;
    EXPECT_EQ(error_of([&] { gad::ReferenceSet::load(path, backbone); }).rfind(path + problem, 0), 0u) << name;
  }
}

}  // namespace
