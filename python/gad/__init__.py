"""gad: generalist (few-shot and training-free) anomaly detection on CPUs.

    import gad
    detector = gad.Detector()                       # the installed lite model
    refs = detector.build_references(["good/"], class_name="tile")
    for r in detector.score(refs, ["query.png"]):
        print(r["path"], r.get("score"), r.get("error"))

Images are paths (files or folders), numpy arrays (uint8 or uint16; HxW, HxWx1, HxWx3 RGB or
HxWx4 RGBA) or PIL images. Every image gives one result dict with the keys of `gad score`'s JSON
lines: either a finite "score" (and "anomalous" when the set has a threshold) or an "error" and
no score — never a verdict for an image that was not scored. `gad.to_records` turns results into
a numpy record array. Errors of a whole call raise `gad.Error` with gad's one-line message.
"""
from ._gad import Detector, Error, ReferenceSet, __version__, load_references, set_threads
from ._records import to_records

__all__ = ["Detector", "Error", "ReferenceSet", "__version__", "load_references", "set_threads", "to_records"]
