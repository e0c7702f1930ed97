// Where gad's data files (BPE vocabulary, CLIP configs, shipped heads) are at run time.
//
// They sit at a fixed path relative to the gad library itself — <libdir>/../share/gad in an
// install, build/share/gad in a build tree — so a relocated install keeps working and nothing
// points back at the source tree. $GAD_ASSET_DIR overrides it.
#pragma once

#include <string>

namespace gad {

std::string asset_dir();
std::string asset_path(const std::string& relative);  // asset_dir() + "/" + relative

}  // namespace gad
