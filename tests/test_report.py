"""`betterconv report`: built once per session with the cheapest settings (`ReportSettings.quick()`), without the
reference data and with it; every section heading in report.md and index.html; the tables' numbers recomputed by
the functions they cite (or read again from the result files they name); missing and smoke results; the output
folder's safety; and the page in a real browser (Playwright driving Debian's chromium)."""
from __future__ import annotations

import contextlib
import html
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import betterconv.commands.report as report_command
from betterconv import create_model
from betterconv.analysis import profile
from betterconv.analysis.heatmap import to_tensor
from betterconv.analysis.memory import KILO, PAPER_TABLE3, memory_column
from betterconv.cli import main
from betterconv.report import NOT_MEASURED, VERDICTS, ReportSettings, build_report, read_result, write_report
from betterconv.report.fcn import SlidingClassifier
from betterconv.weights import output_class_names, weights_preprocessing
from conftest import SHARED_DATA, count_params, randomise_batch_norm

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
QUICK = ReportSettings.quick()


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The whole report through the command line, with the data folder pointed at a missing one: (output folder,
    the --json summary printed, report.json)."""
    out = tmp_path_factory.mktemp("report") / "out"
    missing = tmp_path_factory.mktemp("nodata") / "shared" / "data"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_command, "DEFAULT_DATA", missing)
        mp.setattr(report_command, "SETTINGS", QUICK)
        with contextlib.redirect_stdout(stdout):
            code = main(["report", "--output", str(out), "--results", str(RESULTS), "--json", "--no-progress"])
    assert code == 0
    return out, stdout.getvalue(), json.loads((out / "report.json").read_text())


@pytest.fixture(scope="session")
def built_with_data(tmp_path_factory):
    """The sections with live figures from the reference data (2 and 4), with it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    out = tmp_path_factory.mktemp("report_data")
    report = build_report(SHARED_DATA, RESULTS, ReportSettings.quick(sections=(2, 4)), progress=False)
    write_report(report, out)
    return out, report


def claim(record: dict, number: str) -> dict:
    return next(c for s in record["sections"] for c in s["claims"] if c["number"] == number)


def table(record: dict, number: str, title_start: str) -> dict:
    found = [t for t in claim(record, number)["tables"] if t["title"].startswith(title_start)]
    assert found, [t["title"] for t in claim(record, number)["tables"]]
    return found[0]


def column(t: dict, name: str) -> list:
    return [row[t["columns"].index(name)] for row in t["rows"]]


# --- structure -----------------------------------------------------------------------------------------------------

def test_json_summary_alone_on_stdout_and_every_file_written(built):
    out, stdout, record = built
    summary = json.loads(stdout)  # nothing but the JSON
    assert [s["number"] for s in summary["sections"]] == [1, 2, 3, 4, 5, 6]
    for path in summary["files"]:
        assert Path(path).is_file(), path
    assert {"index.html", "report.md", "report.json"} <= {Path(p).name for p in summary["files"]}
    figures = [f["name"] for s in record["sections"] for c in s["claims"] for f in c["figures"]]
    assert sorted(p.stem for p in (out / "figures").glob("*.png")) == sorted(figures)


def test_every_heading_in_markdown_and_html(built):
    out, _, record = built
    md = (out / "report.md").read_text()
    page = (out / "index.html").read_text()
    for s in record["sections"]:
        heading = f"{s['number']}. {s['title']}"
        assert f"\n## {heading}\n" in md
        assert f'<h2 id="section-{s["number"]}">{html.escape(heading)}</h2>' in page
        for c in s["claims"]:
            assert f"\n### {c['number']} {c['title']}\n" in md
            assert f'<h3 id="claim-{c["number"]}">{html.escape(c["number"])} {html.escape(c["title"])}</h3>' in page


def test_every_claim_has_a_verdict_a_rule_and_sources(built):
    _, _, record = built
    for s in record["sections"]:
        assert s["claims"], s["title"]
        for c in s["claims"]:
            assert c["verdict"] in VERDICTS and c["rule"] and c["reason"], c["number"]
            assert c["commands"] or c["verdict"] == NOT_MEASURED, c["number"]
            for t in c["tables"]:
                assert t["source"]["kind"] in ("computation", "file") and t["source"]["what"], t["title"]
                if t["source"]["kind"] == "file":  # a file source names its result file(s)
                    assert "benchmarks/results" in t["source"]["what"] or ".json" in t["source"]["what"]


def test_html_is_self_contained(built):
    out, _, record = built
    page = (out / "index.html").read_text()
    assert "<script" not in page and "http://" not in page and "https://" not in page
    figures = sum(len(c["figures"]) for s in record["sections"] for c in s["claims"])
    assert page.count('src="data:image/png;base64,') == figures > 0


