"""The Python module against the CLI and its own contract (run by the README's ctest command)."""
import json
import os
import struct
import subprocess
import threading

import numpy as np
import pytest

import gad

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("GAD_SHARED_DIR", os.path.join(SRC, "..", "shared"))
MODEL = os.path.join(SHARED, "fixtures", "lite", "mobilenet_v2", "model.json")
CLI = os.environ.get("GAD_CLI", os.path.join(SRC, "build", "gad"))
TILES = os.path.join(SRC, "examples", "tiles")
REFS = os.path.join(TILES, "train", "good")
TEST = sorted(os.path.join(d, f) for d, _, fs in os.walk(os.path.join(TILES, "test")) for f in fs)


@pytest.fixture(scope="module")
def detector():
    return gad.Detector(model=MODEL, precision="fp32")


@pytest.fixture(scope="module")
def refs(detector):
    return detector.build_references([REFS], class_name="tile")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">II", head[16:24])


def test_scores_equal_the_cli(detector, refs):
    out = subprocess.run([CLI, "score", "--model", MODEL, "--precision", "fp32", "--ref-images", REFS, "--class", "tile",
                          *TEST], check=True, capture_output=True, text=True).stdout
    cli = [json.loads(line) for line in out.splitlines()]
    ours = detector.score(refs, TEST)
    assert [r["path"] for r in ours] == [c["path"] for c in cli]
    for a, b in zip(ours, cli):
        assert list(a.keys()) == list(b.keys())  # the same keys, in the same order
        assert abs(a["score"] - b["score"]) <= 1e-6
        assert abs(a["s_patch"] - b["s_patch"]) <= 1e-6


def test_refs_properties_save_and_load(detector, refs, tmp_path):
    assert refs.k == 8 and refs.class_name == "tile" and refs.scorer == "inctrl" and refs.threshold is None
    path = str(tmp_path / "tiles.gadref")
    refs.save(path)
    loaded = gad.load_references(path, detector)
    assert detector.score(loaded, TEST[:2]) == detector.score(refs, TEST[:2]) or all(
        a["score"] == b["score"] for a, b in zip(detector.score(loaded, TEST[:2]), detector.score(refs, TEST[:2])))
    calibrated = detector.calibrate(refs, [os.path.join(TILES, "validation", "good")], far=0.1)
    assert calibrated.threshold["method"] == "conformal-heldout" and calibrated.threshold["n"] == 9
    assert "anomalous" in detector.score(calibrated, TEST[:1])[0]
    drawn = detector.build_references([REFS], class_name="tile", k=3, seed=1)
    assert drawn.k == 3


def test_maps_are_image_sized_float32(detector, refs):
    r = detector.score(refs, TEST[:1], maps=True)[0]
    w, h = png_size(TEST[0])
    assert r["map"].dtype == np.float32 and r["map"].shape == (h, w)
    assert float(r["map"].max()) > 0


def test_arrays_8_and_16_bit(detector, refs):
    rng = np.random.default_rng(0)
    rgb16 = rng.integers(0, 65536, size=(40, 56, 3), dtype=np.uint16)
    rgb8 = (rgb16 >> 8).astype(np.uint8)
    a, b = detector.score(refs, [rgb16, rgb8])
    assert a["score"] == b["score"] and a["path"] == "image 0"
    crop = np.ascontiguousarray(np.pad(rgb8, ((0, 0), (0, 9), (0, 0))))[:, :56]  # strided rows
    assert detector.score(refs, [crop])[0]["score"] == b["score"]
    with pytest.raises(gad.Error, match="contiguous"):  # a channel slice: pixels 3 bytes apart
        detector.build_references([rgb8[..., 0]], class_name="tile")
    gray_refs = detector.build_references([np.ascontiguousarray(rgb8[..., c]) for c in (0, 1)], class_name="tile")
    assert gray_refs.k == 2


def test_errors_are_gad_errors_with_one_line(detector, refs):
    with pytest.raises(gad.Error) as e:
        detector.score(refs, ["/nonexistent/query.png"])
    assert "/nonexistent/query.png" in str(e.value) and "\n" not in str(e.value) and e.value.kind == "not found"
    with pytest.raises(gad.Error, match="dtype"):
        detector.score(refs, [np.zeros((8, 8, 3), dtype=np.float32)])
    # An array that is not an image gad can read is that image's error, not the call's.
    (bad,) = detector.score(refs, [np.zeros((8, 8, 2), dtype=np.uint8)])
    assert "channels" in bad["error"] and "score" not in bad
    with pytest.raises(gad.Error, match="K must be at least 1|no images"):
        detector.build_references([], class_name="tile")
    with pytest.raises(gad.Error, match="precision"):
        gad.Detector(model=MODEL, precision="fp64")
    with pytest.raises(gad.Error) as e:
        gad.Detector(model="/nonexistent/model.safetensors")
    assert e.value.kind == "not found"
    (big,) = gad.Detector(model=MODEL, max_pixels=100).score(refs, [np.zeros((20, 20), dtype=np.uint8)])
    assert "largest image" in big["error"] and "score" not in big


