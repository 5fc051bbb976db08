"""Valid weights of ASPP's atrous filters (DeepLabv3 §3.3, Fig. 4): the closed form against a direct count, the
report, a model's ASPP branches and `betterconv analyze aspp`."""
import json

import pytest

from betterconv.analysis.aspp import aspp_report, model_aspp_report, valid_weights
from betterconv.errors import BetterConvError
from betterconv.models import create_model


def direct_count(h, w, rate, kernel=3):
    """Loop over every output position and every tap of the zero-padded 'same' filter; count the taps inside."""
    half = (kernel - 1) // 2
    inside_total = centre_only = 0
    for i in range(h):
        for j in range(w):
            inside = [(a, b) for a in range(-half, half + 1) for b in range(-half, half + 1)
                      if 0 <= i + a * rate < h and 0 <= j + b * rate < w]
            inside_total += len(inside)
            centre_only += inside == [(0, 0)]
    return inside_total / (h * w * kernel * kernel), centre_only / (h * w)


@pytest.mark.parametrize("size, rate, kernel", [
    (1, 1, 3), (2, 1, 3), (5, 2, 3), (5, 3, 3), (5, 5, 3), (5, 9, 3), (7, 4, 3), (13, 6, 3), (13, 12, 3),
    (17, 8, 3), (21, 13, 3), (11, 3, 5), (11, 4, 5), (9, 2, 7), (6, 5, 1), (33, 40, 3)])
def test_valid_weights_match_direct_count(size, rate, kernel):
    got = valid_weights(size, rate, kernel)
    valid, centre = direct_count(size, size, rate, kernel)
    assert got["valid_weight_fraction"] == pytest.approx(valid, abs=1e-12)
    assert got["center_only_fraction"] == pytest.approx(centre, abs=1e-12)


@pytest.mark.parametrize("hw, rate", [((5, 9), 3), ((9, 5), 4), ((3, 17), 2), ((12, 7), 6), ((4, 30), 10)])
def test_rectangular_map(hw, rate):
    got = valid_weights(hw, rate)
    valid, centre = direct_count(*hw, rate)
    assert got["valid_weight_fraction"] == pytest.approx(valid, abs=1e-12)
    assert got["center_only_fraction"] == pytest.approx(centre, abs=1e-12)


@pytest.mark.parametrize("size, rate", [(5, 5), (5, 6), (13, 24), (65, 65), (65, 100)])
def test_rate_at_least_feature_size_degenerates_to_1x1(size, rate):
    got = valid_weights(size, rate)
    assert got["center_only_fraction"] == 1
    assert got["valid_weight_fraction"] == pytest.approx(1 / 9)


def test_rate_1_on_a_large_map_is_nearly_all_valid():
    got = valid_weights(513, 1)
    assert got["valid_weight_fraction"] == pytest.approx((1 - 2 / (3 * 513)) ** 2)
    assert got["valid_weight_fraction"] > 0.99
    assert got["center_only_fraction"] == 0


def test_valid_fraction_falls_with_the_rate_at_65():
    """DeepLabv3 Fig. 4: on a 65x65 map the share of valid weights falls as the rate grows, to 1/9."""
    fractions = [valid_weights(65, r)["valid_weight_fraction"] for r in range(1, 70)]
    assert all(a > b for a, b in zip(fractions[:65], fractions[1:65]))
    assert fractions[-1] == pytest.approx(1 / 9)


def test_aspp_report_shape():
    report = aspp_report(65, [1, 6, 12])
    assert report["feature_size"] == 65
    assert [row["rate"] for row in report["rates"]] == [1, 6, 12]
    assert report["rates"][1] == {"rate": 6, **valid_weights(65, 6)}


@pytest.mark.parametrize("kwargs", [dict(feature_size=0, rate=1), dict(feature_size=5, rate=0),
                                    dict(feature_size=5, rate=1, kernel=2), dict(feature_size=(5, 0), rate=1),
                                    dict(feature_size=(5, 5, 5), rate=1)])
def test_bad_arguments_raise(kwargs):
    with pytest.raises(BetterConvError):
        valid_weights(**kwargs)


def small_deeplab():
    return create_model("deeplabv3_mobilenet_v2", width_mult=0.35, atrous_rates=(6, 12))


def test_model_report_one_entry_per_rate():
    model = small_deeplab()
    model.train()
    report = model_aspp_report(model, (65, 65))
    assert model.training  # restored
    assert report["feature_size"] == [5, 5]  # ceil(65 / 16)
    assert [row["rate"] for row in report["rates"]] == [6, 12]
    for row in report["rates"]:
        assert row == {"rate": row["rate"], **valid_weights((5, 5), row["rate"])}
    assert len(report["other_branches"]) == 2  # the 1x1 branch and image pooling


def test_model_without_aspp_raises():
    with pytest.raises(BetterConvError, match="no ASPP"):
        model_aspp_report(create_model("mobilenet_v2", width_mult=0.35), (32, 32))


def test_cli_table(cli):
    code, out, err = cli("analyze", "aspp", "--feature-size", 65, "--rates", "1,6,12,18,24,36")
    assert code == 0 and err == ""
    assert "65x65" in out and len(out.splitlines()) == 2 + 6


def test_cli_json_shape(cli):
    code, out, err = cli("analyze", "aspp", "--feature-size", 65, "--rates", "1,6,12,18,24,36", "--json")
    assert code == 0 and err == ""
    report = json.loads(out)
    assert set(report) == {"feature_size", "rates"}
    assert report["feature_size"] == 65
    assert [row["rate"] for row in report["rates"]] == [1, 6, 12, 18, 24, 36]
    for row in report["rates"]:
        assert set(row) == {"rate", "valid_weight_fraction", "center_only_fraction"}
        assert row == {"rate": row["rate"], **valid_weights(65, row["rate"])}


def test_cli_model(cli):
    code, out, err = cli("analyze", "aspp", "--model", "deeplabv3_mobilenet_v2", "--arg", "width_mult=0.35",
                         "--arg", "atrous_rates=(6, 12)", "--input-size", 65, 65, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["model"] == "deeplabv3_mobilenet_v2"
    assert report["feature_size"] == [5, 5]
    assert [row["rate"] for row in report["rates"]] == [6, 12]
    assert all(row["center_only_fraction"] == 1 for row in report["rates"])
    code, out, err = cli("analyze", "aspp", "--model", "deeplabv3_mobilenet_v2", "--arg", "width_mult=0.35",
                         "--arg", "atrous_rates=(6, 12)", "--input-size", 65, 65)
    assert code == 0 and "5x5" in out and "image pooling" in out


@pytest.mark.parametrize("argv", [
    ["--feature-size", 65, "--rates", "0,6"],
    ["--feature-size", 65, "--rates", "1,6", "--kernel", 2],
    ["--feature-size", 0, "--rates", "1"],
    ["--feature-size", 65],
    ["--model", "no_such_model", "--input-size", 65, 65],
    ["--model", "mobilenet_v2", "--arg", "width_mult=0.35", "--input-size", 32, 32],
    ["--model", "deeplabv3_mobilenet_v2"],
    ["--model", "deeplabv3_mobilenet_v2", "--input-size", 65, 65, "--rates", "6"],
])
def test_cli_bad_arguments_one_line_exit_2(cli, argv):
    code, out, err = cli("analyze", "aspp", *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("betterconv: error: ")
