"""DeepLabv3+ (Chen et al. 2018, §3.1, Fig. 2) and ASPP rates scaled to the feature map (issue 16).

The decoder is checked against the paper's description (48-channel reduction of the reduction-4 stage, 256 + 48 = 304
channels concatenated, two 3x3 convolutions of 256), the logits against a forward composed by hand from the model's
parts with torch's functional ops, the parameter count against the parts' counts plus the decoder's by formula, and
the exports against PyTorch as tests/test_export.py and tests/test_ncnn.py check the other segmentation models.
Widths and inputs are tiny; batch-norm statistics are randomised so that every layer shows in the output.
"""
import json
import math
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F

from betterconv import BetterConvError
from betterconv.analysis.aspp import model_aspp_report, valid_weights
from betterconv.layers import ASPP
from betterconv.models import create_model, list_models
from betterconv.models.deeplabv3 import DEFAULT_RATES, scaled_rates
from betterconv.models.mobilenet_v2 import MobileNetV2
from betterconv.models.resnet import ResNet
from betterconv.weights import create_model as create_with_weights, save_weights

from conftest import build_randomised, count_params, randomise_batch_norm

pytestmark = pytest.mark.usefixtures("one_thread")

MOBILE = ("deeplabv3plus_mobilenet_v2", dict(width_mult=0.25, num_classes=3))
RESNET = ("deeplabv3plus_resnet50", dict(num_classes=3))
DEEPLABS = list_models("deeplab*")


def small(name: str) -> dict:
    return dict(width_mult=0.25) if "mobilenet" in name else {}


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- shapes ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs,size", [
    (*MOBILE, (65, 97)), (*MOBILE, (33, 49)), (MOBILE[0], dict(MOBILE[1], output_stride=8), (65, 97)),
    (MOBILE[0], dict(MOBILE[1], align_corners=True), (66, 98)), (*RESNET, (65, 97))])
def test_output_has_the_input_size(name, kwargs, size):
    model = create_model(name, **kwargs).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 3, *size))
    assert y.shape == (2, kwargs["num_classes"], *size)


@pytest.mark.parametrize("name,kwargs,skip", [(*MOBILE, "stage2"), (*RESNET, "layer1")])
def test_decoder_shapes_follow_the_paper(name, kwargs, skip):
    """§3.1: the low-level features come from the reduction-4 stage (ResNet: layer1 = "Conv2", not the stem), are
    reduced to 48 channels, concatenated with the 256-channel ASPP output upsampled to their size (304 channels),
    refined by two 3x3 convolutions of 256 channels and classified at reduction 4."""
    model = create_model(name, **kwargs).eval()
    info = {i.name: i for i in model.backbone.feature_info}
    assert model.skip_name == skip and info[skip].reduction == 4
    assert info[skip] == [i for i in model.backbone.feature_info if i.reduction == 4][-1]
    h, w = 65, 97
    seen = {}
    decoder = model.head.decoder
    hooks = [m.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, (i[0].shape, o.shape)))
             for key, m in (("aspp", model.head.aspp), ("reduce", decoder.reduce), ("conv1", decoder.conv1),
                            ("conv2", decoder.conv2), ("classifier", decoder.classifier))]
    with torch.no_grad():
        model(torch.randn(1, 3, h, w))
    for hook in hooks:
        hook.remove()
    low = (ceil_div(h, 4), ceil_div(w, 4))
    assert seen["aspp"][1] == (1, 256, ceil_div(h, 16), ceil_div(w, 16))
    assert seen["reduce"] == ((1, info[skip].channels, *low), (1, 48, *low))
    assert seen["conv1"] == ((1, 256 + 48, *low), (1, 256, *low))
    assert seen["conv2"][1] == (1, 256, *low) and decoder.conv1.conv.kernel_size == decoder.conv2.conv.kernel_size == (3, 3)
    assert seen["classifier"][1] == (1, kwargs["num_classes"], *low)


# --- equal to its parts ---------------------------------------------------------------------------------------------

def conv_bn_relu(x, block):
    """`ConvNormAct` computed with torch's functional ops from its weights and running statistics (eval mode)."""
    conv, bn = block.conv, block.bn
    y = F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return F.relu(y)


