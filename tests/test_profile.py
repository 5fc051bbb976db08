import json
import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import betterconv
from betterconv.analysis import GLOBAL, memory_table, profile
from betterconv.errors import BetterConvError
from betterconv.layers import ASPP, BilinearUpsample, Reorg


def rows(p):
    return {r.name: r for r in p.layers}


@pytest.fixture(scope="module")
def v2():
    model = betterconv.create_model("mobilenet_v2").train()
    return model, profile(model)


def test_mobilenet_v2_params_macs_and_reports(v2):
    model, p = v2
    assert p.params == 3_504_872
    assert p.macs == pytest.approx(300.8e6, rel=1e-3) and p.flops == 2 * p.macs
    assert p.output_stride == 32 and p.receptive_field == GLOBAL
    assert all(m.training for m in model.modules())  # training flags restored
    d = json.loads(json.dumps(p.to_dict(), allow_nan=False))
    assert {"params", "macs", "flops", "output_stride", "receptive_field", "peak_activation_bytes",
            "measured_peak_activation_bytes", "input_size", "layers"} <= d.keys()
    assert d["receptive_field"] == "global" and d["input_size"] == [3, 224, 224]
    assert sum(r["macs"] for r in d["layers"]) == p.macs  # every MAC happens in a leaf module
    r = rows(p)
    assert r["stem.conv"].output_shape == (1, 32, 112, 112) and r["stem.conv"].receptive_field == 3
    assert r["blocks.1.depthwise.conv"].stride == 4 and r["blocks.1.depthwise.conv"].receptive_field == 11
    assert r["head.conv"].stride == 32 and r["pool"].receptive_field == GLOBAL
    table = p.format_table()
    assert "300.8M MACs" in table and "601.5M FLOPs" in table and "3,504,872" in table


def test_mobilenet_v2_activation_memory(v2):
    _, p = v2
    # the rule's peak is block 0 at 112x112 (stem row included): 32 channels in + 16 out, 16-bit
    assert p.peak_activation_bytes == (32 + 16) * 112 * 112 * 2
    # eager PyTorch materialises the expanded 96x112x112 tensor (and its batch-norm copy) in float32
    largest = 96 * 112 * 112 * 4
    assert p.measured_peak_activation_bytes >= largest + 3 * 224 * 224 * 4
    assert p.measured_peak_activation_bytes < sum(math.prod(r.output_shape) * 4 for r in p.layers)


def test_fcn_vgg16_receptive_field_is_404_at_fc7():
    torchvision = pytest.importorskip("torchvision")
    fcn = nn.Sequential(OrderedDict(
        features=torchvision.models.vgg16().features,
        fc6=nn.Conv2d(512, 4096, 7, padding=3), relu6=nn.ReLU(inplace=True),
        fc7=nn.Conv2d(4096, 4096, 1)))
    r = rows(profile(fcn, (3, 64, 64)))  # the receptive field does not depend on the input size
    assert r["features.30"].receptive_field == 212 and r["features.30"].stride == 32  # pool5
    assert r["fc6"].receptive_field == 404 and r["fc7"].receptive_field == 404  # FCN paper, Table 1
    assert r["fc7"].stride == 32


@pytest.mark.parametrize("d", [1, 2, 4, 6])
def test_dilated_conv_receptive_field(d):
    p = profile(nn.Conv2d(1, 1, 3, padding=d, dilation=d), (1, 32, 32))
    assert p.receptive_field == 2 * d + 1 and p.output_stride == 1


class TwoBranch(nn.Module):
    def __init__(self, merge: str) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3, padding=1)  # rf 3
        self.b = nn.Sequential(nn.Conv2d(1, 1, 3, padding=2, dilation=2), nn.Conv2d(1, 1, 5, padding=2))  # 5, 9
        self.merge = merge

    def forward(self, x):
        a, b = self.a(x), self.b(x)
        return a + b if self.merge == "add" else torch.cat([a, b], 1)


@pytest.mark.parametrize("merge", ["add", "cat"])
def test_branches_take_the_largest_receptive_field(merge):
    p = profile(TwoBranch(merge), (1, 32, 32))
    assert rows(p)["a"].receptive_field == 3 and p.receptive_field == 9


def test_aspp_receptive_field_and_image_pooling():
    assert profile(ASPP(4, 8, (6, 12, 18), image_pooling=False), (4, 33, 33)).receptive_field == 37
    assert profile(ASPP(4, 8, (6, 12, 18), image_pooling=True), (4, 33, 33)).receptive_field == GLOBAL


@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_mobilenet_v2_output_stride(output_stride):
    model = betterconv.create_model("mobilenet_v2", output_stride=output_stride)
    assert profile(model).output_stride == output_stride


