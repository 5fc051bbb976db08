"""Darknet interop against darknet's own rules: cfg arithmetic, .weights layout, maxpool and region-layer formulas.

The expectations here are computed independently of betterconv: a small cfg reader and darknet's size arithmetic
(parser.c, convolutional_layer.c, maxpool_layer.c), random .weights files laid out as darknet's
`load_convolutional_weights` reads them, and plain-loop transcriptions of `forward_maxpool_layer` and of
`get_region_box` / `get_region_boxes` (region_layer.c).
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from betterconv.errors import BetterConvError
from betterconv.interop.darknet import (
    DarknetModel, darknet_convolutions, from_darknet, load_darknet_weights, save_darknet_weights,
)
from betterconv.models.darknet import DarknetMaxPool, darknet19
from betterconv.models.yolov2 import yolov2, yolov2_tiny
from betterconv.tasks.region import decode_region

from conftest import DARKNET_DIR, cfg_facts, count_params, read_sections

CFGS = sorted(p.name for p in DARKNET_DIR.glob("*.cfg")) if DARKNET_DIR.is_dir() else []
needs_cfg = pytest.mark.skipif(not CFGS, reason=f"darknet cfg files not found at {DARKNET_DIR}")


# --- .weights files laid out as darknet reads them (the cfg reader, `cfg_facts`, is in conftest.py) -------------------

def random_weights(convs, seed: int = 0) -> list[np.ndarray]:
    """Per conv, in darknet's file order: biases, [scales, rolling_mean, rolling_variance], weights."""
    rng = np.random.default_rng(seed)

    def normal(n: int, std: float) -> np.ndarray:
        return rng.standard_normal(n, dtype=np.float32) * np.float32(std)

    def uniform(n: int, low: float, high: float) -> np.ndarray:  # variances must be positive
        return rng.random(n, dtype=np.float32) * np.float32(high - low) + np.float32(low)

    out = []
    for n, cin, k, bn in convs:
        fan_in = cin * k * k
        out.append(normal(n, 0.1))
        if bn:
            out += [uniform(n, 0.5, 1.5), normal(n, 0.1), uniform(n, 0.5, 2.0)]
        out.append(normal(n * fan_in, math.sqrt(1.0 / fan_in)))
    return [a.astype("<f4") for a in out]


def weights_bytes(arrays, header=(0, 1, 0), seen=12345) -> bytes:
    major, minor, _ = header
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    head = struct.pack("<3i", *header) + struct.pack("<Q" if wide else "<i", seen)
    return head + b"".join(a.tobytes() for a in arrays)


# --- every cfg builds, with the cfg's costs ------------------------------------------------------------------------

@needs_cfg
@pytest.mark.parametrize("name", CFGS)
def test_every_cfg_builds_with_its_costs(name) -> None:
    path = DARKNET_DIR / name
    facts = cfg_facts(path)
    with torch.device("meta"):
        model = from_darknet(path)
    assert model.num_params == facts["params"] == count_params(model)
    assert model.macs == facts["macs"]
    assert model.bflops == pytest.approx(2 * facts["macs"] / 1e9)
    h, w = facts["size"]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(torch.empty(1, model.in_channels, h, w, device="meta"))
    assert counter.get_total_flops() // 2 == facts["macs"]  # the built modules do exactly the cfg's convolutions
    assert len(darknet_convolutions(model)) == len(facts["convs"])
    sections = dict(read_sections(path))
    if "region" in sections:
        assert out.shape == (1, *facts["shape"])
        region = sections["region"]
        anchors = [float(v) for v in region["anchors"].split(",")]
        assert model.region.anchors == tuple(zip(anchors[::2], anchors[1::2]))
        assert model.anchors.shape == (int(region["num"]), 2)
        assert (model.region.classes, model.region.num, model.region.softmax) == (
            int(region["classes"]), int(region["num"]), bool(int(region["softmax"])))
        assert model.region.thresh == float(region["thresh"])
    else:  # a classifier: logits, the softmax's input
        assert "softmax" in sections and out.shape == (1, facts["shape"][0])


