"""Images a Python user holds, as the arrays gad reads: PIL images (any mode) and array-likes."""
from typing import Any

import numpy as np

# PIL modes numpy views as an array gad reads as-is (uint8 gray/RGB/RGBA, uint16 gray).
_DIRECT = {"L", "RGB", "RGBA", "I;16", "I;16L", "I;16B", "I;16N"}


def as_array(image: Any, name: str) -> "np.ndarray[Any, Any]":
    """A uint8/uint16 array for a PIL image or an object with __array__; gad.Error-style ValueError
    text (naming the image) for what has no faithful conversion."""
    mode = getattr(image, "mode", None)
    if mode is None or not hasattr(image, "convert"):
        return np.ascontiguousarray(np.asarray(image))
    if mode not in _DIRECT and mode not in ("I", "F"):
        # Palette, bilevel, CMYK, YCbCr, LAB, HSV, LA, PA: PIL's own conversion to RGB(A).
        image = image.convert("RGBA" if "A" in mode or "transparency" in getattr(image, "info", {}) else "RGB")
    array = np.asarray(image)
    if mode == "F":
        raise ValueError(f"{name}: PIL mode F (float) has no fixed range: scale it to uint8 or uint16")
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit PNGs open as mode I (int32) in some Pillow versions: keep them when they fit.
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise ValueError(f"{name}: PIL mode {mode} values outside 0..65535")
        array = array.astype(np.uint16)
    return np.ascontiguousarray(array)