def test_without_data_the_live_figures_are_replaced_by_a_line(built):
    _, _, record = built
    heat = claim(record, "2.1")
    assert heat["verdict"] == NOT_MEASURED and not heat["figures"]
    assert any("is absent" in note and "--data" in note for note in heat["notes"])
    anchors = claim(record, "4.2")
    assert any("is absent" in note for note in anchors["notes"])
    assert all(v is None for v in column(anchors["tables"][0], "avg IoU, live"))


# --- every number traceable ----------------------------------------------------------------------------------------

def test_zoo_table_equals_a_recount(built):
    _, _, record = built
    t = table(record, "1.1", "The zoo")
    assert column(t, "model") == list(QUICK.zoo_models)
    h, w = QUICK.zoo_input_size
    for name, params, macs, stride in zip(column(t, "model"), column(t, "params (M)"), column(t, "MACs (G)"),
                                          column(t, "output stride")):
        model = create_model(name).eval()
        assert params == count_params(model)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, h, w))
        assert macs == counter.get_total_flops() // 2
        assert stride == profile(model, input_size=(3, h, w)).output_stride


def test_memory_max_row_traceable(built):
    _, _, record = built
    t = table(record, "1.2", "Max row")
    rows = {r[0]: r for r in t["rows"]}
    v2 = rows["MobileNetV2"]
    assert v2[t["columns"].index("paper max (K)")] == PAPER_TABLE3["MobileNetV2"]["max"]
    again = memory_column("MobileNetV2", "mobilenet_v2", {}, "MobileNetV2", QUICK.memory_input_size)
    assert v2[t["columns"].index("ours max (K)")] == again.max_bytes / KILO
    assert v2[t["columns"].index("vs paper")] == pytest.approx(again.max_bytes / KILO / v2[2] - 1)


def test_k2_table_equals_the_cost_formula(built):
    _, _, record = built
    t = table(record, "5.1", "Standard vs depthwise separable")
    assert sorted(set(column(t, "k"))) == sorted(QUICK.conv_kernels)
    for row in t["rows"]:
        r = dict(zip(t["columns"], row))
        k, d, h = r["k"], r["channels d"], int(r["map"].split("x")[0])
        assert r["standard MACs (M)"] == h * h * d * d * k * k
        assert r["separable MACs (M)"] == h * h * d * (k * k + d)
        assert r["counted standard MACs (M)"] == r["standard MACs (M)"]
        assert r["MAC ratio"] == pytest.approx(r["standard MACs (M)"] / r["separable MACs (M)"])
        assert r["time ratio"] == pytest.approx(r["standard ms"] / r["separable ms"])


def direct_valid_share(n: int, rate: int, k: int = 3) -> float:
    """Taps of a k x k filter at `rate` inside an n x n map, counted position by position."""
    inside = 0
    offsets = [(i - k // 2) * rate for i in range(k)]
    for y in range(n):
        for x in range(n):
            inside += sum(0 <= y + a < n and 0 <= x + b < n for a in offsets for b in offsets)
    return inside / (n * n * k * k)


def test_aspp_table_equals_a_direct_count(built):
    _, _, record = built
    t = table(record, "3.2", "Share of a 3x3")
    rows = [r for r in t["rows"] if r[0] == 33]
    assert rows
    for size, rate, valid, _ in rows:
        assert valid == pytest.approx(direct_valid_share(size, rate), abs=1e-12)


def test_atrous_field_of_view_table(built):
    _, _, record = built
    t = table(record, "3.1", "One 3x3 filter")
    for rate, params, traced, formula in t["rows"]:
        assert params == 9 and traced == formula == 2 * rate + 1


def test_result_tables_equal_the_files_they_name(built):
    _, _, record = built
    fcn = table(record, "2.2", "CamVid test")
    for model, miou, name in zip(column(fcn, "model"), column(fcn, "mIoU"), column(fcn, "result file")):
        assert miou == json.loads((RESULTS / name).read_text())["results"]["test"]["miou"], model
    ladder = json.loads((RESULTS / "det_ladder.json").read_text())
    rungs = table(record, "4.1", "The ladder")
    assert sorted(column(rungs, "VOC07 mAP")) == sorted(r["voc07_map"] for r in ladder["rows"])
    infer = json.loads((RESULTS / "bench_infer.json").read_text())
    deploy = table(record, "6.2", "Batch 1, median ms")
    for res, speedup in zip(infer["results"], column(deploy, "speed-up vs eager")):
        batch1 = [r for r in res["rows"] if r["batch"] == 1]
        eager = next(r for r in batch1 if r["variant"] == "betterconv_eager")
        assert speedup == pytest.approx(eager["median_ms"] / min(r["median_ms"] for r in batch1))


def test_conclusion_macs_equal_a_real_count(built):
    """The MACs counted on the meta device for a trained CamVid model equal a real float32 forward's count."""
    _, _, record = built
    t = table(record, "6.1", "Every trained model")
    rows = [dict(zip(t["columns"], r)) for r in t["rows"]]
    fcn = next(r for r in rows if r["result file"] == "seg_camvid_fcn32s.json")
    model = create_model("fcn32s_mobilenet_v2").eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 360, 480))
    assert fcn["GMACs"] == counter.get_total_flops() // 2
    cls = next(r for r in rows if r["task"] == "classification")
    recorded = json.loads((RESULTS / "cls_compare.json").read_text())
    assert cls["GMACs"] in [row["macs"] for ds in recorded["datasets"].values() for row in ds["rows"]]


