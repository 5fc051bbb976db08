"""Section 4, YOLOv2 (survey §II-C): the path from YOLO to YOLOv2 as measured (the ablation ladder), the anchors of
Table 1 (live on coco128 when the reference data is there), and the small-object weakness with and without the
fixes (a second or third prediction scale), from result files."""
from __future__ import annotations

from typing import Any

from ..data.detection import detection_dataset
from ..tasks.anchors import compare_anchors, dataset_boxes
from .context import Context, png_bytes, pyplot
from .records import (DOES_NOT_HOLD, HOLDS, IN_DIRECTION, Claim, Column, Figure, Section, Source, Table, Verdict,
                      not_measured)

# det_ladder.py's rungs in the order of YOLOv2's Table 2, with what each adds
PAPER_RUNGS = {"anchors": "1 anchor boxes with offsets, hand-picked anchors", "priors": "2 + dimension priors, "
               "direct location", "passthrough": "3 + passthrough", "multiscale": "4 + multi-scale training",
               "hires": "5 rung 4 at a higher test resolution"}
EXTRA_RUNGS = {"second_scale": "rung 4 + second scale (stride 16)", "second_scale_544": "rung 4 + second scale, "
               "tested at 544"}
ANCHOR_DATA = "coco128"
ANCHOR_SPLIT = "train2017"
# Table 1's rows as anchors_table1.json keys the paper's VOC 2007 figures: (method, k) -> key
PAPER_KEYS = {("Euclidean k-means", 5): "cluster_sse_5", ("IoU k-means", 5): "cluster_iou_5",
              ("Faster R-CNN anchors", 9): "anchor_boxes_9", ("IoU k-means", 9): "cluster_iou_9"}
WEAK = 0.5  # "weak on small objects": AP_small below half of AP_medium
FIX_FACTOR = 2.0  # "fixed": AP_small at least doubled
# (result file, the row without the fix, the row with it)
SECOND_SCALE_PAIRS = (("det_ladder.json", "multiscale", "second_scale"), ("det_ladder.json", "hires",
                                                                           "second_scale_544"),
                      ("det_second_scale_cpu.json", "passthrough", "second_scale"),
                      ("det_second_scale_cpu_long.json", "passthrough", "second_scale"))
DET_FILES = ("det_ladder.json", "det_second_scale_cpu.json", "det_second_scale_cpu_long.json")


def ladder_claim(ctx: Context) -> Claim:
    r = ctx.result("det_ladder.json")
    rule = ("holds when every rung of YOLOv2's Table 2 present here (anchors, priors, passthrough, multi-scale, "
            "high resolution) raises VOC07 mAP over the one before; holds in direction when the last rung beats "
            "the first")
    survey = ("YOLOv2 climbs from YOLO step by step (Table 2: batch norm, a high-resolution classifier, anchor "
              "boxes, dimension clusters, direct location prediction, passthrough, multi-scale training, a higher "
              "test resolution), and each step adds mAP.")
    if not r.ok:
        return Claim("4.1", "From YOLO to YOLOv2: the ablation ladder", "§II-C; YOLOv2 Table 2", survey,
                     not_measured(rule, r.missing_line()), (r.command,), notes=(r.missing_line(),))
    rows_by = {row["rung"]: row for row in r.data.get("rows", [])}
    order = [k for k in (*PAPER_RUNGS, *EXTRA_RUNGS) if k in rows_by]
    labels = {**PAPER_RUNGS, **EXTRA_RUNGS}
    rows = tuple((labels[k], rows_by[k]["test_size"], rows_by[k].get("voc07_map"), rows_by[k].get("coco_map50"),
                  rows_by[k].get("coco_map_small"), rows_by[k].get("coco_map_medium"),
                  rows_by[k].get("train_seconds")) for k in order)
    source = r.source()
    table = Table(f"The ladder on {r.data.get('data', 'CamVid boxes').split(' (')[0]}, {r.data.get('epochs')} epochs "
                  "from scratch, one seed per rung", (
                      Column("rung"), Column("test size"), Column("VOC07 mAP", ".3f"), Column("COCO AP50", ".3f"),
                      Column("AP_small", ".4f"), Column("AP_medium", ".3f"), Column("training seconds")), rows, source)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [row[2] for row in rows], 0.4, label="VOC07 mAP")
    ax.bar([x + 0.2 for x in xs], [row[3] for row in rows], 0.4, label="COCO AP50")
    ax.set_xticks(list(xs), [row[0] for row in rows], rotation=25, ha="right", fontsize=7)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("YOLOv2's ladder, as measured")
    figure = Figure("yolo_ladder", "The ablation ladder", png_bytes(fig), source)
    ladder = [rows_by[k]["voc07_map"] for k in PAPER_RUNGS if k in rows_by]
    steps = [b - a for a, b in zip(ladder, ladder[1:])]
    value = (HOLDS if steps and all(s > 0 for s in steps) else IN_DIRECTION if len(ladder) > 1
             and ladder[-1] > ladder[0] else DOES_NOT_HOLD)
    reason = "VOC07 mAP changes per rung: " + ", ".join(f"{s:+.3f}" for s in steps) + (
        f"; first {ladder[0]:.3f}, last {ladder[-1]:.3f}" if ladder else "")
    notes = (f"The result file's note: {r.data['note']}",) if r.data.get("note") else ()
    return Claim("4.1", "From YOLO to YOLOv2: the ablation ladder", "§II-C; YOLOv2 Table 2", survey,
                 Verdict(value, rule, reason), (r.command,), (table,), (figure,), notes)


