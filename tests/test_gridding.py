"""Gridding of stacked dilated convolutions (survey Fig. 14, HDC of Wang et al. WACV 2018 §3.2): path counts,
the report, the suggested rates and `betterconv analyze gridding`."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from betterconv.analysis.gridding import gridding_report, hdc, path_counts, suggest_rates
from betterconv.errors import BetterConvError


def autograd_counts(rates, kernel=3) -> np.ndarray:
    """Independent check: the gradient of one output unit of a stack of all-ones convolutions w.r.t. the input
    counts the paths from each input pixel to that unit."""
    side = 1 + sum((kernel - 1) * r for r in rates)
    size = side + 8  # 'same' padding keeps the map; a margin keeps the border padding away from the centre unit
    layers = []
    for r in rates:
        conv = nn.Conv2d(1, 1, kernel, dilation=r, padding=(kernel - 1) // 2 * r, bias=False).double()
        nn.init.ones_(conv.weight)
        layers.append(conv)
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = nn.Sequential(*layers)(x)
    c = size // 2
    y[0, 0, c, c].backward()
    grad = x.grad[0, 0]
    h = side // 2
    assert grad.sum() == grad[c - h:c + h + 1, c - h:c + h + 1].sum()  # nothing outside the receptive field
    return grad[c - h:c + h + 1, c - h:c + h + 1].numpy().round().astype(np.int64)


@pytest.mark.parametrize("rates", [(2, 2, 2), (1, 2, 5), (1, 2, 3), (1, 1), (3,), (1, 3, 9)])
def test_path_counts_match_autograd(rates):
    counts = path_counts(rates)
    assert counts.dtype == np.int64
    np.testing.assert_array_equal(counts, autograd_counts(rates))


def test_path_counts_other_kernel_matches_autograd():
    np.testing.assert_array_equal(path_counts((1, 2), kernel=5), autograd_counts((1, 2), kernel=5))


def test_known_answers():
    bad = gridding_report((2, 2, 2))
    assert bad["holes_fraction"] > 0 and not bad["hdc"]
    for rates in [(1, 2, 5), (1, 2, 3)]:
        report = gridding_report(rates)
        assert report["holes_fraction"] == 0 and report["hdc"], rates


@pytest.mark.parametrize("rates", [(2, 2, 2), (1, 2, 5), (1, 2, 3), (7,)])
def test_receptive_field(rates):
    report = gridding_report(rates)
    assert report["receptive_field"] == 1 + sum(2 * r for r in rates) == path_counts(rates).shape[0]
    assert report["rates"] == list(rates) and report["kernel"] == 3


def test_coverage_cv_by_hand():
    # (1, 1): 1-D counts 1 2 3 2 1 (sum 9, sum of squares 19); the 2-D counts are their outer product, 25 pixels
    mean = 9 * 9 / 25
    var = 19 * 19 / 25 - mean ** 2
    assert gridding_report((1, 1))["coverage_cv"] == pytest.approx(var ** 0.5 / mean, rel=1e-12)
    assert gridding_report((1,))["coverage_cv"] == 0.0


def test_hdc_edge_cases():
    assert hdc((1,)) and not hdc((2,))  # a lone layer: only rate 1 reaches every pixel
    assert not hdc((1, 2, 9))  # M_2 = 5 > 3
    assert not hdc((2, 4, 8))  # common factor 2
    assert hdc((1, 3))  # M_2 = r_2 = 3 <= 3


def test_suggest_rates():
    rates = suggest_rates(3, 5)
    report = gridding_report(rates)
    assert len(rates) == 3 and max(rates) <= 5
    assert report["hdc"] and report["holes_fraction"] == 0
    assert report["receptive_field"] >= gridding_report((1, 2, 5))["receptive_field"]
    with pytest.raises(BetterConvError):
        suggest_rates(5, 5)
    with pytest.raises(BetterConvError):
        suggest_rates(3, 33)


@pytest.mark.parametrize("rates,kernel", [((0, 1), 3), ((-1,), 3), ((), 3), ((1.5,), 3), ((1,), 2), ((1,), 0)])
def test_bad_library_arguments(rates, kernel):
    with pytest.raises(BetterConvError):
        path_counts(rates, kernel)


def test_cli_json(cli):
    code, out, err = cli("analyze", "gridding", "--rates", "2,2,2", "--json", "--suggest", "3", "--max-rate", "5")
    assert code == 0, err
    report = json.loads(out)
    assert {"rates", "kernel", "receptive_field", "holes_fraction", "coverage_cv", "hdc",
            "suggested_rates"} <= set(report)
    assert report["rates"] == [2, 2, 2] and report["hdc"] is False and report["receptive_field"] == 13
    assert tuple(report["suggested_rates"]) == suggest_rates(3, 5)


def test_cli_text(cli):
    code, out, err = cli("analyze", "gridding", "--rates", "1,2,5")
    assert code == 0, err
    assert "17x17" in out and "satisfied" in out


@pytest.mark.parametrize("argv", [
    ["--rates", "0,1"], ["--rates=-1,2"], ["--rates", ""], ["--rates", "1.5,2"], ["--rates", "a"],
    ["--rates", "1,,2"], ["--rates", "1", "--kernel", "2"], ["--rates", "1", "--kernel", "0"],
    ["--rates", "1", "--kernel", "x"], ["--rates", "1", "--suggest", "5", "--max-rate", "5"],
    ["--rates", "1", "--suggest", "3"], [],
])
def test_cli_bad_arguments(cli, argv):
    code, out, err = cli("analyze", "gridding", *argv)
    assert code == 2 and out == ""
    assert err.startswith("betterconv: error: ") and err.count("\n") == 1, err


def test_cli_output_png(cli, tmp_path):
    output = tmp_path / "g.png"
    code, out, err = cli("analyze", "gridding", "--rates", "2,2,2", "--output", output)
    assert code == 0, err
    with Image.open(io.BytesIO(output.read_bytes())) as image:
        image.load()
        assert image.format == "PNG" and image.width > 0
    assert not [p for p in tmp_path.iterdir() if p != output]  # no temporary file left behind