@pytest.mark.parametrize("name,kwargs", [MOBILE, (MOBILE[0], dict(MOBILE[1], align_corners=True)), RESNET])
def test_logits_equal_a_forward_composed_by_hand(name, kwargs):
    """backbone features -> ASPP -> bilinear upsampling to the reduction-4 map -> concatenation with its 48-channel
    reduction -> two 3x3 conv-BN-ReLU -> 1x1 classifier -> bilinear upsampling to the input, on the same weights."""
    size = (3, 65, 97)
    model = build_randomised(name, kwargs, size)
    decoder, align = model.head.decoder, kwargs.get("align_corners", False)
    x = torch.rand(2, *size) * 4 - 2
    with torch.no_grad():
        features = model.backbone.forward_features(x)
        high, low = features[model.backbone.feature_info[-1].name], features[model.skip_name]
        encoder = model.head.aspp(high)  # (B, 256, H/16, W/16)
        encoder = F.interpolate(encoder, size=low.shape[-2:], mode="bilinear", align_corners=align)
        y = torch.cat([encoder, conv_bn_relu(low, decoder.reduce)], dim=1)  # (B, 304, H/4, W/4)
        y = conv_bn_relu(conv_bn_relu(y, decoder.conv1), decoder.conv2)
        y = F.conv2d(y, decoder.classifier.weight, decoder.classifier.bias)
        expected = F.interpolate(y, size=size[1:], mode="bilinear", align_corners=align)
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kwargs,backbone", [
    (*MOBILE, lambda: MobileNetV2(num_classes=None, width_mult=0.25, output_stride=16)),
    (*RESNET, lambda: ResNet((3, 4, 6, 3), num_classes=None, output_stride=16, multi_grid=(1, 2, 4)))])
def test_parameter_count_is_the_sum_of_its_parts(name, kwargs, backbone):
    model = create_model(name, **kwargs)
    net = backbone()
    low = [i for i in net.feature_info if i.reduction == 4][-1].channels
    classes = kwargs["num_classes"]
    decoder = (low * 48 + 2 * 48  # 1x1 conv (no bias) + batch norm
               + (256 + 48) * 256 * 9 + 2 * 256 + 256 * 256 * 9 + 2 * 256  # two 3x3 conv-BN
               + 256 * classes + classes)  # 1x1 classifier with bias
    assert count_params(model) == count_params(net) + count_params(ASPP(net.num_features, 256, (6, 12, 18))) + decoder


def test_backward_reaches_every_parameter():
    torch.manual_seed(0)
    model = create_model(MOBILE[0], **MOBILE[1]).train()
    model(torch.randn(2, 3, 65, 97)).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()]
    assert not missing, missing[:5]


# --- exports and weights files --------------------------------------------------------------------------------------

def test_onnx_export_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from betterconv.deploy import export_onnx  # after the skip: the exporter needs onnx

    size = (3, 65, 97)
    model = build_randomised(*MOBILE, size)
    path = tmp_path / "deeplabv3plus.onnx"
    diff = export_onnx(model, path, size)  # checked with onnxruntime on a batch of 2 against the model
    assert diff is not None and diff <= 1e-4, diff
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_ncnn_export_matches_pytorch(tmp_path):
    pytest.importorskip("ncnn")
    from betterconv.deploy.ncnn import NcnnModel, export_ncnn

    size = (3, 65, 97)
    model = build_randomised(*MOBILE, size)
    path = tmp_path / "deeplabv3plus.param"
    diff = export_ncnn(model, path, size)
    x = torch.rand(2, *size) * 4 - 2
    with torch.no_grad():
        ref = model(x)
    got = NcnnModel(path, threads=1)(x)
    scale = max(1.0, float(ref.abs().max()))
    assert diff <= 1e-4 * scale
    assert got.shape == ref.shape and float((got - ref).abs().max()) <= 1e-4 * scale