def test_yolov2_voc_figures() -> None:
    """The published figures for yolov2-voc.cfg: 50.66 M parameters, darknet's 29.36 BFLOPs at 416x416."""
    if "yolov2-voc.cfg" not in CFGS:
        pytest.skip(f"darknet cfg files not found at {DARKNET_DIR}")
    with torch.device("meta"):
        model = from_darknet(DARKNET_DIR / "yolov2-voc.cfg")
    assert round(model.num_params / 1e6, 2) == 50.66 and round(model.bflops, 2) == 29.36
    assert [i.kind for i in model.layer_info[23:]] == ["convolutional"] * 2 + [
        "route", "convolutional", "reorg", "route", "convolutional", "convolutional", "region"]
    assert model.layer_info[27].out_shape == (256, 13, 13) and model.layer_info[28].out_shape == (1280, 13, 13)


# --- the same .weights file in a from_darknet model and a native model --------------------------------------------

COCO_ANCHORS = ((0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434), (7.88282, 3.52778), (9.77052, 9.16828))
NATIVE = [
    ("darknet19.cfg", darknet19, {}),
    ("yolov2-voc.cfg", yolov2, {}),
    ("yolov2.cfg", yolov2, {"num_classes": 80, "anchors": COCO_ANCHORS}),
    ("yolov2-tiny-voc.cfg", yolov2_tiny, {}),
]


@needs_cfg
@pytest.mark.parametrize("cfg, builder, kwargs", NATIVE, ids=[c[0] for c in NATIVE])
def test_same_weights_same_output_as_native(tmp_path, cfg, builder, kwargs) -> None:
    path = DARKNET_DIR / cfg
    data = weights_bytes(random_weights(cfg_facts(path)["convs"]), header=(0, 1, 0), seen=64000)
    weights = tmp_path / "random.weights"
    weights.write_bytes(data)
    ours = from_darknet(path, weights).eval()
    native = builder(**kwargs).eval()
    header = load_darknet_weights(native, weights)
    assert (header.version, header.seen, header.size) == ((0, 1, 0), 64000, 16)
    if hasattr(native, "anchors"):
        assert torch.equal(ours.anchors, native.anchors)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ours(x), native(x)
    assert a.shape == b.shape
    assert a.abs().max() > 1e-2 and a.std() > 1e-3  # a live signal, not zeros
    assert (a - b).abs().max().item() <= 1e-5
    # the native model's darknet order, written back, is the very file it was read from
    saved = tmp_path / "native.weights"
    save_darknet_weights(native, saved, header=header.version, seen=header.seen)
    assert saved.read_bytes() == data


# --- headers, round trips and broken files on a small cfg ---------------------------------------------------------

SMALL_CFG = """\
[net]
height=32
width=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=16
size=3
groups=2
stride=2
padding=1
activation=relu

[route]
layers=-3

[convolutional]
batch_normalize=1
filters=16
size=1
activation=logistic

[reorg]
stride=4

[route]
layers=-1,2

[convolutional]
filters=14
size=1
activation=linear

[region]
anchors=1,2, 3,4
classes=2
num=2
softmax=1
"""


@pytest.fixture
def small_cfg(tmp_path) -> Path:
    path = tmp_path / "small.cfg"
    path.write_text(SMALL_CFG)
    return path


def test_small_cfg_layout(small_cfg) -> None:
    facts = cfg_facts(small_cfg)
    assert facts["convs"] == [(8, 3, 3, 1), (16, 4, 3, 0), (16, 8, 1, 1), (14, 272, 1, 0)]
    model = from_darknet(small_cfg).eval()
    assert model.num_params == facts["params"] == count_params(model)
    assert model.macs == facts["macs"]
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 14, 8, 8)
    assert [i.out_shape for i in model.layer_info] == [
        (8, 32, 32), (8, 16, 16), (16, 8, 8), (8, 32, 32), (16, 32, 32), (256, 8, 8), (272, 8, 8), (14, 8, 8),
        (14, 8, 8)]


