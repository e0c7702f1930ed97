// The command as recorded in outputs (summaries, reports, trained heads): "gad" and the arguments.
// Not argv[0], so shared results do not reveal where the binary was installed.
#pragma once

#include <string>

inline std::string recorded_command(int argc, char** argv) {
  std::string command = "gad";
  for (int i = 1; i < argc; ++i) command += " " + std::string(argv[i]);
  return command;
}
