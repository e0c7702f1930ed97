#!/usr/bin/env python3
"""Writes the committed seed corpora (fuzz/corpus/<target>/): small valid inputs of every format
the targets read, built here with the standard library so their origin is reproducible, plus a
few small fixtures. Run from the repository root: python3 fuzz/make_corpus.py [SHARED_DIR]."""
import io, json, os, pickle, struct, sys, types, zipfile, zlib, base64, collections, shutil

ROOT = os.path.dirname(os.path.abspath(__file__))
SHARED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "..", "..", "shared")
SEP = b"\n--gad-part--\n"


def put(target, name, data):
    d = os.path.join(ROOT, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---- safetensors
def safetensors(tensors, metadata=None):
    header, blobs, off = {}, b"", 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs += data
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blobs


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


put("safetensors", "two_f32", safetensors([("a.weight", "F32", [2, 3], f32(*range(6))), ("b", "F32", [2], f32(1, 2))],
                                          {"format": "pt"}))
put("safetensors", "mixed_dtypes", safetensors([("h", "F16", [2], b"\x00\x3c\x00\x40"), ("bf", "BF16", [1], b"\x80\x3f"),
                                                ("i", "I64", [1], struct.pack("<q", 7)), ("d", "F64", [], struct.pack("<d", 1.5)),
                                                ("e", "F32", [0, 4], b"")]))
put("safetensors", "empty_header", safetensors([]))


# ---- torch.save archives (what torch.save writes: pickle protocol 2, persistent-id storages)
class Storage:
    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


def fake_global(module, name):
    mod = sys.modules.setdefault(module, types.ModuleType(module))
    obj = type(name, (), {}) if name[0].isupper() else (lambda *a: None)
    obj.__module__, obj.__qualname__, obj.__name__ = module, name, name
    setattr(mod, name, obj)
    return obj


rebuild = fake_global("torch._utils", "_rebuild_tensor_v2")
storage_classes = {c: fake_global("torch", c) for c in ("FloatStorage", "HalfStorage", "LongStorage", "BFloat16Storage")}


class Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce_ex__(self, protocol):
        return (rebuild, self.args)


class TorchPickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", storage_classes[obj.cls], obj.key, "cpu", obj.numel)
        return None


def torch_archive(obj, storages, folder="archive"):
    """The file (after the target's selector byte 0), and the target's parts form (selector 1):
    data.pkl and the storages, which the target zips itself."""
    buf = io.BytesIO()
    TorchPickler(buf, protocol=2).dump(obj)
    parts = b"\x01" + SEP.join([buf.getvalue()] + [storages[k] for k in sorted(storages, key=int)])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        def add(name, data):  # a fixed timestamp keeps the seeds byte-for-byte reproducible
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), data)
        add(folder + "/data.pkl", buf.getvalue())
        for key, data in storages.items():
            add(folder + "/data/" + key, data)
        add(folder + "/version", "3\n")
    return b"\x00" + out.getvalue(), parts


def put_archive(name, obj, storages, folder="archive"):
    whole, parts = torch_archive(obj, storages, folder)
    put("torch_archive", name, whole)
    put("torch_archive", name + ".parts", parts)


s0, s1 = Storage("0", "FloatStorage", 6), Storage("1", "LongStorage", 1)
flat = collections.OrderedDict([("conv.weight", Tensor(s0, 0, [2, 3], [3, 1])), ("conv.bias", Tensor(s0, 4, [2], [1])),
                                ("steps", Tensor(s1, 0, [], []))])
storages = {"0": f32(*range(6)), "1": struct.pack("<q", 3)}
put_archive("flat", flat, storages)
put_archive("wrapped", {"model_state": flat, "epoch": 3, "cfg": "x"}, storages, "model_state")
put_archive("module_prefix", collections.OrderedDict(
    [("module.a", Tensor(s0, 0, [3, 2], [1, 3])), ("module.b", Tensor(Storage("1", "HalfStorage", 2), 0, [2], [1]))]),
    {"0": f32(*range(6)), "1": b"\x00\x3c\x00\x40"})
put_archive("tensor_list", [Tensor(s0, 0, [3], [1]), Tensor(s0, 3, [3], [1])], {"0": f32(*range(6))})


# ---- TF.js layers model: model.json, separator, shard
def layer(name, cls, config, inbound):
    config = dict(config, name=name)
    return {"name": name, "class_name": cls, "config": config,
            "inbound_nodes": [[[i, 0, 0, {}] for i in inbound]] if inbound else []}