@pytest.mark.parametrize("header, seen, size", [((0, 1, 0), 7, 16), ((0, 2, 0), 2**40 + 3, 20), ((1, 0, 5), 9, 20),
                                                ((1000, 2, 0), 11, 16)])
def test_headers_and_byte_identical_round_trip(tmp_path, small_cfg, header, seen, size) -> None:
    arrays = random_weights(cfg_facts(small_cfg)["convs"], seed=1)
    data = weights_bytes(arrays, header=header, seen=seen)
    path = tmp_path / "w.weights"
    path.write_bytes(data)
    model = from_darknet(small_cfg)
    got = load_darknet_weights(model, path)
    assert (got.version, got.seen, got.size) == (header, seen, size)
    first = model.layers[0]  # biases, scales, rolling mean, rolling variance, weights
    assert np.array_equal(first.bn.bias.detach().numpy(), arrays[0])
    assert np.array_equal(first.bn.weight.detach().numpy(), arrays[1])
    assert np.array_equal(first.bn.running_mean.numpy(), arrays[2])
    assert np.array_equal(first.bn.running_var.numpy(), arrays[3])
    assert np.array_equal(first.conv.weight.detach().numpy().ravel(), arrays[4])
    grouped = model.layers[2].conv  # no batch norm: biases, then weights (n * c / groups * k * k)
    assert np.array_equal(grouped.bias.detach().numpy(), arrays[5])
    assert np.array_equal(grouped.weight.detach().numpy().ravel(), arrays[6])
    out = tmp_path / "out" / "again.weights"
    save_darknet_weights(model, out, header=got.version, seen=got.seen)
    assert out.read_bytes() == data
    assert [p.name for p in out.parent.iterdir()] == ["again.weights"]  # no temporary file left behind


def test_forward_input_errors(small_cfg) -> None:
    model = from_darknet(small_cfg).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 48)).shape == (1, 14, 16, 12)  # any size the cfg's arithmetic allows
        with pytest.raises(BetterConvError, match=r"small: layer 5 \(\[reorg\] stride=4\) cannot split its 16x34x34 "
                                                  r"input, so a 34x34 input does not fit this cfg"):
            model(torch.randn(1, 3, 34, 34))
        with pytest.raises(BetterConvError, match=r"expects a \(B, 3, H, W\) input, got \(1, 4, 32, 32\)"):
            model(torch.randn(1, 4, 32, 32))
        with pytest.raises(BetterConvError, match=r"\[route\] layer 6 joins layers \[5, 2\] whose spatial sizes "
                                                  r"differ for this input: \(8, 8\), \(4, 4\)"):
            model.layers[6]([torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4)])


def test_save_defaults_to_darknets_header(tmp_path, small_cfg) -> None:
    model = from_darknet(small_cfg)
    path = tmp_path / "w.weights"
    save_darknet_weights(model, path)
    data = path.read_bytes()
    assert struct.unpack_from("<3iQ", data) == (0, 2, 0, 0)
    assert len(data) == 20 + 4 * count_params(model) + 4 * 2 * (8 + 16)  # + BN mean and var
    with pytest.raises(BetterConvError, match="int32"):
        save_darknet_weights(model, path, header=(0, 1, 0), seen=2**31)


@pytest.mark.parametrize("change, found", [(-4, "found {n_minus_1}$"), (8, "found {n_plus_2}$"),
                                           (2, "found {n} and 2 stray bytes$")])
def test_wrong_size_files(tmp_path, small_cfg, change, found) -> None:
    data = weights_bytes(random_weights(cfg_facts(small_cfg)["convs"]))
    n = (len(data) - 16) // 4
    path = tmp_path / "bad.weights"
    path.write_bytes(data[:change] if change < 0 else data + bytes(change))
    message = found.format(n=n, n_minus_1=n - 1, n_plus_2=n + 2)
    with pytest.raises(BetterConvError, match=rf"darknet weights .*bad\.weights .*expected {n} float32 values after "
                                              rf"its 16-byte header, {message}") as info:
        from_darknet(small_cfg, path)
    assert "\n" not in str(info.value)