# --- the convolutionalised classifier ------------------------------------------------------------------------------

def test_sliding_classifier_equals_the_classifier_and_a_manual_window_average():
    torch.manual_seed(0)
    classifier = randomise_batch_norm(create_model("mobilenet_v2", width_mult=0.35, num_classes=7), (3, 64, 64))
    sliding = SlidingClassifier(classifier).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(sliding(x).flatten(1), classifier(x), atol=1e-5)
        big = torch.randn(1, 3, 288, 320)  # a 9x10 feature map: 3x4 windows of 7x7
        out = sliding(big)
        features = classifier.head(classifier.forward_features(big)[classifier.feature_info[-1].name])
        linear = classifier.classifier[-1]
        assert out.shape == (1, 7, 3, 4)
        for i in range(3):
            for j in range(4):
                pooled = features[:, :, i:i + 7, j:j + 7].mean(dim=(2, 3))  # (1, C)
                assert torch.allclose(out[:, :, i, j], linear(pooled), atol=1e-5)


# --- with the reference data ---------------------------------------------------------------------------------------

def test_with_data_the_heatmap_is_live(built_with_data):
    out, report = built_with_data
    heat = next(c for c in report.claims() if c.number == "2.1")
    assert heat.verdict.value != NOT_MEASURED and len(heat.figures) == 2
    t = heat.tables[0]
    # the top-1 class is the plain classifier's on the image resized to 224 (background excluded)
    weights = SHARED_DATA / "coral" / "mobilenet_v2_1.0_224_quant.tflite"
    model = create_model("mobilenet_v2", weights=weights).eval()
    pre = weights_preprocessing("mobilenet_v2", weights)
    names = output_class_names(model)
    for image_name, class_name in {(r[0], r[1]) for r in t.rows}:
        image = Image.open(SHARED_DATA / "coral" / "images" / image_name).convert("RGB").resize((224, 224))
        with torch.no_grad():
            logits = model(to_tensor(image, pre["mean"], pre["std"]))[0, 1:]
        assert names[1 + int(logits.argmax())] == class_name
    for row in t.rows:
        assert row[-1] == pytest.approx(row[-3] / row[-2])
    assert (out / "figures" / "heatmap_bird_segmentation.png").is_file()


def test_with_data_the_anchors_are_live_and_match_the_result_file(built_with_data):
    _, report = built_with_data
    anchors = next(c for c in report.claims() if c.number == "4.2")
    t = anchors.tables[0]
    live, recorded = t.column("avg IoU, live"), t.column("avg IoU, result file")
    assert all(v is not None for v in live)
    assert live == pytest.approx(recorded, abs=1e-9)  # the same data and seed as benchmarks/anchors_table1.py


# --- missing and smoke results -------------------------------------------------------------------------------------

def test_missing_results_say_which_command_produces_them(tmp_path):
    report = build_report(tmp_path / "no-data", tmp_path / "no-results", ReportSettings.quick(sections=(2, 4, 6)),
                          progress=False)
    for c in report.claims():
        assert c.verdict.value == NOT_MEASURED, c.number
    fcn = next(c for c in report.claims() if c.number == "2.2")
    assert any("not found" in n and "benchmarks/seg_camvid.py --experiment fcn8s" in n for n in fcn.notes)
    assert any("seg_camvid.py --experiment fcn8s" in cmd for cmd in fcn.commands)
    write_report(report, tmp_path / "out")  # a report of nothing measured still renders
    assert "not measured" in (tmp_path / "out" / "report.md").read_text()


