// Turning command-line paths into image lists, and the seeded reference draw.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <gad/gad.hpp>

namespace gad {

// Files are taken as given; directories are walked recursively for image files (png, jpg, jpeg,
// bmp, tif, tiff, webp; case-insensitive), sorted by path so every machine sees the same order;
// hidden files and folders (dot-names, AppleDouble "._*") are skipped, and other files are
// counted in `not_images` when given. An empty result is an error naming the arguments.
std::vector<std::string> expand_image_args(const std::vector<std::string>& args, const std::string& what,
                                           size_t* not_images = nullptr);

// An image file by its extension (the list above).
bool is_image_file(const std::filesystem::path& p);
// Dot-names (".git", ".DS_Store") and AppleDouble files ("._part1.png", macOS metadata that only
// looks like an image) are never a user's images.
bool is_hidden(const std::filesystem::path& p);

// FNV-1a of `text` started from `seed`: a portable per-name seed (categories, datasets).
uint64_t name_seed(uint64_t seed, const std::string& text);

// The same draw as indices: k of 0..n-1 (k <= n), advancing `rng`.
std::vector<size_t> draw_indices(size_t n, size_t k, std::mt19937_64& rng);

}  // namespace gad