def test_unusable_weights_inputs(tmp_path, small_cfg) -> None:
    path = tmp_path / "tiny.weights"
    path.write_bytes(struct.pack("<2i", 0, 2))
    with pytest.raises(BetterConvError, match="8 bytes, too short for a header"):
        from_darknet(small_cfg, path)
    path.write_bytes(struct.pack("<4i", 0, 2, 0, 0))
    with pytest.raises(BetterConvError, match="16 bytes, too short for its 20-byte header"):
        from_darknet(small_cfg, path)
    with pytest.raises(BetterConvError, match="cannot read darknet weights"):
        from_darknet(small_cfg, tmp_path / "missing.weights")
    with pytest.raises(BetterConvError, match="cannot map darknet weights onto a Linear"):
        load_darknet_weights(torch.nn.Linear(2, 2), path)


def test_native_tiny_rejects_coco_tiny_weights(tmp_path) -> None:
    """yolov2-tiny.cfg (COCO) ends conv 1024 -> conv 512, unlike the native yolov2_tiny: the count says so."""
    if "yolov2-tiny.cfg" not in CFGS:
        pytest.skip(f"darknet cfg files not found at {DARKNET_DIR}")
    path = tmp_path / "coco-tiny.weights"
    path.write_bytes(weights_bytes(random_weights(cfg_facts(DARKNET_DIR / "yolov2-tiny.cfg")["convs"])))
    with pytest.raises(BetterConvError, match=r"TinyYOLOv2's 9 convolutions: expected \d+ float32 values"):
        load_darknet_weights(yolov2_tiny(num_classes=80), path)


# --- cfg parsing -------------------------------------------------------------------------------------------------

def test_cfg_whitespace_comments_and_aliases(tmp_path) -> None:
    text = ("# a comment\r\n[net]\r\n  height = 3 2\r\nwidth\t=32\r\n; another comment\r\nchannels=3\r\n"
            "[conv]\r\nfilters = 4\r\nsize=3\r\npad=1\r\nactivation = leaky\r\nfilters=99\r\n"
            "[max]\r\nsize=2\r\nstride=2\r\n[avg]\r\n[soft]\r\n")
    path = tmp_path / "loose.cfg"
    path.write_bytes(text.encode())
    model = from_darknet(path).eval()
    assert model.input_size == (32, 32)
    assert model.layers[0].conv.out_channels == 4  # the first value of a repeated key wins, as in darknet
    assert model.layers[0].conv.bias is not None and isinstance(model.layers[0].act, torch.nn.LeakyReLU)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4) and model.num_classes == 4


CFG_ERRORS = [  # (cfg text, line, message)
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\n\n[shortcut]\nfrom=-2\n",
     9, r"unsupported section \[shortcut\] \(supported: convolutional, maxpool"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nsize=3\n", 5, r"\[convolutional\] needs filters="),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\nactivation=mish\n",
     8, r"activation=mish is not supported \(supported: leaky, linear, relu, logistic\)"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=x4\nsize=3\n", 6, "filters=x4 is not an int"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\ndilation=2\n",
     8, "dilation=2 is not supported"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\ngroups=2\n",
     8, r"groups=2 must divide both the input channels \(3\) and filters=4"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\n[route]\nlayers=-2\n",
     9, "-2 does not name an earlier layer"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\n[maxpool]\nsize=2\nstride=2\n"
     "[route]\nlayers=0,1\n", 12, r"different spatial sizes \(layer 0: 30x30, layer 1: 15x15\)"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=12\nsize=1\n[region]\nanchors=1,1\n"
     "classes=2\nnum=1\n", 8, r"input has 12 channels but num=1, classes=2 need num \* \(4 \+ 1 \+ classes\) = 7"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=7\nsize=1\n[region]\nanchors=1,1,2\n"
     "classes=2\nnum=1\n", 9, "anchors= must be 2 positive numbers for num=1, got 3 values"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=1\n[softmax]\n[convolutional]\n"
     "filters=4\nsize=1\n", 9, r"\[convolutional\] after \[softmax\] \(line 8\) is not supported"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional]\nfilters=4\nsize=3\n[reorg]\nstride=3\n",
     9, "stride=3 needs channels divisible by 9"),
    ("[convolutional]\nfilters=4\nsize=3\n", 1, r"the first section must be \[net\], got \[convolutional\]"),
    ("[net]\nheight=32\nchannels=3\n", 1, r"\[net\] needs width="),
    ("filters=4\n[net]\n", 1, "option 'filters' comes before the first"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\nbogus line\n", 5, "expected key=value or \\[section\\], got 'bogusline'"),
    ("[net]\nheight=32\nwidth=32\nchannels=3\n[convolutional\n", 5, "malformed section header"),
]


