"""Every registered model: shapes, gradients, output stride, and the registry's error behaviour."""
import pytest
import torch

import betterconv
from betterconv import BetterConvError, create_model, list_models

REQUIRED = ["vgg16", "resnet50", "resnet101", "darknet19", "mobilenet_v1", "mobilenet_v2", "shufflenet_v1",
            "fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "deeplabv3_resnet50", "deeplabv3_resnet101",
            "deeplabv3_mobilenet_v2", "yolov2", "yolov2_tiny"]

# small configurations that keep the suite fast; the full-size ones are counted in test_counts.py
SMALL = {
    "mobilenet_v1": {"width_mult": 0.25},
    "mobilenet_v2": {"width_mult": 0.35},
    "shufflenet_v1": {"scale": 0.5},
    "deeplabv3_mobilenet_v2": {"width_mult": 0.35},
    **{f"fcn{s}s_mobilenet_v2": {"width_mult": 0.35} for s in (32, 16, 8)},
    "yolov2": {"width_mult": 0.25},
    "yolov2_tiny": {"width_mult": 0.25},
}
# every registered model in its small configuration, and ShuffleNet with the most groups (the narrowest channel
# groups and the most channel shuffling)
CONFIGURATIONS = [pytest.param(name, SMALL.get(name, {}), id=name) for name in list_models()] + [
    pytest.param("shufflenet_v1", {"groups": 8, "scale": 0.25}, id="shufflenet_v1-groups8")]


def kind(name: str) -> str:
    if name.startswith(("fcn", "deeplab")):
        return "segmentation"
    if name.startswith("yolo"):
        return "detection"
    return "classification"


def test_required_models_registered():
    assert set(REQUIRED) <= set(list_models())


@pytest.mark.parametrize("name,kwargs", CONFIGURATIONS)
def test_forward_shape_and_backward_reaches_every_parameter(name, kwargs):
    """In train mode, the output has the task's shape, and the gradient of a loss on it reaches every trainable
    parameter: present, finite and not all zero."""
    torch.manual_seed(0)
    k = kind(name)
    num_classes = 5
    model = create_model(name, num_classes=num_classes, **kwargs)
    model.train()
    h, w = (64, 96) if k == "detection" else (33, 49)
    x = torch.randn(2, 3, h, w)
    y = model(x)
    if k == "classification":
        assert y.shape == (2, num_classes)
    elif k == "segmentation":
        assert y.shape == (2, num_classes, h, w)
    else:
        assert y.shape == (2, model.num_anchors * (5 + num_classes), h // 32, w // 32)
    y.float().pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any())]
    assert not missing, f"no usable gradient reached {missing[:5]}"


