#include "methods/method.h"

#include <functional>
#include <utility>

#include "util/error.h"

namespace gad {
namespace {

using Factory = std::unique_ptr<Method> (*)(const LoadedModel&);

const std::vector<std::pair<std::string, Factory>>& registry() {
  static const std::vector<std::pair<std::string, Factory>> methods = {
      {"inctrl", make_inctrl_method},
      {"patch-knn", make_patch_knn_method},
      {"image-knn", make_image_knn_method},
      {"winclip", make_winclip_method},
      {"anomalydino", make_anomalydino_method},
      {"anomalydino-rot", make_anomalydino_rot_method},
      {"subspacead", make_subspacead_method},
  };
  return methods;
}

}  // namespace

std::vector<std::string> method_names() {
  std::vector<std::string> names;
  for (const auto& entry : registry()) names.push_back(entry.first);
  return names;
}

std::unique_ptr<Method> make_method(const std::string& name, const LoadedModel& model) {
  for (const auto& [known, factory] : registry())
    if (known == name) return factory(model);
  std::string all;
  for (const auto& n : method_names()) all += (all.empty() ? "" : ", ") + n;
  all += ", musc";
  fail("--scorers: unknown scorer '", name, "' (known: ", all, ")");
}

}  // namespace gad