@pytest.mark.parametrize("text, line, message", CFG_ERRORS, ids=[f"line{c[1]}-{i}" for i, c in enumerate(CFG_ERRORS)])
def test_cfg_errors_name_file_and_line(tmp_path, text, line, message) -> None:
    path = tmp_path / "broken.cfg"
    path.write_text(text)
    with pytest.raises(BetterConvError, match=rf"^darknet cfg {path}, line {line}: .*{message}") as info:
        from_darknet(path)
    assert "\n" not in str(info.value)


def test_missing_cfg(tmp_path) -> None:
    with pytest.raises(BetterConvError, match="cannot read darknet cfg .*nope.cfg"):
        from_darknet(tmp_path / "nope.cfg")


# --- darknet's maxpool with an explicit padding -----------------------------------------------------------------

def darknet_maxpool(x: torch.Tensor, size: int, stride: int, pad: int) -> torch.Tensor:
    """maxpool_layer.c: out = (w + pad - size) / stride + 1, windows start at -pad / 2, outside reads are -FLT_MAX."""
    _, _, h, w = x.shape
    oh, ow = (h + pad - size) // stride + 1, (w + pad - size) // stride + 1
    out = torch.empty(x.shape[0], x.shape[1], oh, ow)
    for i in range(oh):
        for j in range(ow):
            best = torch.full(x.shape[:2], -3.4028234663852886e38)
            for n in range(size):
                for m in range(size):
                    y, xx = -(pad // 2) + i * stride + n, -(pad // 2) + j * stride + m
                    if 0 <= y < h and 0 <= xx < w:
                        best = torch.maximum(best, x[:, :, y, xx])
            out[:, :, i, j] = best
    return out


@pytest.mark.parametrize("size, stride, pad, hw", [(2, 2, None, (7, 6)), (2, 1, None, (5, 5)), (3, 2, 2, (7, 8)),
                                                   (3, 2, 0, (7, 8)), (2, 2, 0, (7, 7)), (3, 1, 2, (4, 5)),
                                                   (5, 3, 4, (9, 10)), (3, 3, 1, (8, 7))])
def test_maxpool_padding_matches_darknet(size, stride, pad, hw) -> None:
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(3))
    pool = DarknetMaxPool(size, stride) if pad is None else DarknetMaxPool(size, stride, pad)
    assert torch.equal(pool(x), darknet_maxpool(x, size, stride, size - 1 if pad is None else pad))


# --- region decoding ----------------------------------------------------------------------------------------------