def anchors_claim(ctx: Context) -> Claim:
    ctx.progress("anchors")
    r = ctx.result("anchors_table1.json")
    recorded = {(row["method"], row["k"]): row["avg_iou"] for row in r.data.get("rows", [])} if r.ok else {}
    paper = r.data.get("paper_voc2007", {}) if r.ok else {}
    data = ctx.data_path(ANCHOR_DATA)
    live: dict[tuple[str, int], float] = {}
    notes = []
    if data is not None:
        dataset = detection_dataset(f"yolo:{data}", ANCHOR_SPLIT)
        wh, sizes = dataset_boxes(dataset, image_sizes=True)
        live = {(row.method, row.k): row.avg_iou for row in compare_anchors(wh, (5, 9), sizes)}
        notes.append(f"Live: {len(wh)} boxes of {ANCHOR_DATA} {ANCHOR_SPLIT}.")
    else:
        notes.append(ctx.no_data_line(ANCHOR_DATA, "The live computation"))
    if not r.ok:
        notes.append(r.missing_line())
    keys = list(dict.fromkeys([*live, *recorded]))
    rows = tuple((m, k, live.get((m, k)), recorded.get((m, k)),
                  paper.get(PAPER_KEYS[(m, k)]) if (m, k) in PAPER_KEYS else None) for m, k in keys)
    sources = []
    if live:
        sources.append(f"computed: betterconv.tasks.anchors.compare_anchors on yolo:{ctx.data_asked / ANCHOR_DATA} "
                       f"{ANCHOR_SPLIT}")
    if r.ok:
        sources.append(r.source().describe() + " (the paper's column is its paper_voc2007 record)")
    table = Table("Average IoU of the boxes with their closest prior (YOLOv2 Table 1)", (
        Column("prior generation"), Column("k"), Column("avg IoU, live", ".2%"), Column("avg IoU, result file", ".2%"),
        Column("paper (VOC 2007)", ".1%")), rows, Source("computation" if live else "file",
                                                          "; ".join(sources) or "none"))
    values = live or recorded
    rule = ("holds when IoU k-means beats Euclidean k-means at k = 5, IoU k-means with 5 priors is at least as "
            "good as the 9 hand-picked anchors, and IoU k-means with 9 is the best row; holds in direction when "
            "IoU k-means beats Euclidean k-means at every k")
    needed = [("IoU k-means", 5), ("Euclidean k-means", 5), ("Faster R-CNN anchors", 9), ("IoU k-means", 9),
              ("Euclidean k-means", 9)]
    if not all(n in values for n in needed):
        verdict = not_measured(rule, "no live computation (reference data absent) and no result file")
    else:
        v = values
        all_hold = (v[needed[0]] > v[needed[1]] and v[needed[0]] >= v[needed[2]]
                    and v[needed[3]] == max(v.values()))
        direction = v[needed[0]] > v[needed[1]] and v[needed[3]] > v[needed[4]]
        verdict = Verdict(HOLDS if all_hold else IN_DIRECTION if direction else DOES_NOT_HOLD, rule,
                          ("live" if live else "result file") + ": " + ", ".join(
                              f"{m} k={k} {100 * v[(m, k)]:.2f}" for m, k in needed))
    return Claim("4.2", "Dimension clusters: YOLOv2's Table 1 on the data here", "§II-C; YOLOv2 §2, Table 1",
                 "Priors found by k-means with 1 - IoU as the distance fit the boxes better than Euclidean k-means "
                 "and than Faster R-CNN's hand-picked anchors: 5 clusters already match 9 anchor boxes.",
                 verdict, (f"betterconv anchors --data yolo:../shared/data/{ANCHOR_DATA} --split {ANCHOR_SPLIT} -k 5 "
                           "--compare", "python benchmarks/anchors_table1.py"), (table,), (), tuple(notes))


