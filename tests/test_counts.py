"""Parameter and MAC counts against the papers' published numbers (MACs = multiply-accumulates = FLOPs / 2)."""
import pytest

from betterconv import create_model

from conftest import count_macs, count_params


def test_mobilenet_v2_exact():
    m = create_model("mobilenet_v2")
    assert count_params(m) == 3_504_872  # MobileNetV2 Table 4: 3.4M; the reference count with a 1000-class FC
    assert count_macs(m, 224) == pytest.approx(300.8e6, rel=5e-4)  # Table 4: 300M; 300.8M in the released checkpoints


@pytest.mark.parametrize("width,published_macs", [(0.35, 59e6), (0.5, 97e6), (0.75, 209e6), (1.4, 582e6)])
def test_mobilenet_v2_widths(width, published_macs):
    # the published width-multiplier table of the MobileNetV2 release (224x224)
    assert count_macs(create_model("mobilenet_v2", width_mult=width), 224) == pytest.approx(published_macs, rel=0.02)


def test_vgg16():
    m = create_model("vgg16")
    assert count_params(m) == 138_357_544
    assert count_macs(m, 224) == pytest.approx(15.47e9, rel=1e-3)


def test_fcn8s_vgg16_params():
    # FCN Table 1: FCN-VGG16 has 134M parameters
    assert count_params(create_model("fcn8s_vgg16")) == pytest.approx(134e6, rel=0.01)


@pytest.mark.parametrize("name,count", [("resnet50", 25_557_032), ("resnet101", 44_549_160)])
def test_resnet_params(name, count):
    assert count_params(create_model(name)) == count  # He et al. Table 1 / torchvision's reference models
