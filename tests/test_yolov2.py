"""Darknet-19 and YOLOv2 against darknet itself: reorg index arithmetic, cfg-file arithmetic, shapes and errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from betterconv.errors import BetterConvError
from betterconv.layers import darknet_reorg
from betterconv.models.darknet import DarknetMaxPool, darknet19
from betterconv.models.yolov2 import TINY_VOC_ANCHORS, VOC_ANCHORS, yolov2, yolov2_tiny

from conftest import DARKNET_DIR, cfg_facts, count_macs, count_params, read_sections

needs_cfg = pytest.mark.skipif(not DARKNET_DIR.is_dir(), reason=f"darknet cfg files not found at {DARKNET_DIR}")


def reorg_cpu(x: list[float], w: int, h: int, c: int, batch: int, stride: int, forward: int) -> list[float]:
    """darknet's src/blas.c reorg_cpu, transcribed."""
    out = [0.0] * len(x)
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2 = k % out_c
                    offset = k // out_c
                    w2 = i * stride + offset % stride
                    h2 = j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    if forward:
                        out[out_index] = x[in_index]
                    else:
                        out[in_index] = x[out_index]
    return out


def test_reorg_matches_darknet() -> None:
    b, c, h, w, s = 2, 8, 4, 6, 2
    x = torch.randn(b, c, h, w)
    # darknet's reorg layer calls reorg_cpu(input, l.w, l.h, l.c, batch, stride, 0, output) with the input's sizes
    ref = torch.tensor(reorg_cpu(x.flatten().tolist(), w, h, c, b, s, forward=0)).view(b, c * s * s, h // s, w // s)
    out = darknet_reorg(x, s)
    assert out.shape == ref.shape
    assert torch.equal(out, ref)
    assert not torch.equal(out, F.pixel_unshuffle(x, s))


def test_darknet_maxpool() -> None:
    x = torch.randn(1, 2, 13, 13)
    same = DarknetMaxPool(2, 1)(x)  # tiny YOLOv2's size-keeping pool: pads one -inf row/column after
    assert same.shape == x.shape
    assert torch.equal(same, F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 2, 1))
    assert torch.equal(same[..., -1, -1], x[..., -1, -1])
    half = DarknetMaxPool(2, 2)(x)  # (13 + 1 - 2) // 2 + 1 = 7
    assert half.shape[-2:] == (7, 7)
    assert torch.equal(half[..., :6, :6], F.max_pool2d(x, 2, 2))
    assert torch.equal(half[..., -1, -1], x[..., -1, -1])


# --- cfg arithmetic ---------------------------------------------------------------------------------------------

CASES = [  # builder, kwargs, cfg; each checked at the cfg's own input size
    (darknet19, {}, "darknet19.cfg"),
    (yolov2, {}, "yolov2-voc.cfg"),
    (yolov2, {"num_classes": 80, "anchors": ((0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434),
                                             (7.88282, 3.52778), (9.77052, 9.16828))}, "yolov2.cfg"),
    (yolov2_tiny, {}, "yolov2-tiny-voc.cfg"),
]


@needs_cfg
@pytest.mark.parametrize("builder, kwargs, cfg", CASES, ids=[c[2] for c in CASES])
def test_cost_matches_cfg(builder, kwargs, cfg) -> None:
    facts = cfg_facts(DARKNET_DIR / cfg)
    height, width = facts["size"]
    assert height == width
    with torch.device("meta"):
        model = builder(**kwargs)
    assert count_params(model) == facts["params"]
    assert count_macs(model, height) == facts["macs"]


@needs_cfg
def test_darknet19_body_params() -> None:
    with torch.device("meta"):
        body = darknet19(num_classes=None)
    assert count_params(body) == cfg_facts(DARKNET_DIR / "darknet19.cfg")["params"] - (1024 * 1000 + 1000)