def test_scoring_releases_the_gil(detector, refs):
    count, stop = [0], threading.Event()

    def spin():
        while not stop.is_set():
            count[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    before = count[0]
    detector.score(refs, TEST * 3)
    during = count[0] - before
    stop.set()
    t.join()
    # With the GIL held for the whole call the other thread could not run at all meanwhile.
    assert during > 1000


def test_bad_image_is_an_error_record_without_a_verdict(detector, refs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    calibrated = detector.calibrate(refs, [os.path.join(TILES, "validation", "good")], far=0.1)
    good, bad = detector.score(calibrated, [TEST[0], str(broken)])
    assert "score" in good and "anomalous" in good and "error" not in good
    assert bad["path"] == str(broken) and "broken.png" in bad["error"]
    assert "score" not in bad and "anomalous" not in bad
    assert len(calibrated.threshold_history) == 1 and calibrated.threshold["setup"]["scorer"] == "inctrl"
    assert calibrated.integrity == "built"


def test_calibration_refuses_references_and_too_few(detector, refs):
    with pytest.raises(gad.Error, match="is reference"):
        detector.calibrate(refs, [os.path.join(REFS, "000.png")], far=0.5)
    with pytest.raises(gad.Error, match="at least 19"):
        detector.calibrate(refs, [os.path.join(TILES, "validation", "good")], far=0.05)
    assert detector.calibrate(refs, [os.path.join(TILES, "validation", "good")], far=0.05, allow_few=True).threshold


def test_lite_taps_are_settable_and_sets_keep_them(tmp_path):
    two = gad.Detector(model=MODEL, precision="fp32", lite_taps=["block_12_add", "block_5_add"])
    refs = two.build_references([REFS], class_name="tile")
    assert refs.taps == ["block_12_add", "block_5_add"]
    path = str(tmp_path / "two.gadref")
    refs.save(path)
    plain = gad.Detector(model=MODEL, precision="fp32")  # default taps: the set's are adopted on load
    loaded = plain.load_references(path)
    assert loaded.integrity == "verified"
    assert plain.score(loaded, TEST[:1])[0]["score"] == pytest.approx(two.score(refs, TEST[:1])[0]["score"], abs=1e-6)


def test_imported_from_where_expected():
    # The wheel test installs the package and names where it must come from (no build tree).
    expected = os.environ.get("GAD_EXPECT_PACKAGE")
    if expected:
        assert os.path.dirname(os.path.abspath(gad.__file__)) == os.path.abspath(expected)
    assert gad.__version__ and callable(gad.to_records)


def test_pil_images_score_as_their_arrays(detector, refs):
    from PIL import Image  # python3-pil (scripts/deps-apt.txt)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, size=(48, 64), dtype=np.uint16)
    pil_rgb, pil_gray16 = Image.fromarray(rgb), Image.fromarray(gray16)
    pil_palette = pil_rgb.convert("P")
    scores = detector.score(refs, [pil_rgb, rgb, pil_gray16, gray16, pil_palette, np.asarray(pil_palette.convert("RGB"))])
    assert scores[0]["score"] == scores[1]["score"] and scores[0]["path"] == "image 0"
    assert scores[2]["score"] == scores[3]["score"]
    assert scores[4]["score"] == scores[5]["score"]  # a palette image is scored as its colours
    with pytest.raises(gad.Error, match="image 0: PIL mode F"):
        detector.score(refs, [Image.fromarray(rgb[..., 0].astype(np.float32))])
    with pytest.raises(gad.Error, match="image 1: expected a path, a numpy array or a PIL image"):
        detector.score(refs, [rgb, 3.5])


def test_records_keep_failed_images_unscored(detector, refs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    calibrated = detector.calibrate(refs, [os.path.join(TILES, "validation", "good")], far=0.1)
    results = detector.score(calibrated, [TEST[0], str(broken)])
    rec = gad.to_records(results)
    assert rec.shape == (2,) and list(rec.path) == [TEST[0], str(broken)]
    assert rec.ok.tolist() == [True, False]
    assert rec.score[0] == results[0]["score"] and np.isnan(rec.score[1])
    assert rec.anomalous[0] == int(results[0]["anomalous"]) and rec.anomalous[1] == -1
    assert "broken.png" in rec.error[1] and rec.error[0] == ""
    unthresholded = gad.to_records(detector.score(refs, TEST[:1]))
    assert unthresholded.anomalous[0] == -1  # no threshold: no verdict either
    assert gad.to_records([]).shape == (0,)


def test_one_detector_shared_by_threads_gives_the_same_scores(detector, refs):
    alone = [r["score"] for r in detector.score(refs, TEST[:4])]
    out = {}

    def work(i):
        out[i] = [r["score"] for r in detector.score(refs, TEST[:4])]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out[i] == alone for i in range(3))


def test_python_m_gad_is_the_command_line():
    import sys
    run = subprocess.run([sys.executable, "-m", "gad", "--version"], capture_output=True, text=True)
    cli = subprocess.run([CLI, "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == cli.stdout and run.stdout.strip()
    bad = subprocess.run([sys.executable, "-m", "gad", "score", "--no-such-flag"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no-such-flag" in bad.stderr


def test_every_public_name_is_documented():
    for name in gad.__all__:
        obj = getattr(gad, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
    for cls in (gad.Detector, gad.ReferenceSet):
        for attr, member in vars(cls).items():
            if not attr.startswith("_"):
                assert (member.__doc__ or "").strip(), f"{cls.__name__}.{attr}"


MUSC = os.path.join(SHARED, "fixtures", "dinov2", "musc")
SUBSPACEAD = os.path.join(SHARED, "fixtures", "dinov2", "subspacead")


def test_zero_shot_musc_matches_the_official_scores():
    case = json.load(open(os.path.join(MUSC, "index.json")))["cases"][0]
    options = {k: case[k] for k in ("image_size", "feature_layers", "r_list", "topmin", "rscin_k_list")}
    d = gad.Detector(os.path.join(SHARED, "fixtures", "dinov2", "tiny", "model.pth"), precision="fp32", scorer="musc",
                     scorer_options=options)
    assert d.scorer.startswith("musc")
    images = [os.path.join(MUSC, p) for p in case["inputs"]]
    results = d.score_zero_shot(images)
    for name, r in zip(case["batch_order"], results):
        assert abs(r["score"] - case["results"][name]["score"]) < 1e-4  # the fixture README's tolerance
        assert r["verdict_rule"] == "robust-z>3.5"
    with pytest.raises(gad.Error, match="at least 5"):
        d.score_zero_shot(images[:3])


def test_subspacead_sets_from_options_dict(tmp_path):
    case = json.load(open(os.path.join(SUBSPACEAD, "index.json")))["cases"][0]
    options = {k: case[k] for k in ("image_res", "layers", "pca_ev", "aug_count")}
    d = gad.Detector(os.path.join(SHARED, "fixtures", "dinov2", case["model"], "model.pth"), precision="fp32",
                     scorer="subspacead", scorer_options=options)
    refs = d.build_references([os.path.join(SUBSPACEAD, p) for p in case["ref_inputs"]])
    assert refs.scorer == "subspacead"
    q = case["query_inputs"][0]
    want = case["results"][os.path.splitext(os.path.basename(q))[0]]["score"]
    got = d.score(refs, [os.path.join(SUBSPACEAD, q)])[0]["score"]
    assert abs(got - want) <= 1e-4 * max(1.0, abs(want))
    with pytest.raises(gad.Error, match="unknown key 'pca'"):
        gad.Detector(os.path.join(SHARED, "fixtures", "dinov2", case["model"], "model.pth"), scorer="subspacead",
                     scorer_options={"pca": 1})


def test_winclip_zero_shot_and_few_shot_on_clip():
    tiny = os.path.join(SHARED, "fixtures", "inctrl", "tiny_model")
    d = gad.Detector(os.path.join(tiny, "model.safetensors"), config=os.path.join(tiny, "config.json"), precision="fp32",
                     scorer="winclip")
    assert d.scorer == "winclip"
    images = sorted(os.path.join(TILES, "test", f, n) for f in os.listdir(os.path.join(TILES, "test"))
                    for n in os.listdir(os.path.join(TILES, "test", f)))
    results = d.score_zero_shot(images, class_name="tile")
    assert len(results) == len(images)
    for r in results:
        assert r["score"] == r["s_text"] and 0 <= r["score"] <= 1
        assert r["verdict_rule"] == "robust-z>3.5"
    with pytest.raises(gad.Error, match="class name"):
        d.score_zero_shot(images)
    refs = d.build_references([os.path.join(TILES, "train", "good")], "tile")
    assert refs.scorer == "winclip"
    few = d.score(refs, images[:2])
    assert all(0 <= r["s_text"] <= 1 and r["score"] > 0 for r in few)