def tfjs(quantised):
    layers = [
        layer("input_1", "InputLayer", {"batch_input_shape": [None, 8, 8, 3], "dtype": "float32"}, []),
        layer("pad", "ZeroPadding2D", {"padding": [[0, 1], [0, 1]], "data_format": "channels_last"}, ["input_1"]),
        layer("conv", "Conv2D", {"filters": 2, "kernel_size": [3, 3], "strides": [2, 2], "padding": "valid",
                                 "data_format": "channels_last", "dilation_rate": [1, 1], "activation": "linear",
                                 "use_bias": False}, ["pad"]),
        layer("bn", "BatchNormalization", {"axis": -1, "epsilon": 0.001, "center": True, "scale": True}, ["conv"]),
        layer("relu", "ReLU", {"max_value": 6, "negative_slope": 0, "threshold": 0}, ["bn"]),
        layer("dw", "DepthwiseConv2D", {"kernel_size": [3, 3], "strides": [1, 1], "padding": "same",
                                        "data_format": "channels_last", "dilation_rate": [1, 1],
                                        "activation": "linear", "use_bias": False, "depth_multiplier": 1}, ["relu"]),
        layer("add", "Add", {}, ["relu", "dw"]),
        layer("pool", "AveragePooling2D", {"pool_size": [4, 4], "padding": "valid", "strides": [4, 4],
                                           "data_format": "channels_last"}, ["add"]),
        layer("flat", "Flatten", {"data_format": "channels_last"}, ["pool"]),
        layer("dense", "Dense", {"units": 2, "activation": "relu", "use_bias": True}, ["flat"]),
        layer("drop", "Dropout", {"rate": 0.5}, ["dense"]),
    ]
    weights = [("conv/kernel", [3, 3, 3, 2]), ("bn/gamma", [2]), ("bn/beta", [2]), ("bn/moving_mean", [2]),
               ("bn/moving_variance", [2]), ("dw/depthwise_kernel", [3, 3, 2, 1]), ("dense/kernel", [2, 2]),
               ("dense/bias", [2])]
    manifest, shard = [], b""
    for name, shape in weights:
        n = 1
        for d in shape:
            n *= d
        spec = {"name": name, "shape": shape, "dtype": "float32"}
        if quantised == "uint8":
            spec["quantization"] = {"min": -1.0, "scale": 0.01, "dtype": "uint8"}
            shard += bytes((i * 37) % 256 for i in range(n))
        elif quantised == "uint16":
            spec["quantization"] = {"min": -1.0, "scale": 0.0001, "dtype": "uint16"}
            shard += b"".join(struct.pack("<H", (i * 997) % 65536) for i in range(n))
        else:
            shard += f32(*[0.5 + 0.01 * i for i in range(n)])
        manifest.append(spec)
    model = {"modelTopology": {"keras_version": "2.2.4", "backend": "tensorflow",
                               "model_config": {"class_name": "Model", "config": {
                                   "name": "tiny", "layers": layers, "input_layers": [["input_1", 0, 0]],
                                   "output_layers": [["drop", 0, 0]]}}},
             "weightsManifest": [{"paths": ["group1-shard1of1"], "weights": manifest}]}
    return json.dumps(model, separators=(",", ":")).encode() + SEP + shard


for q in ("float32", "uint8", "uint16"):
    put("tfjs_model", "tiny_" + q, tfjs(q))


# ---- images
def png(width, height, color_type, depth, rows, extra=b""):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)) +
            extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


put("image", "gray.png", png(4, 3, 0, 8, [bytes(range(i * 4, i * 4 + 4)) for i in range(3)]))
put("image", "rgb.png", png(3, 2, 2, 8, [bytes(range(9)), bytes(range(9, 18))]))
put("image", "rgba.png", png(2, 2, 6, 8, [bytes(range(8)), bytes(range(8, 16))]))
put("image", "gray_alpha.png", png(2, 2, 4, 8, [bytes(range(4)), bytes(range(4, 8))]))
put("image", "gray16.png", png(2, 2, 0, 16, [b"\x12\x34\xff\x00", b"\x00\x01\x80\x80"]))
put("image", "palette_trns.png", png(2, 2, 3, 8, [b"\x00\x01", b"\x01\x00"],
                                     chunk(b"PLTE", b"\xff\x00\x00\x00\xff\x00") + chunk(b"tRNS", b"\x80")))
put("image", "rgb.bmp", b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54) +
    struct.pack("<IiiHHIIiiII", 40, 2, 2, 1, 24, 0, 16, 2835, 2835, 0, 0) + bytes(range(6)) + b"\0\0" + bytes(range(6, 12)) + b"\0\0")
put("image", "gray.pgm", b"P5\n3 2\n255\n" + bytes(range(6)))
put("image", "rgb.ppm", b"P6\n2 2\n255\n" + bytes(range(12)))
tiff_entries = [(256, 3, 1, 2), (257, 3, 1, 2), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8 + 2 + 12 * 9 + 4),
                (277, 3, 1, 1), (278, 3, 1, 2), (279, 4, 1, 4)]
tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tiff_entries))
for tag, typ, count, value in tiff_entries:
    tiff += struct.pack("<HHII", tag, typ, count, value) if typ == 4 else struct.pack("<HHIHH", tag, typ, count, value, 0)
put("image", "gray.tif", tiff + struct.pack("<I", 0) + bytes([10, 20, 30, 40]))
jpeg = os.path.join(SHARED, "fixtures", "inctrl", "preprocess", "cifar_cat_0000.jpg")
if os.path.exists(jpeg):
    shutil.copyfile(jpeg, os.path.join(ROOT, "corpus", "image", "cifar_cat.jpg"))
# A lossless 1x1 WebP (VP8L), as libwebp encodes it.
put("image", "one.webp", base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA=="))

# ---- gad serve requests: selector byte (route + 3 * kind), then parts
small_png = png(2, 2, 2, 8, [bytes(range(6)), bytes(range(6, 12))])
b64 = base64.b64encode(small_png).decode()
put("serve_request", "json_register", bytes([0]) + json.dumps({"class": "bottle", "images": [b64, {"name": "a.png", "data": b64}]}).encode())
put("serve_request", "json_calibrate", bytes([2]) + json.dumps({"far": 0.05, "images": [b64]}).encode())
put("serve_request", "multipart_register", bytes([0 + 3]) + SEP.join([b"class\n\nbottle", b"images\na.png\n" + small_png,
                                                                     b"images\nb.bmp\n" + open(os.path.join(ROOT, "corpus", "image", "rgb.bmp"), "rb").read()]))
put("serve_request", "multipart_calibrate", bytes([2 + 3]) + SEP.join([b"far\n\n0.01", b"image\nn.pgm\n" + b"P5\n3 2\n255\n" + bytes(range(6))]))
put("serve_request", "raw_score", bytes([1 + 6]) + b"image/png" + SEP + small_png)
put("serve_request", "raw_octet_score", bytes([1 + 6]) + b"application/octet-stream; charset=x" + SEP + open(os.path.join(ROOT, "corpus", "image", "gray.tif"), "rb").read())

# ---- .gadref sets (fingerprint of the fuzz target's backbone)
def gadref(meta, k=1, views=1):
    g = f32(*([0.5] * (4 * k * views)))
    return safetensors([("bank.0", "F32", [k * views * 4, 3], f32(*([0.1] * (12 * k * views)))),
                        ("bank.1", "F32", [k * views * 4, 2], f32(*([0.2] * (8 * k * views)))),
                        ("globals", "F32", [k * views, 4], g), ("text_prior", "F32", [2, 4], f32(*([0.3] * 8)))],
                       {"gad": json.dumps(meta)})


base_meta = {"format": "gad-refset-1", "class_name": "bottle", "k": 1, "backbone_kind": "lite",
             "backbone_fingerprint": "fuzz-backbone", "backbone": "fuzz backbone", "preprocessing": "lite-bilinear",
             "scorer": "inctrl", "views": 1, "sources": [{"path": "a.png", "sha256": "00" * 32}]}
put("gadref", "inctrl", gadref(base_meta))
put("gadref", "calibrated", gadref(dict(base_meta, threshold={"value": 0.4, "far": 0.05, "method": "quantile", "n": 20})))
put("gadref", "anomalydino_views", gadref(dict(base_meta, scorer="anomalydino", views=2, k=2), k=2, views=2))

# ---- label CSV (selector 0) and JSON training lists (selector 1; image paths that exist next to it)
put("lists", "labels.csv", b"\x00" + b'\xef\xbb\xbfpath,label\r\na.png,0\n"Part, rev B/a ""q"".png",1\n\nc.png,anomalous\n')
put("lists", "multiline.csv", b"\x00" + b'"a\nb",1\n"x",""\n')
put("lists", "train.json", b"\x01" + json.dumps([{"image_path": "train.json", "target": 0, "type": "candle"},
                                                 {"image_path": ".", "target": 1, "type": "candle"},
                                                 {"image_path": "/", "target": 0, "type": "pcb_1"},
                                                 {"image_path": "train.json", "target": 0, "type": "pcb_1"}]).encode())

# ---- tokenizer: class names and prompts
for i, text in enumerate(["a photo of a damaged bottle.", "metal_nut &amp; screw", "  Über   Straße\tカメラ 😀 ",
                          "a &lt;b&gt; &#x41; &nbsp; text's won't", "x" * 300]):
    put("tokenizer", "text%d" % i, text.encode())