def test_reorg_upsampling_and_flatten():
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 4, 3, 2, 1), reorg=Reorg(2)))
    r = rows(profile(net, (4, 32, 32)))
    assert (r["reorg"].receptive_field, r["reorg"].stride, r["reorg"].output_shape) == (3 + 2, 4, (1, 16, 8, 8))
    # transposed conv k=4, s=2 over jump 2: rf += (ceil(4/2) - 1) * 2, jump 2 -> 1
    net = nn.Sequential(OrderedDict(conv=nn.Conv2d(2, 2, 3, 2, 1), up=BilinearUpsample(2, 2, learnable=False)))
    r = rows(profile(net, (2, 16, 16)))
    assert (r["up"].receptive_field, r["up"].stride, r["up"].output_shape) == (5, 1, (1, 2, 16, 16))

    class Interp(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=4, mode="bilinear")

    p = profile(nn.Sequential(nn.Conv2d(1, 1, 4, 4), Interp()), (1, 16, 16))  # bilinear: one more input pixel
    assert p.receptive_field == 4 + 4 and p.output_stride == 4
    p = profile(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 8 * 8, 3)), (1, 8, 8))
    assert rows(p)["2"].receptive_field == GLOBAL  # a Linear over every position


def test_bad_input_size():
    with pytest.raises(BetterConvError):
        profile(nn.Conv2d(3, 3, 1), (224, 224))


KB = 1000


@pytest.fixture(scope="module")
def table():
    return memory_table()


def test_memory_table_cells_follow_the_rule(table):
    cols = {c.label: c for c in table.columns}
    v1, v2 = cols["MobileNetV1"], cols["MobileNetV2"]
    sn3, sn2 = cols["ShuffleNet 2x g=3"], cols["ShuffleNet 2x g=2"]
    b = {label: {s[0]: cell.bytes for s, cell in c.rows.items()} for label, c in cols.items()}
    # MobileNetV1: depthwise separable layers, input + output (the depthwise output is streamed)
    assert b["MobileNetV1"][112] == (32 + 64) * 112 * 112 * 2
    assert b["MobileNetV1"][56] == (128 + 128) * 56 * 56 * 2
    assert b["MobileNetV1"][28] == (256 + 256) * 28 * 28 * 2
    assert b["MobileNetV1"][7] == (1024 + 1024) * 7 * 7 * 2
    assert b["MobileNetV1"][1] == (1024 + 1000) * 2  # the classifier: pooled vector + logits
    # MobileNetV2: bottleneck input + output; the 6x expanded tensor is streamed
    assert b["MobileNetV2"][224] == (3 * 224 * 224 + 32 * 112 * 112) * 2  # the stem convolution
    assert b["MobileNetV2"][112] == (32 + 16) * 112 * 112 * 2
    assert b["MobileNetV2"][56] == (24 + 24) * 56 * 56 * 2
    assert b["MobileNetV2"][28] == (32 + 32) * 28 * 28 * 2 == 100_352  # the paper's "64/100"
    assert b["MobileNetV2"][14] == (96 + 96) * 14 * 14 * 2
    assert b["MobileNetV2"][7] == (320 + 1280) * 7 * 7 * 2  # the last 1x1 conv
    # ShuffleNet 2x: stem 48 channels, max pool at 112, then units of input + output
    assert b["ShuffleNet 2x g=3"][112] == (48 * 112 * 112 + 48 * 56 * 56) * 2
    assert b["ShuffleNet 2x g=3"][56] == (48 * 56 * 56 + 480 * 28 * 28) * 2
    assert b["ShuffleNet 2x g=3"][28] == (480 + 480) * 28 * 28 * 2
    assert b["ShuffleNet 2x g=2"][28] == (400 + 400) * 28 * 28 * 2
    # the max row (56x56 and below, as the paper's) and the peak over every row
    assert v1.max_bytes == 256 * 56 * 56 * 2 and v1.peak_bytes == 96 * 112 * 112 * 2
    assert v2.max_bytes == 48 * 56 * 56 * 2 and v2.peak_bytes == 48 * 112 * 112 * 2
    assert sn3.max_bytes == 960 * 28 * 28 * 2 and sn2.max_bytes == 800 * 28 * 28 * 2
    # the largest single tensor: how the paper's MobileNetV1 cells read (128x56x56x2 = its "800")
    assert v1.largest_tensor_bytes == 128 * 56 * 56 * 2 and sn2.largest_tensor_bytes == 400 * 28 * 28 * 2
    assert v2.largest_tensor_bytes == 24 * 56 * 56 * 2 and sn3.largest_tensor_bytes == 480 * 28 * 28 * 2


def test_memory_table_ordering_and_report(table):
    cols = {c.label: c for c in table.columns}
    assert cols["MobileNetV2"].max_bytes < cols["ShuffleNet 2x g=3"].max_bytes < cols["MobileNetV1"].max_bytes
    assert cols["MobileNetV2"].paper_max_bytes == 200 * KB and cols["MobileNetV1"].paper_max_bytes == 800 * KB
    assert cols["MobileNetV1"].relative_difference == pytest.approx(1_605_632 / 800_000 - 1)
    text = table.format()
    for s in ("MobileNetV1", "ShuffleNet 2x g=2", "56x56", "128/800", "64/100", "1606K", "+101%", "+51%"):
        assert s in text
    d = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert [c["label"] for c in d["columns"]][:3] == ["MobileNetV1", "MobileNetV2", "ShuffleNet 2x g=3"]
