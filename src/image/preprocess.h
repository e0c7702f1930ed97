// Image preprocessing that reproduces the reference Python pipelines bit for bit, without torch.
//
// resize_pil() emulates Pillow 9.4 `Image.resize` (libImaging/Resample.c) for BILINEAR and BICUBIC:
//   - filters: triangle (support 1) and Keys cubic a = -0.5 (support 2);
//   - per axis: scale = in/out, filterscale = max(scale, 1), support = filter_support*filterscale
//     (downscaling is antialiased); for output pixel i, center = (i + 0.5)*scale,
//     xmin = max(int(center - support + 0.5), 0), xmax = min(int(center + support + 0.5), in),
//     weights filter((x - center + 0.5)/filterscale) normalised to sum 1 in double, then fixed
//     point with 22 fractional bits, rounded half away from zero;
//   - separable: the horizontal pass runs first, over only the source rows the vertical pass reads;
//     each pass starts its int32 accumulator at 2^21, shifts right by 22 and clamps to uint8, so
//     the intermediate image is uint8; a pass is skipped when its dimension is unchanged, and an
//     unchanged size returns a copy;
//   - images with alpha (4 channels RGBA, 2 channels LA) are premultiplied first ("RGBa":
//     c' = MULDIV255(c, a)) and un-premultiplied after (c = min(255, 255*c'/a) for 0 < a < 255),
//     exactly as Pillow's resize converts RGBA -> RGBa -> RGBA.
//
// Lite (MobileNet) transform, decided from shared/fixtures/lite/mobilenet_v2: the fixtures were
// made with PIL convert("L") -> resize((224,224), BILINEAR) -> /255 -> replicate, but every source
// image there is already gray, so convert("L") was a no-op and the fixtures say nothing about
// colour images. gad therefore resizes colour images per RGB channel (keeping the colour the RGB
// network was trained on) and replicates gray ones after the resize. For gray images, and for
// colour images with R = G = B (Head-CT), this equals the fixture recipe bit for bit.
#pragma once

#include <vector>

#include <gad/gad.hpp>

#include "image/image.h"

namespace gad {

enum class Resample { Bilinear, Bicubic };

// Bit-exact Pillow 9.4 `Image.resize((out_w, out_h), filter)` for 1-4 channel 8-bit images.
// Throws gad::Error for an empty image or a non-positive output size.
Image resize_pil(const Image& in, int out_w, int out_h, Resample filter);

// Where the network input came from, to map anomaly maps back onto the original image: the source
// (src_w x src_h) was resized to resized_w x resized_h, then the size x size window at
// (crop_left, crop_top) was kept.
// CropGeometry (how the network input was cut from the image) is in <gad/gad.hpp>.

struct PixelTensor {
  int channels = 3, height = 0, width = 0;
  std::vector<float> chw;  // channels x height x width, float32
  CropGeometry geometry;
};

// The CLIP / InCTRL test-time transform (torchvision 0.14 + Pillow 9.4), step by step:
//   1. Take the decoded image in its own mode (L, RGB or RGBA); no conversion before resizing.
//   2. Resize with Pillow BICUBIC (resize_pil) so the shorter side is `size`; the longer side is
//      int(size * long / short), computed in double and truncated (torchvision Resize(int)).
//      RGBA is resized premultiplied. If the size is unchanged the image is copied as is.
//   3. Centre crop size x size: top = round((resized_h - size) / 2), left likewise, where round is
//      Python's round-half-to-even (0.5 -> 0, 1.5 -> 2, 44.5 -> 44).
//   4. Convert to RGB after the crop: L is replicated to 3 channels, RGBA drops its alpha without
//      compositing.
//   5. ToTensor: x = float32(u8) / 255 (a correctly rounded float32 division), HWC -> CHW.
//   6. Normalize with the OpenAI CLIP constants (the Python doubles rounded to float32):
//      mean = (0.48145466, 0.4578275, 0.40821073), std = (0.26862954, 0.26130258, 0.27577711),
//      y = (x - mean) / std with each of the two operations rounded to float32.
// Throws gad::Error for an empty image, an unsupported channel count or size <= 0.
PixelTensor clip_preprocess(const Image& img, int size = 240);

// The lite (MobileNet) transform: resize straight to size x size with Pillow BILINEAR (aspect not
// kept, no crop), gray replicated to RGB after the resize, RGBA alpha dropped after the
// (premultiplied) resize, x = float32(u8) / 255, no mean/std. Output is CHW float32; the geometry
// has resized_w = resized_h = size and a zero crop offset.
PixelTensor lite_preprocess(const Image& img, int size = 224);

// The AnomalyDINO / DINOv2 transform (AnomalyDINO `DINOv2Wrapper.prepare_image`):
//   1. 8-bit RGB as `cv2.imread(IMREAD_COLOR)` + BGR->RGB gives it: gray replicated, alpha dropped
//      without compositing;
//   2. Pillow BICUBIC resize of the smaller edge to `smaller_edge`, the longer side
//      int(S * long / short) (torchvision Resize(int) on a PIL image);
//   3. x = float32(u8) / 255, ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225)
//      as float32, y = (x - mean) / std;
//   4. top-left crop to multiples of `patch` in both directions (grids are not square).
// The geometry maps back the AnomalyDINO way (stretch_to_image). Throws gad::Error for an empty
// image or a size too small for one patch.
PixelTensor dino_preprocess(const Image& img, int smaller_edge = 448, int patch = 14);

// The square transform of MuSc and SubspaceAD (torchvision Resize((S,S)) / Hugging Face's
// BitImageProcessor on a PIL image): RGB (gray replicated, alpha dropped without compositing, as
// PIL convert("RGB")), Pillow resize to size x size with `filter` (aspect not kept), x/255 and
// ImageNet mean/std as float32, then the top-left (size - size mod patch) square, as Hugging
// Face's stride-`patch` patch embedding silently drops the rest.
PixelTensor square_preprocess(const Image& img, int size, int patch, Resample filter);

// The image as 3-channel RGB: gray replicated, alpha dropped without compositing.
Image to_rgb(const Image& img);

// Python round((resized - size) / 2) with half-to-even, as torchvision CenterCrop computes it.
int center_crop_offset(int resized, int size);

}  // namespace gad