def _rows(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["rung"]: row for row in data.get("rows", [])}


def weakness_claim(ctx: Context) -> Claim:
    found = [ctx.result(name) for name in DET_FILES]
    ok = [r for r in found if r.ok]
    rows = tuple((r.name, row["rung"], row["test_size"], row.get("coco_map_small"), row.get("coco_map_medium"),
                  row.get("coco_map_large"), row["coco_map_small"] / row["coco_map_medium"])
                 for r in ok for row in r.data.get("rows", []) if row.get("coco_map_medium"))
    rule = (f"holds when AP_small is below {WEAK:g} x AP_medium in every evaluated detector here; holds in "
            "direction when it is below AP_medium in every one")
    survey = ("YOLOv2 predicts from one 13x13 map (stride 32): small objects share a cell with others and are seen "
              "through coarse features only, so it is weakest on small objects.")
    notes = tuple(r.missing_line() for r in found if not r.ok)
    if not rows:
        return Claim("4.3", "The small-object weakness", "§II-C", survey,
                     not_measured(rule, "no detection result file"), tuple(r.command for r in found), notes=notes)
    source = Source("file", "; ".join(r.source().describe() for r in ok))
    table = Table("COCO AP by object size (CamVid boxes test split; small < 32x32 px)", (
        Column("result file"), Column("model"), Column("test size"), Column("AP_small", ".4f"),
        Column("AP_medium", ".3f"), Column("AP_large", ".3f"), Column("AP_small / AP_medium", ".2f")), rows, source)
    ratios = [row[-1] for row in rows]
    value = HOLDS if all(x < WEAK for x in ratios) else IN_DIRECTION if all(x < 1 for x in ratios) else DOES_NOT_HOLD
    return Claim("4.3", "The small-object weakness", "§II-C", survey,
                 Verdict(value, rule, f"AP_small / AP_medium from {min(ratios):.2f} to {max(ratios):.2f} over "
                                      f"{len(ratios)} detectors"),
                 tuple(r.command for r in found), (table,), (), notes)


