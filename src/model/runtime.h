// Process-level compute settings shared by every command.
#pragma once

namespace gad {

// Sets torch's and OpenBLAS's thread counts (0 = every core); returns the count in use.
int configure_threads(int requested);

}  // namespace gad
