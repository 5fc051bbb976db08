"""Winograd F(2x2,3x3) / F(4x4,3x3) against PyTorch's direct convolution (the reference), and the per-layer
choice made by timing."""
import pytest
import torch
from torch import nn

from betterconv.deploy.fuse import fuse_batch_norm
from betterconv.deploy.winograd import WinogradConv2d, winograd_convolutions, winograd_eligible
from betterconv.errors import BetterConvError
from betterconv import create_model


def _relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


@pytest.mark.parametrize("tile, tolerance", [(2, 2e-6), (4, 5e-5)])
@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 24, 13, 13), (1, 40, 7, 10), (3, 8, 1, 1), (1, 16, 5, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_direct_convolution(tile, tolerance, shape, bias):
    torch.manual_seed(0)
    n, c, h, w = shape
    conv = nn.Conv2d(c, 12, 3, padding=1, bias=bias)
    x = torch.randn(shape)
    with torch.no_grad():
        ref, y = conv(x), WinogradConv2d(conv, tile)(x)
    assert y.shape == ref.shape == (n, 12, h, w)
    assert _relative_error(y, ref) < tolerance


def test_error_of_the_larger_tile_stays_small_with_many_channels():
    # F(4x4,3x3)'s transforms have entries up to 8 and 1/24: its rounding error grows with C_in, a known trade-off
    torch.manual_seed(0)
    conv = nn.Conv2d(512, 64, 3, padding=1)
    x = torch.randn(1, 512, 13, 13)
    with torch.no_grad():
        ref = conv(x)
        errors = {t: _relative_error(WinogradConv2d(conv, t)(x), ref) for t in (2, 4)}
    assert errors[2] < 2e-6 and errors[4] < 1e-4
    assert errors[4] > errors[2]


@pytest.mark.parametrize("conv", [nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 1),
                                  nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.Conv2d(4, 4, 3, padding=2, dilation=2),
                                  nn.Conv2d(4, 4, 3, padding=0), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")])
def test_ineligible_convolutions_are_refused(conv):
    assert not winograd_eligible(conv)
    with pytest.raises(BetterConvError, match="3x3, stride-1"):
        WinogradConv2d(conv)


def test_unknown_tile_is_refused():
    with pytest.raises(BetterConvError, match="tile"):
        WinogradConv2d(nn.Conv2d(4, 4, 3, padding=1), tile=3)
    with pytest.raises(BetterConvError, match="algorithms"):
        winograd_convolutions(nn.Conv2d(4, 4, 3, padding=1), torch.rand(1, 4, 8, 8), algorithms=("direct", 6))


def test_model_with_chosen_algorithms_computes_the_same():
    torch.manual_seed(0)
    model = fuse_batch_norm(create_model("yolov2_tiny", num_classes=3, width_mult=0.25).eval())
    x = torch.rand(1, 3, 96, 96)
    eligible = [n for n, m in model.named_modules() if winograd_eligible(m)]
    # one algorithm: every eligible layer uses it; several: each layer gets the fastest, timed
    for algorithms in ((2,), (4,), ("direct", 2, 4)):
        fast, report = winograd_convolutions(model, x, algorithms=algorithms, repeats=1)
        assert [r["layer"] for r in report] == eligible
        replaced = [n for n, m in fast.named_modules() if isinstance(m, WinogradConv2d)]
        assert replaced == [r["layer"] for r in report if r["choice"] != "direct"]
        if len(algorithms) == 1:
            assert replaced == eligible
        with torch.no_grad():
            assert _relative_error(fast(x), model(x)) < 1e-4
    assert not any(isinstance(m, WinogradConv2d) for m in model.modules())  # the original is untouched


def test_a_bare_convolution_is_replaced_whole():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.rand(1, 8, 12, 12)
    fast, report = winograd_convolutions(conv, x, algorithms=(4,))
    assert isinstance(fast, WinogradConv2d) and report == [{"layer": "", "input": [1, 8, 12, 12],
                                                            "ms": {"F(4x4,3x3)": None}, "choice": "F(4x4,3x3)"}]
    with torch.no_grad():
        assert _relative_error(fast(x), conv(x)) < 5e-5