def region_reference(raw, anchors, classes, img_w, img_h, softmax=True, thresh=None):
    """region_layer.c for one image: get_region_box and get_region_boxes' loop, with plain floats."""
    def logistic(v):
        return 1.0 / (1.0 + math.exp(-v))

    n_anchors = len(anchors)
    _, lh, lw = raw.shape
    size = 5 + classes
    boxes, scores = [], []
    for i in range(lw * lh):
        row, col = i // lw, i % lw
        for n in range(n_anchors):  # darknet's index = i * l.n + n
            def entry(k):
                return float(raw[n * size + k, row, col])
            bx = (col + logistic(entry(0))) / lw
            by = (row + logistic(entry(1))) / lh
            bw = math.exp(entry(2)) * anchors[n][0] / lw
            bh = math.exp(entry(3)) * anchors[n][1] / lh
            scale = logistic(entry(4))
            logits = [entry(5 + j) for j in range(classes)]
            if softmax:
                top = max(logits)
                e = [math.exp(v - top) for v in logits]
                probs = [v / sum(e) for v in e]
            else:
                probs = [logistic(v) for v in logits]
            p = [scale * q for q in probs]
            if thresh is not None:
                p = [q if q > thresh else 0.0 for q in p]
            boxes.append([(bx - bw / 2) * img_w, (by - bh / 2) * img_h, (bx + bw / 2) * img_w, (by + bh / 2) * img_h])
            scores.append(p)
    return torch.tensor(boxes, dtype=torch.float64), torch.tensor(scores, dtype=torch.float64)


@pytest.mark.parametrize("softmax, thresh", [(True, None), (False, None), (True, 0.1)])
def test_decode_region_matches_darknet(softmax, thresh) -> None:
    anchors, classes, h, w = [(1.0, 1.5), (2.5, 0.75)], 3, 2, 3
    raw = torch.randn(2, len(anchors) * (5 + classes), h, w, generator=torch.Generator().manual_seed(5),
                      dtype=torch.float64)
    out = decode_region(raw, anchors, classes, (64, 96), softmax=softmax, thresh=thresh)
    assert out.boxes.shape == (2, h * w * 2, 4) and out.scores.shape == (2, h * w * 2, classes)
    for b in range(2):
        boxes, scores = region_reference(raw[b], anchors, classes, img_w=96, img_h=64, softmax=softmax, thresh=thresh)
        assert torch.allclose(out.boxes[b], boxes, rtol=0, atol=1e-9)
        assert torch.allclose(out.scores[b], scores, rtol=0, atol=1e-12)
    unthresholded = out.objectness[..., None] * out.class_probs
    if thresh is None:
        assert torch.allclose(out.scores, unthresholded)
    else:
        assert (out.scores == 0).any() and torch.equal(out.scores > 0, unthresholded > thresh)


def test_decode_region_errors_and_float32() -> None:
    raw = torch.zeros(1, 2 * 7, 1, 1)
    out = decode_region(raw, torch.tensor([[1.0, 1.0], [2.0, 4.0]]), 2, 32)
    # zeros: centre of the single cell, anchors scaled to the image, objectness 0.5, uniform classes
    assert torch.allclose(out.boxes[0], torch.tensor([[0.0, 0.0, 32.0, 32.0], [-16.0, -48.0, 48.0, 80.0]]))
    assert torch.allclose(out.scores, torch.full((1, 2, 2), 0.25)) and out.boxes.dtype == torch.float32
    with pytest.raises(BetterConvError, match=r"region input must be \(B, 14, H, W\) for 2 anchors and 2 classes"):
        decode_region(torch.zeros(1, 15, 1, 1), [(1, 1), (2, 2)], 2, 32)
    with pytest.raises(BetterConvError, match="anchors must have shape"):
        decode_region(raw, [1.0, 2.0], 2, 32)
    with pytest.raises(BetterConvError, match="num_classes"):
        decode_region(raw, [(1, 1), (2, 2)], 0, 32)


@needs_cfg
def test_decode_from_darknet_model() -> None:
    model = from_darknet(DARKNET_DIR / "yolov2-tiny-voc.cfg").eval()
    with torch.no_grad():
        raw = model(torch.randn(1, 3, 64, 64))
    region = model.region
    out = decode_region(raw, model.anchors, region.classes, 64, softmax=region.softmax)
    assert out.scores.shape == (1, 2 * 2 * 5, 20)
    assert torch.allclose(out.class_probs.sum(-1), torch.ones(1, 20))
    assert isinstance(model, DarknetModel)
