// torch.save zip archives, read without torch.
//
// Layout: one top-level folder of any name (`archive/`, `model_state/`, ...) holding `data.pkl`
// (a protocol-2 pickle of the saved object), `data/<key>` (one raw storage per key) and `version`.
// A minimal unpickler rebuilds only what state dicts need: dicts, OrderedDicts, tuples, scalars,
// strings and tensors (`torch._utils._rebuild_tensor_v2` over persistent-id storages). Nothing in
// the pickle is ever executed; unknown globals become opaque placeholders that fail with their
// name as soon as the state dict would need them.
#pragma once

#include <string>
#include <vector>

#include "io/raw_tensor.h"

namespace gad {

// Reads the state dict from a torch.save zip archive: either a flat {name: tensor} dict
// (OrderedDict, possibly with a _metadata attribute set via BUILD) or a wrapped dict that holds
// it under "model_state" (or "state_dict"/"model"); other entries (epoch, cfg strings, ...) are
// ignored. Storage location tags ("cuda:0") are ignored: everything loads on the CPU.
// Tensors come back contiguous in C order, in pickle (= state_dict()) order; tensors that view
// the same storage share one buffer. Throws gad::Error naming `path` on any problem.
RawTensorList read_torch_archive(const std::string& path);

// Reads a torch.save archive that holds one tensor or a list/tuple of tensors (e.g. InCTRL's
// released few-shot prompt sets); anything else is an error naming `path` and what it holds.
std::vector<RawTensor> read_torch_tensors(const std::string& path);

}  // namespace gad
