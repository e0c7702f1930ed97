// InCTRL's text prior sentences (spec §2.5): the 22-template × state ensemble, or the single CIFAR
// pair for the eleven CIFAR-style class names. Pure string work, no model.
#pragma once

#include <string>
#include <vector>

namespace gad {

struct PromptSentences {
  std::vector<std::string> normal;   // 154 (or 1 for the CIFAR names)
  std::vector<std::string> anomaly;  // 88 (or 1)
  bool cifar_special_case = false;
};

// `class_name` is the category name as given (e.g. "metal_nut"); '_' becomes ' ' first, as the
// reference does. Throws gad::Error for an empty name.
PromptSentences inctrl_prompt_sentences(const std::string& class_name);
// The 154 + 88 ensemble for any name (WinCLIP's prompts have no CIFAR special case).
PromptSentences ensemble_prompt_sentences(const std::string& class_name);

}  // namespace gad
