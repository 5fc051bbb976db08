"""Hybrid dilated convolution (Wang et al., WACV 2018, §3.2) as a backbone option (`dilation_pattern="hdc"` on ResNet
and MobileNetV2) and the gridding analysis of a model's runs of dilated 3x3 convolutions (`analyze gridding
--model`), each checked against an independent computation: path counts against `path_counts` or autograd, runs
against the `dilation` of the modules read from `model.modules()`, the sawtooth against a brute-force search."""
import io
import itertools
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from betterconv import create_model
from betterconv.analysis import gridding
from betterconv.analysis.gridding import model_gridding_report, path_counts
from betterconv.errors import BetterConvError
from betterconv.models import _features
from betterconv.models._features import covers_every_offset, hdc_rates, satisfies_hdc, sawtooth
from betterconv.models.mobilenet_v2 import MobileNetV2
from betterconv.models.resnet import ResNet

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
CONFIGS = [
    ("resnet50", {"output_stride": 8}),
    ("resnet50", {"output_stride": 8, "multi_grid": (1, 2, 4)}),
    ("resnet50", {"output_stride": 16}),
    ("resnet50", {"output_stride": 16, "multi_grid": (1, 2, 4)}),
    ("mobilenet_v2", {"output_stride": 8}),
    ("mobilenet_v2", {"output_stride": 16}),
]
IDS = [f"{name}-{'-'.join(f'{k}{v}' for k, v in kw.items())}" for name, kw in CONFIGS]
_BUILT: dict = {}


def built(name: str, pattern: str, **kwargs) -> nn.Module:
    """One model per configuration for the whole file (seeded: plain and hdc start from the same draws)."""
    key = (name, pattern, tuple(sorted(kwargs.items())))
    if key not in _BUILT:
        torch.manual_seed(0)
        _BUILT[key] = create_model(name, num_classes=3, dilation_pattern=pattern, **kwargs).eval()
    return _BUILT[key]


