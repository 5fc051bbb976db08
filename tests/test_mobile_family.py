"""MobileNetV1 and ShuffleNet v1: published complexities, shapes, the feature contract and errors."""
import math

import pytest
import torch

from betterconv.errors import BetterConvError
from betterconv import create_model, list_models
from betterconv.models.mobilenet_v1 import mobilenet_v1
from betterconv.models.shufflenet import shufflenet_channels, shufflenet_v1

from conftest import count_macs, count_params


def test_mobilenet_v1_exact_size():
    model = mobilenet_v1()
    assert count_params(model) == 4_231_976  # paper: 4.2M
    assert count_macs(model) / 1e6 == pytest.approx(569, rel=0.005)  # paper Table 1: 569M


def test_conv_mobilenet_plain_baseline():
    # MobileNetV1 Table 4: "Conv MobileNet" (full 3x3 convolutions instead of depthwise separable): 29.3M, 4866M
    model = mobilenet_v1(separable=False)
    assert round(count_params(model) / 1e6, 1) == 29.3
    assert count_macs(model) / 1e6 == pytest.approx(4866, rel=0.005)
    assert len(model.blocks) == len(mobilenet_v1().blocks)  # the same depth in blocks


# MobileNetV1 Table 6: width multiplier -> (million multiply-adds, million parameters)
@pytest.mark.parametrize("width, macs, params", [(0.75, 325, 2.6), (0.5, 149, 1.3), (0.25, 41, 0.5)])
def test_mobilenet_v1_width_multiplier(width, macs, params):
    model = mobilenet_v1(width_mult=width)
    assert count_macs(model) / 1e6 == pytest.approx(macs, rel=0.01)
    assert round(count_params(model) / 1e6, 1) == params  # the paper's rounding (0.25: 0.47M)


# ShuffleNet Table 1 (1x, per g), Table 2 (0.5x, 0.25x) and the authors' README (2x g=3: 524M); "FLOPs" are MACs
@pytest.mark.parametrize("scale, groups, macs", [
    (1.0, 1, 143), (1.0, 2, 140), (1.0, 3, 137), (1.0, 4, 133), (1.0, 8, 137),
    (0.5, 3, 38), (0.25, 3, 13), (2.0, 3, 524), (2.0, 8, 522), (1.5, 3, 292),
])
def test_shufflenet_complexity(scale, groups, macs):
    assert count_macs(shufflenet_v1(groups=groups, scale=scale)) / 1e6 == pytest.approx(macs, rel=0.03)


# parameters from megvii-model/ShuffleNet-Series' ShuffleNetV1 README
@pytest.mark.parametrize("scale, groups, params", [(2.0, 3, 5.4), (1.0, 3, 1.9), (1.0, 8, 2.4), (0.5, 3, 0.7)])
def test_shufflenet_parameters(scale, groups, params):
    assert count_params(shufflenet_v1(groups=groups, scale=scale)) / 1e6 == pytest.approx(params, rel=0.03)


def test_shufflenet_channels():
    for g, stage2 in [(1, 144), (2, 200), (3, 240), (4, 272), (8, 384)]:
        assert shufflenet_channels(g, 1.0) == (24, stage2, 2 * stage2, 4 * stage2)
    assert shufflenet_channels(3, 2.0) == (48, 480, 960, 1920)
    assert shufflenet_channels(3, 0.5) == (12, 120, 240, 480)
    assert shufflenet_channels(8, 0.5) == (16, 192, 384, 768)
    for g in (1, 2, 3, 4, 8):
        for s in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0):
            stem, *stages = shufflenet_channels(g, s)
            assert stem % g == 0 and all(c % (4 * g) == 0 for c in stages)


def test_shufflenet_first_pointwise_dense_only_in_stage2_first_unit():
    model = shufflenet_v1(groups=4, num_classes=None)
    groups = [unit.compress.conv.groups for stage in (model.stage2, model.stage3, model.stage4) for unit in stage]
    assert groups == [1] + [4] * 15
    assert [len(s) for s in (model.stage2, model.stage3, model.stage4)] == [4, 8, 4]


def _check_features(model, h, w):
    features = model.forward_features(torch.randn(1, 3, h, w))
    assert list(features) == [f.name for f in model.feature_info]
    for info in model.feature_info:
        assert features[info.name].shape == (1, info.channels, math.ceil(h / info.reduction),
                                             math.ceil(w / info.reduction)), info
    reductions = [f.reduction for f in model.feature_info]
    assert reductions == sorted(reductions)
    return features


@pytest.mark.parametrize("build", [
    lambda: mobilenet_v1(width_mult=0.25, num_classes=None),
    lambda: shufflenet_v1(groups=3, scale=0.25, num_classes=None),
    lambda: shufflenet_v1(groups=8, scale=0.5, num_classes=None),
])
def test_feature_contract(build):
    model = build().eval()
    _check_features(model, 65, 97)
    assert model.feature_info[-1].reduction == 32


def test_shufflenet_feature_info():
    model = shufflenet_v1(groups=2, num_classes=None)
    assert [(f.name, f.channels, f.reduction) for f in model.feature_info] == [
        ("stem", 24, 4), ("stage2", 200, 8), ("stage3", 400, 16), ("stage4", 800, 32)]


@pytest.mark.parametrize("model", [
    mobilenet_v1(width_mult=0.25, num_classes=7),
    shufflenet_v1(groups=1, scale=0.25, num_classes=7),
    shufflenet_v1(groups=3, scale=0.5, num_classes=7),
])
def test_classifier_odd_input(model):
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 65, 97)).shape == (2, 7)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_mobilenet_v1_output_stride(output_stride):
    model = mobilenet_v1(width_mult=0.25, output_stride=output_stride, num_classes=5).eval()
    assert model.feature_info[-1].reduction == output_stride
    assert model.feature_info[-1].channels == 256
    with torch.no_grad():
        features = _check_features(model, 65, 97)
        assert features[model.feature_info[-1].name].shape[-2:] == (math.ceil(65 / output_stride),
                                                                    math.ceil(97 / output_stride))
        assert model(torch.randn(1, 3, 65, 97)).shape == (1, 5)
    dilations = {m.dilation[0] for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1}
    assert max(dilations) == 32 // output_stride


@pytest.mark.parametrize("kwargs", [
    dict(groups=5), dict(groups=0), dict(scale=0), dict(scale=-1.0), dict(scale=float("nan")),
    dict(scale=0.01), dict(groups=8, scale=0.05),
])
def test_shufflenet_bad_arguments(kwargs):
    with pytest.raises(BetterConvError):
        shufflenet_v1(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(width_mult=0.0), dict(width_mult=-1.0), dict(width_mult=8.0),
                                    dict(output_stride=4), dict(output_stride=64)])
def test_mobilenet_v1_bad_arguments(kwargs):
    with pytest.raises(BetterConvError):
        mobilenet_v1(**kwargs)


def test_registered():
    assert {"mobilenet_v1", "shufflenet_v1"} <= set(list_models())
    model = create_model("shufflenet_v1", groups=8, scale=0.5, num_classes=None)
    assert model.feature_info[-1].channels == 768
    with pytest.raises(BetterConvError):
        create_model("mobilenet_v1", width=0.5)