@pytest.mark.parametrize("name", [n for n in list_models() if kind(n) == "classification"])
def test_feature_info_matches_forward_features(name):
    model = create_model(name, **SMALL.get(name, {})).eval()
    h, w = 65, 97
    with torch.no_grad():
        features = model.forward_features(torch.randn(1, 3, h, w))
    assert list(features) == [f.name for f in model.feature_info]
    reductions = [f.reduction for f in model.feature_info]
    assert reductions == sorted(reductions)
    for info in model.feature_info:
        f = features[info.name]
        assert f.shape[1] == info.channels, info
        # 'same' padding everywhere: the size is the ceiling of input / reduction (floor for VGG's 2x2 pools)
        assert f.shape[-2] in (-(-h // info.reduction), h // info.reduction), info


@pytest.mark.parametrize("name,kwargs", [("resnet50", {}), ("mobilenet_v2", {"width_mult": 0.35})])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_output_stride_gives_feature_maps_of_that_reduction(name, kwargs, output_stride):
    model = create_model(name, num_classes=None, output_stride=output_stride, **kwargs).eval()
    with torch.no_grad():
        last = list(model.forward_features(torch.randn(1, 3, 128, 128)).values())[-1]
    assert last.shape[-2:] == (128 // output_stride, 128 // output_stride)
    assert model.feature_info[-1].reduction == output_stride


def test_deeplab_output_stride_and_rates():
    from betterconv.models.deeplabv3 import DEFAULT_RATES

    for os_ in (8, 16):
        m = create_model("deeplabv3_resnet50", output_stride=os_, num_classes=3).eval()
        assert m.head.aspp.atrous_rates == DEFAULT_RATES[os_]
        assert m.backbone.feature_info[-1].reduction == os_
        # multi-grid (1, 2, 4) on block4 at the stage's rate: DeepLabv3 §3.2
        rates = [blk.conv2.conv.dilation[0] for blk in m.backbone.layer4]
        assert rates == [32 // os_ * g for g in (1, 2, 4)]
    assert DEFAULT_RATES[8] == tuple(2 * r for r in DEFAULT_RATES[16])
    mobile = create_model("deeplabv3_mobilenet_v2", width_mult=0.35)
    assert mobile.head.aspp.atrous_rates == () and mobile.head.aspp.image_pooling  # MobileNetV2 §6.3: ASPP off
    off = create_model("deeplabv3_resnet50", image_pooling=False, num_classes=3)
    assert len(off.head.aspp.branches) == 4


def test_fcn_skips_start_at_zero_and_upsampling_is_bilinear():
    import torch.nn.functional as F

    m = create_model("fcn8s_vgg16", num_classes=3).eval()
    assert all(int(torch.count_nonzero(s.weight)) == 0 for s in m.score_skips.values())
    # a fixed x8 bilinear transposed convolution equals bilinear interpolation away from the border
    x = torch.randn(1, 3, 6, 6)
    up = m.upsample(x)
    ref = F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)
    assert up.shape == ref.shape
    torch.testing.assert_close(up[..., 8:-8, 8:-8], ref[..., 8:-8, 8:-8], atol=1e-5, rtol=1e-5)


def test_fcn_skips_come_from_feature_info():
    assert create_model("fcn8s_vgg16", num_classes=3).skips == ("pool4", "pool3")
    assert create_model("fcn16s_vgg16", num_classes=3).skips == ("pool4",)
    m = create_model("fcn8s_mobilenet_v2", num_classes=3, width_mult=0.35).eval()
    reductions = {info.name: info.reduction for info in m.backbone.feature_info}
    assert [reductions[name] for name in m.skips] == [16, 8]
    # each skip's scores have the size of the x2-upsampled coarser scores, at any input size
    with torch.no_grad():
        features = m.backbone.forward_features(torch.randn(1, 3, 96, 160))
    assert [tuple(features[n].shape[-2:]) for n in m.skips] == [(6, 10), (12, 20)]


def test_fcn_backbone_from_imagenet_classifier():
    from betterconv.weights import backbone_from_classifier

    classifier = create_model("mobilenet_v2", width_mult=0.35).eval()
    m = create_model("fcn8s_mobilenet_v2", num_classes=3, width_mult=0.35).eval()
    assert backbone_from_classifier(m, classifier, "test") == len(m.backbone.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = m.backbone.forward_features(x), classifier.forward_features(x)
    torch.testing.assert_close(ours[m.skips[-1]], theirs[m.skips[-1]], rtol=0, atol=0)


def test_unknown_model_and_keyword_are_errors():
    with pytest.raises(BetterConvError, match="unknown model 'mobilenet_v3'"):
        create_model("mobilenet_v3")
    with pytest.raises(BetterConvError, match="unknown argument.*width_mul"):
        create_model("mobilenet_v2", width_mul=0.5)
    with pytest.raises(BetterConvError, match="width_mult"):
        create_model("mobilenet_v2", width_mult=0.0)
    with pytest.raises(BetterConvError, match="output_stride"):
        create_model("deeplabv3_resnet50", output_stride=4)


def test_list_models_pattern():
    assert betterconv.list_models("fcn*vgg16") == ["fcn16s_vgg16", "fcn32s_vgg16", "fcn8s_vgg16"]
    assert betterconv.list_models("fcn*mobilenet_v2") == ["fcn16s_mobilenet_v2", "fcn32s_mobilenet_v2",
                                                          "fcn8s_mobilenet_v2"]
