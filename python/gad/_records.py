"""Results as a numpy record array: one row per image, columns instead of dicts (no pandas needed;
`pandas.DataFrame(gad.to_records(results))` works where pandas is installed)."""
from typing import Any, Dict, Sequence

import numpy as np

# Score columns as `gad score` writes them; a column a result lacks (no heads, an error) is NaN.
_SCORE_COLUMNS = ("score", "s_patch", "s_img", "s_text", "s_hol", "ms")


def to_records(results: Sequence[Dict[str, Any]]) -> "np.recarray[Any, Any]":
    """Results of `Detector.score` as a numpy record array with the fields

    path (str), ok (bool), score, s_patch, s_img, s_text, s_hol, ms (float64; NaN when absent),
    anomalous (int8: 1 flagged, 0 normal, -1 no verdict — an error, or no threshold) and
    error (str, empty when the image was scored).

    A failed image keeps ok=False, score=NaN and anomalous=-1, so no column can read it as normal.
    """
    width = max([len(str(r.get("path", ""))) for r in results] + [1])
    error_width = max([len(str(r.get("error", ""))) for r in results] + [1])
    dtype = [("path", f"U{width}"), ("ok", "?")] + [(c, "f8") for c in _SCORE_COLUMNS] + [
        ("anomalous", "i1"), ("error", f"U{error_width}")]
    rows = []
    for r in results:
        ok = "error" not in r and "score" in r
        scores = tuple(float(r[c]) if ok and c in r else float("nan") for c in _SCORE_COLUMNS)
        verdict = -1 if not ok or "anomalous" not in r else int(bool(r["anomalous"]))
        rows.append((str(r.get("path", "")), ok) + scores + (verdict, str(r.get("error", ""))))
    return np.rec.array(np.array(rows, dtype=dtype))