def fix_pairs(ctx: Context) -> tuple[list[tuple], list[str], list[Any]]:
    """(result file, comparison, test size, AP_small without, with, recall_small without, with) for every
    comparison of a detector with and without a finer prediction scale that a result file records."""
    pairs, missing, sources = [], [], []
    for name, without, with_fix in SECOND_SCALE_PAIRS:
        r = ctx.result(name)
        if not r.ok:
            missing.append(r.missing_line())
            continue
        rows = _rows(r.data)
        if without in rows and with_fix in rows:
            a, b = rows[without], rows[with_fix]
            pairs.append((name, f"{without} -> {with_fix}", b["test_size"], a["coco_map_small"],
                          b["coco_map_small"], None, None))
            sources.append(r)
    small = ctx.result("det_small_objects.json")
    if small.ok:
        sources.append(small)
        summary = {(s["backbone"], s["row"]): s for s in small.data.get("summary", [])}
        for backbone in dict.fromkeys(b for b, _ in summary):
            a, b = summary.get((backbone, "single")), summary.get((backbone, "3-scale"))
            if a and b:
                pairs.append((small.name, f"{backbone}: single -> 3-scale", b.get("input"),
                              a["coco_map_small"]["mean"], b["coco_map_small"]["mean"],
                              a["recall_small"]["mean"], b["recall_small"]["mean"]))
    else:
        missing.append(small.missing_line())
    return pairs, missing, sources


def recall_figure(small: dict[str, Any]) -> bytes:
    plt = pyplot()
    backbones = list(dict.fromkeys(s["backbone"] for s in small["summary"]))
    fig, axes = plt.subplots(1, len(backbones), figsize=(6 * len(backbones), 3.8), squeeze=False)
    for ax, backbone in zip(axes[0], backbones):
        for s in small["summary"]:
            if s["backbone"] == backbone:
                curve = s["recall_by_size"]
                ax.plot(range(len(curve["bins"])), [v if v is not None else float("nan") for v in curve["recall"]],
                        marker="o", label=s["row"])
                ax.set_xticks(range(len(curve["bins"])), curve["bins"], rotation=30, fontsize=7)
        ax.set_title(backbone)
        ax.set_xlabel("sqrt(box area), px of the original image")
        ax.set_ylabel("recall (IoU 0.5)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return png_bytes(fig)


def fix_claim(ctx: Context) -> Claim:
    pairs, missing, sources = fix_pairs(ctx)
    rule = (f"holds when every recorded comparison finds AP_small at least {FIX_FACTOR:g}x higher with the finer "
            "prediction scale(s); holds in direction when it is higher in every one")
    survey = ("Predicting from more than one scale (YOLOv3 §2.3: a second map at stride 16, a third at stride 8, "
              "fed by upsampled deep features) is the fix for small objects.")
    commands = tuple(dict.fromkeys(r.command for r in sources)) or ("python benchmarks/det_small_objects.py",)
    notes = list(missing)
    if not pairs:
        return Claim("4.4", "The fix: prediction across scales", "§II-C; YOLOv3 §2.3", survey,
                     not_measured(rule, "no result file compares the heads"), commands, notes=tuple(notes))
    source = Source("file", "; ".join(r.source().describe() for r in sources))
    table = Table("AP_small (and recall of small boxes) without and with the finer scale(s)", (
        Column("result file"), Column("comparison"), Column("test input"), Column("AP_small without", ".4f"),
        Column("AP_small with", ".4f"), Column("recall < 32 px without", ".3f"), Column("recall < 32 px with", ".3f")),
        tuple(pairs), source)
    figures = []
    small = ctx.result("det_small_objects.json")
    if small.ok and small.data.get("summary"):
        figures.append(Figure("recall_by_size", "Recall against object size, with and without the fixes",
                              recall_figure(small.data), small.source()))
    else:
        notes.append("The recall-vs-size curves come from det_small_objects.json, which is not here yet.")
    gains = [with_ / without if without else float("inf") for _, _, _, without, with_, _, _ in pairs]
    value = (HOLDS if all(g >= FIX_FACTOR for g in gains) else IN_DIRECTION if all(g > 1 for g in gains)
             else DOES_NOT_HOLD)
    reason = "AP_small with / without: " + ", ".join(f"{g:.2f}x" for g in gains)
    return Claim("4.4", "The fix: prediction across scales", "§II-C; YOLOv3 §2.3", survey,
                 Verdict(value, rule, reason), commands, (table,), tuple(figures), tuple(notes))


def yolo(ctx: Context) -> Section:
    return Section(4, "YOLOv2: better, faster, stronger", (ladder_claim(ctx), anchors_claim(ctx),
                                                           weakness_claim(ctx), fix_claim(ctx)))