def dilated_part(model: nn.Module) -> tuple[list[str], list[int]]:
    """Independently of the analysis: the 3x3 convolutions in module order (the forward order of these sequential
    backbones), cut after the last strided one, from the first with a dilation above 1 to the end."""
    convs = [(name, m.stride[0], m.dilation[0]) for name, m in model.named_modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    last_stride = max(i for i, (_, s, _) in enumerate(convs) if s > 1)
    tail = convs[last_stride + 1:]
    first = next(i for i, (_, _, d) in enumerate(tail) if d > 1)
    return [n for n, _, _ in tail[first:]], [d for _, _, d in tail[first:]]


def one_run(model: nn.Module) -> dict:
    runs = model_gridding_report(model, (SIZE, SIZE))["runs"]
    assert len(runs) == 1, [r["modules"][-1] for r in runs]
    return runs[0]


# --- the math ------------------------------------------------------------------------------------------------------

def test_gridding_hdc_is_the_models_implementation():
    assert gridding.hdc_max_distances is _features.hdc_max_distances
    for n in (1, 2, 3):
        for rates in itertools.product(range(1, 7), repeat=n):
            assert gridding.hdc(rates) == satisfies_hdc(rates), rates


@pytest.mark.parametrize("kernel", [3, 5])
def test_covers_every_offset_matches_path_counts(kernel):
    for n in (1, 2, 3):
        for rates in itertools.product(range(1, 7), repeat=n):
            assert covers_every_offset(rates, kernel) == bool((path_counts(rates, kernel) > 0).all()), rates


def is_sawtooth(rates: tuple[int, ...], max_group: int = 4) -> bool:
    """Whether `rates` is one strictly increasing group of at most `max_group` rates repeated, entered anywhere:
    periodic with some period m, one period rotated to increasing order."""
    n = len(rates)
    for m in range(1, max_group + 1):
        if any(rates[i] != rates[i + m] for i in range(n - m)):
            continue
        period = list(rates[:m]) if n >= m else None
        if period is None:  # shorter than the group: any rotation of an increasing sequence has one descent at most
            return sum(rates[i] >= rates[i + 1] for i in range(n - 1)) <= 1 and len(set(rates)) == n
        if len(set(period)) == m and sum(period[i] > period[(i + 1) % m] for i in range(m)) <= 1:
            return True
    return False


PLAINS = [(2, 2), (2, 4), (2, 2, 2), (2, 4, 8), (2, 2, 2, 2, 2, 2, 4, 4), (2, 2, 2, 2, 2, 4, 8, 16),
          (2,) * 7 + (4, 4, 4), (2,) * 22 + (4, 8, 16), (5,)]


@pytest.mark.parametrize("plain", PLAINS, ids=lambda p: ",".join(map(str, p)))
def test_hdc_rates_properties(plain):
    rates = hdc_rates(plain)
    assert len(rates) == len(plain) and is_sawtooth(rates)
    assert satisfies_hdc(rates) and (path_counts(rates) > 0).all()
    if len(plain) > 1:
        assert rates[0] > 1  # the run still starts with a dilated convolution
    assert hdc_rates(plain) == rates  # deterministic (and cached)


@pytest.mark.parametrize("plain", [(2, 2), (2, 4), (2, 2, 2), (2, 4, 8), (4, 8, 16), (3, 3, 3)])
def test_hdc_rates_sum_is_the_closest(plain):
    """Brute force over every sawtooth of rates below 20 (first rate above 1, HDC, no holes by path counts): none
    has a sum nearer the plain one than `hdc_rates`'s answer."""
    n, target = len(plain), sum(plain)
    candidates = {sawtooth(group, n, phase) for m in range(1, 5) for group in itertools.combinations(range(1, 20), m)
                  for phase in range(m)}
    best = next(abs(sum(rates) - target) for rates in sorted(candidates, key=lambda r: abs(sum(r) - target))
                if rates[0] > 1 and satisfies_hdc(rates) and (path_counts(rates) > 0).all())
    assert abs(sum(hdc_rates(plain)) - target) == best


def test_hdc_rates_keeps_the_sum_where_a_sawtooth_has_it():
    for plain in [(2, 2), (2, 2, 2), (2, 2, 2, 2, 2, 2, 4, 4), (2, 2, 2, 2, 2, 4, 8, 16)]:
        assert sum(hdc_rates(plain)) == sum(plain), plain
    # three 3x3 layers reach at most 27 offsets: a hole-free receptive field of (2, 4, 8)'s 29 pixels is impossible
    assert sum(hdc_rates((2, 4, 8))) == 13 == (3 ** 3 - 1) // 2


def autograd_counts(rates, identity, kernel=3) -> np.ndarray:
    """Independent check: the gradient of one output unit of a stack of all-ones convolutions, with y = x + conv(x)
    where `identity` says, w.r.t. the input counts the paths from each input pixel to that unit."""
    side = 1 + sum((kernel - 1) * r for r in rates)
    size = side + 8
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = x
    for r, skip in zip(rates, identity):
        conv = nn.Conv2d(1, 1, kernel, dilation=r, padding=(kernel - 1) // 2 * r, bias=False).double()
        nn.init.ones_(conv.weight)
        y = y + conv(y) if skip else conv(y)
    c, h = size // 2, side // 2
    y[0, 0, c, c].backward()
    grad = x.grad[0, 0]
    assert grad.sum() == grad[c - h:c + h + 1, c - h:c + h + 1].sum()
    return grad[c - h:c + h + 1, c - h:c + h + 1].numpy().round().astype(np.int64)


@pytest.mark.parametrize("rates,identity", [
    ((2, 4, 8), (True, True, True)), ((2, 2, 2), (False, True, True)), ((9, 1, 3), (True, False, True)),
    ((1, 2), (True, True)), ((3,), (True,)),
])
def test_identity_counts_match_autograd(rates, identity):
    counts = path_counts(rates, identity=identity)
    np.testing.assert_array_equal(counts, autograd_counts(rates, identity))
    # the identity adds paths through the centre tap only: the same pixels are reached
    np.testing.assert_array_equal(counts > 0, path_counts(rates) > 0)


def test_path_counts_stay_exact_beyond_int64():
    rates, identity = (1,) * 24, (True,) * 24
    counts = path_counts(rates, identity=identity)
    assert counts.dtype == object and int(counts.sum()) == 10 ** 24  # every path counted once: prod(9 + 1)
    assert path_counts((1,) * 3).dtype == np.int64
    with pytest.raises(BetterConvError):
        path_counts((1, 2), identity=(True,))


# --- the models ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_plain_runs_read_from_the_modules_have_holes(name, kwargs):
    model = built(name, "plain", **kwargs)
    run = one_run(model)
    modules, rates = dilated_part(model)
    assert run["modules"] == modules and run["rates"] == rates
    assert math.gcd(*rates) > 1 and run["holes_fraction"] > 0 and not run["hdc"]  # a common factor grids
    assert run["holes_fraction_with_identity"] == run["holes_fraction"]
    assert run["receptive_field"] == 1 + 2 * sum(rates)


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_hdc_runs_have_no_holes_and_keep_the_sum(name, kwargs):
    plain, hdc = built(name, "plain", **kwargs), built(name, "hdc", **kwargs)
    plain_modules, plain_rates = dilated_part(plain)
    run = one_run(hdc)
    modules, rates = dilated_part(hdc)
    assert run["modules"] == modules == plain_modules and run["rates"] == rates
    assert tuple(rates) == hdc_rates(plain_rates)
    assert run["holes_fraction"] == 0 and run["holes_fraction_with_identity"] == 0 and run["hdc"]
    assert satisfies_hdc(rates)  # over the whole run, across stages
    # the plain sum, or the closest a hole-free sawtooth reaches (test_hdc_rates_sum_is_the_closest)
    assert abs(sum(rates) - sum(plain_rates)) <= 1


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_hdc_changes_only_dilation_and_padding(name, kwargs):
    plain, hdc = built(name, "plain", **kwargs), built(name, "hdc", **kwargs)
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [(k, v.shape) for k, v in hdc.state_dict().items()]
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in hdc.parameters())
    assert plain.feature_info == hdc.feature_info and plain.output_stride == hdc.output_stride
    hdc.load_state_dict(plain.state_dict(), strict=True)  # a pretrained classifier's weights still load
    for (n1, a), (n2, b) in zip(plain.named_modules(), hdc.named_modules()):
        assert n1 == n2 and type(a) is type(b)
        if isinstance(a, nn.Conv2d):
            assert (a.kernel_size, a.stride, a.groups) == (b.kernel_size, b.stride, b.groups)
            assert b.padding == tuple(d * (k - 1) // 2 for d, k in zip(b.dilation, b.kernel_size))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert plain(x).shape == hdc(x).shape == (1, 3)
        f1, f2 = plain.forward_features(x), hdc.forward_features(x)
    assert {k: v.shape for k, v in f1.items()} == {k: v.shape for k, v in f2.items()}


def test_plain_is_the_default():
    for builder, kwargs in [("resnet50", {"output_stride": 16}), ("mobilenet_v2", {"output_stride": 8})]:
        torch.manual_seed(0)
        default = create_model(builder, num_classes=3, **kwargs)
        plain = built(builder, "plain", **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), plain.state_dict().values()))
        assert [m.dilation for m in default.modules() if isinstance(m, nn.Conv2d)] == \
            [m.dilation for m in plain.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("make", [
    lambda: ResNet((1, 1, 1, 1), num_classes=3, dilation_pattern="HDC"),
    lambda: MobileNetV2(num_classes=3, dilation_pattern="sawtooth"),
    lambda: create_model("resnet101", dilation_pattern="hybrid"),
])
def test_bad_dilation_pattern(make):
    with pytest.raises(BetterConvError, match="dilation_pattern must be one of 'plain', 'hdc'"):
        make()


def test_aspp_branches_continue_the_backbone_run():
    model = create_model("deeplabv3_resnet50", num_classes=3, output_stride=16).eval()
    runs = model_gridding_report(model, (32, 32))["runs"]
    trunk = runs[0]
    assert trunk["modules"][-1] == "backbone.layer4.2.conv2.conv"
    aspp = model.head.aspp
    assert [r["modules"][-1] for r in runs[1:]] == [f"head.aspp.branches.{i + 1}.conv"
                                                    for i in range(len(aspp.atrous_rates))]
    for run, rate in zip(runs[1:], aspp.atrous_rates):
        assert run["modules"][:-1] == trunk["modules"] and run["rates"] == trunk["rates"] + [rate]
        assert run["identity"][-1] is False


def test_runs_follow_the_data_not_the_forward_order():
    """The auxiliary head reads layer3 and runs after the head: its 3x3 convolution continues layer3's run, not the
    head's; the 3x3 convolution after ASPP's concatenation of parallel branches starts afresh (rate 1: no run)."""
    model = create_model("deeplabv3_resnet50", num_classes=3, output_stride=8, multi_grid=None, aux_head=True,
                         extra_conv=True).eval()
    runs = model_gridding_report(model, (32, 32))["runs"]
    ends = [r["modules"][-1] for r in runs]
    assert "head.conv.conv" not in {m for r in runs for m in r["modules"]}
    aux = runs[ends.index("aux_head.conv.conv")]
    layer3 = aux["modules"][:-1]
    assert all(m.startswith("backbone.layer3.") for m in layer3) and layer3[-1] == "backbone.layer3.5.conv2.conv"
    assert aux["rates"][-1] == 1 and aux["holes_fraction"] == 0  # a trailing rate-1 convolution fills the grid


def test_runs_split_at_strides_and_pooling():
    def conv(d, stride=1):
        return nn.Conv2d(2, 2, 3, stride, padding=d, dilation=d)

    model = nn.Sequential(nn.Conv2d(3, 2, 1), conv(1), conv(2), conv(2), nn.MaxPool2d(2), conv(3), conv(1, 2), conv(2))
    runs = model_gridding_report(model, (32, 32))["runs"]
    assert [(r["modules"], r["rates"], r["rate1_before"]) for r in runs] == [
        (["2", "3"], [2, 2], 1), (["5"], [3], 0), (["7"], [2], 0)]
    assert [r["feature_size"] for r in runs] == [[32, 32], [16, 16], [8, 8]]
    with pytest.raises(BetterConvError, match="cannot run on a 2x2 input"):
        model_gridding_report(nn.Sequential(nn.Conv2d(3, 1, 3, dilation=2)), (2, 2))


# --- the command line ----------------------------------------------------------------------------------------------

def test_cli_model_json(cli):
    code, out, err = cli("analyze", "gridding", "--model", "resnet50", "--arg", "num_classes=3", "--arg",
                         "output_stride=16", "--arg", "multi_grid=(1,2,4)", "--input-size", SIZE, SIZE, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == "resnet50" and report["input_size"] == [SIZE, SIZE]
    assert report["model_args"] == {"num_classes": 3, "output_stride": 16, "multi_grid": [1, 2, 4]}
    (run,) = report["runs"]
    model = built("resnet50", "plain", output_stride=16, multi_grid=(1, 2, 4))
    assert (run["modules"], run["rates"]) == tuple(dilated_part(model))
    assert {"receptive_field", "holes_fraction", "coverage_cv", "hdc", "holes_fraction_with_identity",
            "coverage_cv_with_identity", "residual_note", "identity"} <= set(run)
    assert run["identity"] == [True, True, True]
    counts = path_counts(run["rates"], identity=run["identity"])
    reached = counts[counts > 0].astype(float)
    assert run["coverage_cv_with_identity"] == pytest.approx(reached.std() / reached.mean(), rel=1e-12)


def test_cli_model_without_dilation(cli):
    code, out, err = cli("analyze", "gridding", "--model", "mobilenet_v2", "--arg", "width_mult=0.35",
                         "--input-size", 32, 32, "--json")
    assert code == 0, err
    assert json.loads(out)["runs"] == []
    code, out, err = cli("analyze", "gridding", "--model", "mobilenet_v2", "--arg", "width_mult=0.35",
                         "--input-size", 32, 32)
    assert code == 0 and "0 runs" in out


def test_cli_model_text_and_png(cli, tmp_path):
    output = tmp_path / "g.png"
    code, out, err = cli("analyze", "gridding", "--model", "mobilenet_v2", "--arg", "width_mult=0.35", "--arg",
                         "output_stride=16", "--arg", "dilation_pattern=hdc", "--input-size", 32, 32,
                         "--output", output)
    assert code == 0, err
    assert "1 run " in out and "3,1,2" in out and "run 1: " in out
    with Image.open(io.BytesIO(output.read_bytes())) as image:
        image.load()
        assert image.format == "PNG"


@pytest.mark.parametrize("argv", [
    ["--model", "resnet5"], ["--model", "resnet50", "--arg", "dilation_pattern=foo"],
    ["--model", "resnet50", "--arg", "bogus=1"], ["--model", "resnet50", "--arg", "num_classes"],
    ["--model", "resnet50", "--rates", "2,2"], ["--model", "resnet50", "--kernel", "3"],
    ["--model", "resnet50", "--suggest", "3", "--max-rate", "5"], ["--rates", "2,2", "--arg", "num_classes=3"],
    ["--rates", "2,2", "--input-size", "8", "8"], ["--model", "resnet50", "--input-size", "0", "8"],
    ["--model", "resnet50", "--output", "g.jpg"],
])
def test_cli_model_bad_arguments(cli, argv):
    code, out, err = cli("analyze", "gridding", *argv)
    assert code == 2 and out == ""
    assert err.startswith("betterconv: error: ") and err.count("\n") == 1, err