def test_safetensors_round_trip(tmp_path):
    kwargs = dict(MOBILE[1], aspp_crop_size=360)
    model = build_randomised(MOBILE[0], kwargs, (3, 65, 97))
    path = tmp_path / "model.safetensors"
    save_weights(model, path)
    again = create_with_weights(MOBILE[0], weights=path).eval()
    assert again.model_kwargs == kwargs and again.head.aspp.atrous_rates == model.head.aspp.atrous_rates
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.randn(1, 3, 65, 97)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_backbone_starts_from_the_imagenet_classifier():
    """What `--backbone-weights` does: the registered classifier's weights fill the whole backbone."""
    from betterconv.models import model_info
    from betterconv.weights import backbone_from_classifier

    assert model_info(MOBILE[0]).backbone_classifier == "mobilenet_v2"
    assert model_info(RESNET[0]).backbone_classifier == "resnet50"
    classifier = randomise_batch_norm(create_model("mobilenet_v2", width_mult=0.25))
    model = create_model(MOBILE[0], **MOBILE[1]).eval()
    assert backbone_from_classifier(model, classifier, "test") == len(model.backbone.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model.backbone.forward_features(x), classifier.forward_features(x)
    torch.testing.assert_close(ours[model.skip_name], theirs[model.skip_name], rtol=0, atol=0)


# --- ASPP rates scaled to the feature map ---------------------------------------------------------------------------

def rule(crop_size: int, output_stride: int) -> tuple[int, ...]:
    """The documented rule in exact rational arithmetic: r * N / 513, rounded half up, at least 1 and above the rate
    before."""
    out = []
    for r in DEFAULT_RATES[output_stride]:
        out.append(max(math.floor(Fraction(r * crop_size, 513) + Fraction(1, 2)), out[-1] + 1 if out else 1))
    return tuple(out)


def test_scaled_rates_rule():
    assert scaled_rates(513, 16) == (6, 12, 18) == DEFAULT_RATES[16]  # the paper's 513 crop
    assert scaled_rates(513, 8) == (12, 24, 36) == DEFAULT_RATES[8]
    assert scaled_rates(360, 16) == rule(360, 16) == (4, 8, 13)  # CamVid 360x480 at output stride 16: a 23x30 map
    assert scaled_rates(360, 8) == (8, 17, 25)  # the same crop at output stride 8
    assert scaled_rates(1, 16) == (1, 2, 3)  # at least 1, and distinct
    for n in range(1, 1100, 7):
        for os_ in (8, 16, 32):
            rates = scaled_rates(n, os_)
            assert rates == rule(n, os_) and len(set(rates)) == 3 and min(rates) >= 1
    with pytest.raises(BetterConvError, match="aspp_crop_size"):
        scaled_rates(0)


@pytest.mark.parametrize("name", DEEPLABS)
def test_every_deeplab_builder_scales_its_rates(name):
    extra = dict(atrous_rates=None) if name == "deeplabv3_mobilenet_v2" else {}  # its default is (): ASPP off
    for os_, n in ((16, 360), (8, 360)):
        model = create_model(name, num_classes=3, output_stride=os_, aspp_crop_size=n, **extra, **small(name))
        assert model.head.aspp.atrous_rates == rule(n, os_)
    model = create_model(name, num_classes=3, aspp_crop_size=513, **extra, **small(name))
    assert model.head.aspp.atrous_rates == DEFAULT_RATES[16]


@pytest.mark.parametrize("name", DEEPLABS)
def test_feature_size_with_explicit_rates_is_one_line(name, cli):
    with pytest.raises(BetterConvError) as e:
        create_model(name, aspp_crop_size=360, atrous_rates=(2, 4), **small(name))
    assert "\n" not in str(e.value) and "aspp_crop_size" in str(e.value) and "atrous_rates" in str(e.value)
    code, out, err = cli("profile", name, "--arg", "aspp_crop_size=360", "--arg", "atrous_rates=(2,4)")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "aspp_crop_size" in err


def test_aspp_analysis_reports_the_scaled_branches(cli):
    """`analyze aspp --model` reads the ASPP the builder made: at CamVid's 360x480 the map is 23x30 and the branches
    are the scaled rates, with the valid-weight fractions of the closed form."""
    model = create_model(MOBILE[0], aspp_crop_size=360, **MOBILE[1])
    report = model_aspp_report(model, (360, 480))
    assert report["feature_size"] == [23, 30]
    assert [row["rate"] for row in report["rates"]] == list(rule(360, 16))
    for row in report["rates"]:
        assert row["valid_weight_fraction"] == valid_weights((23, 30), row["rate"])["valid_weight_fraction"]
    code, out, err = cli("analyze", "aspp", "--model", MOBILE[0], "--arg", "width_mult=0.25", "--arg",
                         "aspp_crop_size=360", "--input-size", 360, 480, "--json")
    assert code == 0, err
    assert [row["rate"] for row in json.loads(out)["rates"]] == [4, 8, 13]


# --- the backbone's dilation pattern --------------------------------------------------------------------------------

def conv_dilations(module: torch.nn.Module) -> list[tuple[int, int]]:
    return [m.dilation for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("name", DEEPLABS)
def test_dilation_pattern_reaches_the_backbone(name):
    """Every DeepLab builder hands `dilation_pattern` to its backbone's constructor: the backbone's convolutions
    have the dilations of the same backbone built directly with that pattern, and "hdc" differs from "plain".
    Built on the meta device: only the structure is compared."""
    layers = (3, 4, 23, 3) if "resnet101" in name else (3, 4, 6, 3)

    def backbone(pattern: str) -> torch.nn.Module:
        if "mobilenet" in name:
            return MobileNetV2(num_classes=None, width_mult=0.25, output_stride=8, dilation_pattern=pattern)
        return ResNet(layers, num_classes=None, output_stride=8, multi_grid=(1, 2, 4), dilation_pattern=pattern)

    with torch.device("meta"):
        for pattern in ("plain", "hdc"):
            model = create_model(name, num_classes=3, output_stride=8, dilation_pattern=pattern, **small(name))
            assert conv_dilations(model.backbone) == conv_dilations(backbone(pattern)), pattern
        assert conv_dilations(backbone("hdc")) != conv_dilations(backbone("plain"))
        with pytest.raises(BetterConvError, match="dilation_pattern") as e:
            create_model(name, dilation_pattern="zigzag", **small(name))
    assert "\n" not in str(e.value)