def test_smoke_results_are_not_measurements(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    (results / "det_small_objects.json").write_text(json.dumps({"smoke": True, "command": "python x.py --smoke"}))
    (results / "cls_compare.json").write_text(json.dumps({"command": "python cls_compare.py --max-steps-per-epoch 2"}))
    assert read_result(results, "det_small_objects.json").status == "smoke"
    assert read_result(results, "cls_compare.json").status == "smoke"
    assert read_result(results, "det_ladder.json").ok
    report = build_report(tmp_path / "no-data", results, ReportSettings.quick(sections=(4,)), progress=False)
    fix = next(c for c in report.claims() if c.number == "4.4")
    assert any("det_small_objects.json: a smoke test's output" in n and "det_small_objects.py" in n
               for n in fix.notes)


def test_recall_curves_from_a_small_objects_result(tmp_path):
    """det_small_objects.json's summary (as benchmarks/det_small_objects.py writes it) gives the recall curves."""
    results = tmp_path / "results"
    results.mkdir()
    bins = ["0-16", "16-32", "32-48"]

    def row(backbone, name, ap, recall):
        return {"backbone": backbone, "row": name, "input": "416", "coco_map_small": {"mean": ap},
                "recall_small": {"mean": recall[0]},
                "recall_by_size": {"bins": bins, "truths": [3, 4, 5], "recall": recall}}

    summary = [row("darknet19", "single", 0.01, [0.1, 0.2, 0.5]), row("darknet19", "3-scale", 0.03, [0.3, 0.4, 0.6])]
    (results / "det_small_objects.json").write_text(json.dumps({"command": "python benchmarks/det_small_objects.py",
                                                                "date": "2026-12-02", "summary": summary}))
    report = build_report(tmp_path / "no-data", results, ReportSettings.quick(sections=(4,)), progress=False)
    fix = next(c for c in report.claims() if c.number == "4.4")
    assert [f.name for f in fix.figures] == ["recall_by_size"]
    assert fix.tables[0].rows == (("det_small_objects.json", "darknet19: single -> 3-scale", "416", 0.01, 0.03, 0.1,
                                   0.3),)
    assert fix.verdict.value == "holds"  # 3x the AP_small: the rule's 2x


# --- the output folder ---------------------------------------------------------------------------------------------

def test_refuses_a_folder_that_is_not_a_report(tmp_path, cli):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    code, out, err = cli("report", "--output", folder, "--results", RESULTS)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "not a betterconv report" in err
    assert (folder / "notes.txt").read_text() == "keep me"


def test_rewrites_its_own_folder_and_drops_stale_figures(tmp_path):
    first = build_report(tmp_path / "no-data", RESULTS, ReportSettings.quick(sections=(3,)), progress=False)
    write_report(first, tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "atrous_fov.png").is_file()
    second = build_report(tmp_path / "no-data", RESULTS, ReportSettings.quick(sections=(4,)), progress=False)
    write_report(second, tmp_path / "out")
    assert not (tmp_path / "out" / "figures" / "atrous_fov.png").exists()
    assert (tmp_path / "out" / "figures" / "yolo_ladder.png").is_file()
    assert "## 4. YOLOv2" in (tmp_path / "out" / "report.md").read_text()


def test_unknown_section_is_an_error():
    with pytest.raises(Exception, match="no report section 7"):
        build_report("x", RESULTS, ReportSettings(sections=(7,)), progress=False)


# --- a real browser ------------------------------------------------------------------------------------------------

def browser():
    """(sync_playwright, executable path or None) or a skip with the reason."""
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 -- optional test dependency
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    executable = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                       if shutil.which(n)), None)
    return sync_playwright, executable


def test_page_in_a_real_browser(built):
    out, _, record = built
    sync_playwright, executable = browser()
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        except Exception as e:  # no browser of Playwright's own and no system chromium
            pytest.skip(f"no Chromium to drive: install Debian's chromium (apt-get install chromium): "
                        f"{str(e).splitlines()[0]}")
        try:
            page = b.new_page()
            problems = []
            page.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.goto((out / "index.html").as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt])")
            h2 = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            h3 = page.evaluate("Array.from(document.querySelectorAll('h3')).map(h => h.textContent)")
        finally:
            b.close()
    assert problems == []
    figures = [f["title"] for s in record["sections"] for c in s["claims"] for f in c["figures"]]
    assert len(images) == len(figures) > 0
    assert all(complete and width > 0 for complete, width, _ in images), images
    assert h2 == [f"{s['number']}. {s['title']}" for s in record["sections"]]
    assert h3 == [f"{c['number']} {c['title']}" for s in record["sections"] for c in s["claims"]]


def test_no_nan_or_inf_in_the_tables(built):
    _, _, record = built
    for s in record["sections"]:
        for c in s["claims"]:
            for t in c["tables"]:
                for row in t["rows"]:
                    for v in row:
                        assert not (isinstance(v, float) and (math.isnan(v) or math.isinf(v))), (t["title"], row)