def test_published_costs() -> None:
    with torch.device("meta"):
        d19, v2 = darknet19(), yolov2()
    assert round(count_params(d19) / 1e6, 2) == 20.84
    assert round(count_macs(d19, 224) / 1e9, 2) == 2.79  # §3: "5.58 billion operations" (FLOPs)
    assert round(count_params(v2) / 1e6, 2) == 50.66
    assert round(count_macs(v2, 416) / 1e9, 2) == 14.68  # darknet's BFLOPs are 2 x MACs: 29.36


@needs_cfg
@pytest.mark.parametrize("cfg, anchors", [("yolov2-voc.cfg", VOC_ANCHORS), ("yolov2-tiny-voc.cfg", TINY_VOC_ANCHORS)])
def test_default_anchors_match_cfg(cfg, anchors) -> None:
    region = dict(read_sections(DARKNET_DIR / cfg))["region"]
    values = [float(v) for v in region["anchors"].split(",")]
    assert list(zip(values[::2], values[1::2])) == list(anchors)


# --- shapes and errors ------------------------------------------------------------------------------------------------

def test_darknet19_shapes_and_features() -> None:
    model = darknet19(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        features = model.forward_features(x)
    assert [(f.name, f.channels, f.reduction) for f in model.feature_info] == [
        ("stage1", 64, 2), ("stage2", 128, 4), ("stage3", 256, 8), ("stage4", 512, 16), ("stage5", 1024, 32)]
    for info in model.feature_info:
        assert features[info.name].shape == (2, info.channels, 64 // info.reduction, 96 // info.reduction)


@pytest.fixture(scope="module")
def yolo() -> torch.nn.Module:
    return yolov2().eval()


@pytest.mark.parametrize("h, w", [(64, 64), (96, 160)])
def test_yolov2_output_shape(yolo, h, w) -> None:
    with torch.no_grad():
        assert yolo(torch.randn(1, 3, h, w)).shape == (1, 5 * 25, h // 32, w // 32)
    assert yolo.anchors.shape == (5, 2)
    assert [f.reduction for f in yolo.feature_info] == [2, 4, 8, 16, 32]


def test_yolov2_tiny_and_custom_anchors() -> None:
    tiny = yolov2_tiny(num_classes=3, anchors=[(1, 2), (3, 4)]).eval()
    with torch.no_grad():
        assert tiny(torch.randn(1, 3, 96, 160)).shape == (1, 2 * 8, 3, 5)
    assert torch.equal(tiny.anchors, torch.tensor([[1.0, 2.0], [3.0, 4.0]]))


def test_yolov2_tiny_width_multiplier() -> None:
    widths = lambda m: [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)][:-1]  # noqa: E731
    full, half = yolov2_tiny(num_classes=80), yolov2_tiny(num_classes=80, width_mult=0.5)
    assert widths(half) == [w // 2 for w in widths(full)]  # 16, 32, ..., 512, 1024 -> 8, 16, ..., 256, 512
    assert half.pred.in_channels == 512 and half.pred.out_channels == full.pred.out_channels == 5 * 85
    with pytest.raises(BetterConvError, match="width_mult"):
        yolov2_tiny(width_mult=0.0)


def test_bad_inputs(yolo) -> None:
    with pytest.raises(BetterConvError, match=r"^yolov2 needs height and width divisible by 32, got 100x100$"):
        yolo(torch.randn(1, 3, 100, 100))
    with pytest.raises(BetterConvError, match="yolov2_tiny needs"):
        yolov2_tiny()(torch.randn(1, 3, 64, 48))
    for anchors in ([], [(1.0, -2.0)], [(1.0, 2.0, 3.0)], [(1.0, float("nan"))], 3.0):
        with pytest.raises(BetterConvError, match="anchors must be"):
            yolov2_tiny(anchors=anchors)
    with pytest.raises(BetterConvError, match="num_classes"):
        yolov2_tiny(num_classes=0)
