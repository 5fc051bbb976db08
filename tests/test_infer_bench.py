"""`betterconv bench infer`: the measuring function on tiny models (one timed round), its table, JSON and CLI."""
import json

import pytest

from betterconv.analysis.infer_bench import (LABELS, VARIANTS, InferBenchResult, InferRow, measure_inference,
                                             torchvision_peer)
from betterconv.errors import BetterConvError

pytest.importorskip("onnxruntime")
pytest.importorskip("torchvision")

TINY = dict(width_mult=0.35, num_classes=10)
ROW_KEYS = {"variant", "label", "batch", "median_ms", "min_ms", "images_per_s", "cpu_ms", "speedup_vs_torchvision",
            "paired_speedup_vs_torchvision", "speedup_vs_betterconv_eager", "times_ms"}
TABLE_COLUMNS = ("batch", "median ms", "min ms", "images/s", "cpu ms", "vs torchvision", "vs bc eager")


def table_rows(table: str) -> dict[tuple[str, int], dict[str, str]]:
    """The measurement rows of `InferBenchResult.format()`, in order: (label, batch) -> the other columns as
    printed."""
    lines = table.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("variant"))
    assert lines[head].split()[1:] == "batch median ms min ms images/s cpu ms vs torchvision vs bc eager".split()
    assert set(lines[head + 1]) == {"-"}
    rows = {}
    for line in lines[head + 2:]:
        label = max((label for label in LABELS.values() if line.startswith(label + " ")), key=len, default=None)
        if label is None:  # the notes after the table
            break
        cells = dict(zip(TABLE_COLUMNS, line[len(label):].split(), strict=True))
        rows[label, int(cells["batch"])] = cells
    return rows


@pytest.fixture(scope="module")
def tiny_result() -> InferBenchResult:
    # one thread: two threads that wait on each other crawl when another process keeps the second core busy
    return measure_inference("mobilenet_v2", input_size=(64, 64), model_kwargs=TINY, batches=(1, 2), repeats=1,
                             warmup=1, threads=1)


def test_rows_and_keys(tiny_result):
    r = tiny_result
    assert r.torchvision_model == "mobilenet_v2" and r.input_size == (64, 64) and r.threads == 1
    measured = [v for v in VARIANTS if v != "betterconv_winograd"]  # MobileNetV2: no 3x3 stride-1 convolution
    assert [(row.variant, row.batch) for row in r.rows] == [(v, b) for b in (1, 2) for v in measured]
    assert "not measured" in r.checks["winograd"]
    for row in r.rows:
        assert len(row.times_ms) == 1 and row.median_ms == row.min_ms > 0
        assert row.images_per_s == pytest.approx(row.batch * 1000 / row.median_ms)
        assert row.speedup_vs_torchvision > 0 and row.speedup_vs_betterconv_eager > 0
    assert r.row("torchvision_eager", 1).speedup_vs_torchvision == 1.0
    # the same weights in both models; folding, export and quantisation checked
    assert r.checks["max_abs_diff_betterconv_vs_torchvision"] <= 1e-5
    assert r.checks["max_abs_diff_fused_cl_vs_eager"] <= 1e-4
    assert r.checks["max_abs_diff_onnx_fp32_vs_eager"] <= 1e-3
    assert r.checks["max_abs_diff_ncnn_fp32_vs_eager"] <= 1e-3
    assert r.checks["int8_calibration_images"] == 4
    assert 0.01 < r.checks["output_std"] < 100  # batch-norm statistics calibrated: activations neither fade nor blow up

    d = json.loads(json.dumps(r.to_dict()))
    assert {"model", "model_kwargs", "input_size", "threads", "repeats", "torchvision_model", "peer_note", "checks",
            "rows", "acceptance", "load_average_before", "load_average_after"} <= set(d)
    assert all(set(row) == ROW_KEYS for row in d["rows"])
    acc = d["acceptance"]
    assert set(acc["eager_within_5_percent"]) == {"1", "2"} and isinstance(acc["eager_passes"], bool)
    assert acc["fastest_batch1"]["variant"] in VARIANTS[1:]

    table = r.format()
    assert "fastest betterconv path" in table
    rows = table_rows(table)
    assert list(rows) == [(row.label, row.batch) for row in r.rows]
    for row in r.rows:
        cells = rows[row.label, row.batch]
        assert cells["median ms"] == f"{row.median_ms:.2f}"
        assert cells["vs torchvision"] == f"{row.speedup_vs_torchvision:.2f}x"
        assert cells["vs bc eager"] == f"{row.speedup_vs_betterconv_eager:.2f}x"


def test_winograd_variant_on_a_network_with_3x3_convolutions():
    # Darknet-19: every 3x3 convolution is stride 1; the per-layer choice is made for each batch size
    r = measure_inference("darknet19", input_size=(64, 64), batches=(1, 2), repeats=1, warmup=0, threads=1,
                          variants=["betterconv_eager", "betterconv_winograd"], interleave=False)
    assert [(row.variant, row.batch) for row in r.rows] == [(v, b) for b in (1, 2) for v in
                                                            ("betterconv_eager", "betterconv_winograd")]
    for b in (1, 2):
        check = r.checks[f"winograd_batch{b}"]
        assert check["layers"] == 12 and sum(check["chosen"].values()) == 12  # Darknet-19: twelve 3x3 convs
        assert check["max_abs_diff_vs_eager"] < 1e-3


