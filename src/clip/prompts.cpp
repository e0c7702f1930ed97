#include "clip/prompts.h"

#include <algorithm>
#include <array>

#include "util/error.h"

namespace gad {
namespace {

// Order as in the reference; it does not affect scores (embeddings are averaged) but keeps
// sentence lists comparable with the reference's token dumps.
constexpr std::array<const char*, 22> kTemplates = {
    "a cropped photo of the {}.", "a cropped photo of a {}.", "a close-up photo of a {}.",
    "a close-up photo of the {}.", "a bright photo of a {}.", "a bright photo of the {}.",
    "a dark photo of a {}.", "a dark photo of the {}.", "a jpeg corrupted photo of a {}.",
    "a jpeg corrupted photo of the {}.", "a blurry photo of the {}.", "a blurry photo of a {}.",
    "a photo of the {}.", "a photo of a {}.", "a photo of a small {}.", "a photo of the small {}.",
    "a photo of a large {}.", "a photo of the large {}.", "a photo of a {} for visual inspection.",
    "a photo of the {} for visual inspection.", "a photo of a {} for anomaly detection.",
    "a photo of the {} for anomaly detection."};
constexpr std::array<const char*, 7> kNormalStates = {"{}", "flawless {}", "perfect {}", "unblemished {}",
                                                      "{} without flaw", "{} without defect", "{} without damage"};
constexpr std::array<const char*, 4> kAnomalyStates = {"damaged {}", "{} with flaw", "{} with defect", "{} with damage"};
constexpr std::array<const char*, 11> kCifarNames = {"airplane", "automobile", "bird", "cat", "deer", "dog",
                                                      "frog", "horse", "ship", "truck", "animal"};

std::string fill(const std::string& pattern, const std::string& value) {
  std::string out = pattern;
  out.replace(out.find("{}"), 2, value);
  return out;
}

template <size_t N>
std::vector<std::string> ensemble(const std::array<const char*, N>& states, const std::string& name) {
  std::vector<std::string> out;
  for (const char* state : states)
    for (const char* tmpl : kTemplates) out.push_back(fill(tmpl, fill(state, name)));
  return out;
}

}  // namespace

namespace {

std::string prompt_name(const std::string& class_name) {
  std::string name = class_name;
  std::replace(name.begin(), name.end(), '_', ' ');
  if (name.find_first_not_of(" \t") == std::string::npos) fail("class name: empty");
  return name;
}

}  // namespace

PromptSentences ensemble_prompt_sentences(const std::string& class_name) {
  std::string name = prompt_name(class_name);
  return {ensemble(kNormalStates, name), ensemble(kAnomalyStates, name), false};
}

PromptSentences inctrl_prompt_sentences(const std::string& class_name) {
  std::string name = prompt_name(class_name);
  if (std::find(kCifarNames.begin(), kCifarNames.end(), name) == kCifarNames.end())
    return ensemble_prompt_sentences(class_name);
  return {{"a photo of " + name + " for anomaly detection."}, {"a photo without " + name + " for anomaly detection."}, true};
}

}  // namespace gad