def test_no_torchvision_peer():
    for name in ("deeplabv3_mobilenet_v2", "yolov2"):
        tv, _, note = torchvision_peer(name)
        assert tv is None and "torchvision has no" in note
    assert torchvision_peer("mobilenet_v2", {"output_stride": 8})[0] is None  # no torchvision equivalent
    r = measure_inference("deeplabv3_mobilenet_v2", input_size=(65, 65), model_kwargs={"width_mult": 0.35},
                          batches=(1,), repeats=1, warmup=0, threads=1,
                          variants=["torchvision_eager", "betterconv_eager"])
    assert r.torchvision_model is None and "deeplabv3_mobilenet_v3_large" in r.peer_note
    assert [row.variant for row in r.rows] == ["betterconv_eager"]
    assert r.rows[0].speedup_vs_torchvision is None and r.acceptance() == {}
    rows = table_rows(r.format())
    assert list(rows) == [(LABELS["betterconv_eager"], 1)]  # torchvision's variant was not run: no row
    cells = rows[LABELS["betterconv_eager"], 1]
    assert cells["vs torchvision"] == "-"  # nothing to compare with: the placeholder, not a number
    assert cells["vs bc eager"] == "1.00x" and cells["median ms"] == f"{r.rows[0].median_ms:.2f}"


def test_acceptance_thresholds():
    def row(variant, ms):
        return InferRow(variant, 1, ms, ms, 1000 / ms, ms, 10.0 / ms, 10.0 / ms, None)

    r = InferBenchResult("mobilenet_v2", {}, (224, 224), 2, {1: 1}, 0, "mobilenet_v2", "", {},
                         [row("torchvision_eager", 10.0), row("betterconv_eager", 10.4),
                          row("onnxruntime_int8", 3.4)])
    acc = r.acceptance()
    assert acc["eager_passes"] and not acc["fastest_batch1"]["passes"]
    r.rows[1] = row("betterconv_eager", 10.6)
    r.rows[2] = row("onnxruntime_int8", 3.3)
    acc = r.acceptance()
    assert not acc["eager_passes"] and acc["fastest_batch1"]["passes"]


def test_bad_arguments():
    with pytest.raises(BetterConvError, match="unknown variant"):
        measure_inference("mobilenet_v2", variants=["tensorrt"])
    with pytest.raises(BetterConvError, match="batch sizes"):
        measure_inference("mobilenet_v2", batches=(0,))


def test_cli(tmp_path, cli):
    out = tmp_path / "infer.json"
    code, printed, err = cli("bench", "infer", "mobilenet_v2", "--input-size", "64", "64", "--batch", "1",
                             "--repeats", "1", "--warmup", "0", "--threads", "1", "--arg", "width_mult=0.35",
                             "--variants", "torchvision_eager", "betterconv_eager", "onnxruntime_fp32",
                             "--output", out)
    assert code == 0, err
    assert "betterconv eager fp32" in printed
    data = json.loads(out.read_text())
    assert {"date", "command", "machine", "versions", "results", "acceptance"} <= set(data)
    assert data["machine"]["threads"] == 1 and "load_average_before" in data["machine"]
    assert [row["variant"] for row in data["results"][0]["rows"]] == ["torchvision_eager", "betterconv_eager",
                                                                      "onnxruntime_fp32"]
    code, _, err = cli("bench", "infer", "mobilenet_v2", "--variants", "tensorrt")
    assert code == 2 and "tensorrt" in err and len(err.strip().splitlines()) == 1, err


def test_blocked_timing_calls_each_variant_in_one_block():
    """`interleave=False`: every variant's timed calls run back to back (its warm-up first), none in between."""
    from betterconv.analysis import timing

    calls = []
    timed = [timing.Timed(v, lambda v=v: calls.append(v)) for v in ("a", "b")]
    assert timing.time_in_blocks(timed, warmup=1, rounds=3, time_budget_s=None) == 3
    assert calls == ["a"] * 4 + ["b"] * 4
    calls.clear()
    timed = [timing.Timed(v, lambda v=v: calls.append(v)) for v in ("a", "b")]
    assert timing.time_interleaved(timed, warmup=1, rounds=2, time_budget_s=None, log=lambda m: None) == 2
    assert calls == ["a", "b", "a", "b", "b", "a"]
    r = measure_inference("mobilenet_v2", input_size=(64, 64), model_kwargs=TINY, batches=(1,), repeats=2,
                          warmup=0, threads=1, variants=["torchvision_eager", "onnxruntime_fp32"], interleave=False)
    assert r.checks["interleaved_rounds"] is False and r.checks["onnxruntime_spinning"] is True
    assert [len(row.times_ms) for row in r.rows] == [2, 2]
