"""Section 6, Conclusion: "Better & Stronger" against "Quicker & Lighter" as one accuracy-vs-cost chart over every
model trained here (result files; MACs from the files or counted at each model's test size), and the deployment
table of the machine the speed results were measured on."""
from __future__ import annotations

import ast
import shlex
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..weights import create_model
from .context import Context, png_bytes, pyplot
from .fcn import test_entry
from .records import (DOES_NOT_HOLD, HOLDS, IN_DIRECTION, Claim, Column, Figure, Section, Source, Table, Verdict,
                      not_measured)
from .results import PRODUCERS, Result

SEG_FILES = tuple(name for name in PRODUCERS if name.startswith("seg_camvid_"))
SEG_SIZE = (360, 480)  # CamVid's test frames, where the segmentation results were evaluated
DET_LADDER_FILES = ("det_ladder.json", "det_second_scale_cpu.json", "det_second_scale_cpu_long.json")
LIGHTER = 4.0  # "a fraction of the cost": at most 1/4 of the MACs ...
CLOSE = 0.9  # ... for at least 90% of the best model's accuracy
SPEEDUP = 2.0  # deployment "holds" at 2x over eager PyTorch


def counted_macs(name: str, kwargs: dict[str, Any], size: tuple[int, int]) -> int:
    """MACs of `create_model(name, **kwargs)` on one (3, H, W) input, counted by torch.utils.flop_counter (the
    counter of betterconv.profile) on the meta device: no weights are allocated and nothing is computed."""
    with torch.device("meta"):
        model = create_model(name, **kwargs).eval()
        x = torch.zeros(1, 3, *size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2


def command_args(command: str) -> dict[str, Any]:
    """The `--arg KEY=VALUE` builder keywords a recorded command passed (values read as Python literals)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return {}
    out = {}
    for flag, value in zip(words, words[1:]):
        if flag == "--arg" and "=" in value:
            key, text = value.split("=", 1)
            try:
                out[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                out[key] = text
    return out


def seg_model(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The registered model and builder keywords a segmentation result file describes."""
    name = str(data.get("model", "")).split(",")[0].split(" ")[0]
    head = data.get("head")
    kwargs: dict[str, Any] = {}
    if isinstance(head, dict):
        rates = str(head.get("atrous_rates", ""))
        kwargs["atrous_rates"] = tuple(int(r) for r in rates.split(",")) if rates[:1].isdigit() else ()
        kwargs["image_pooling"] = bool(head.get("image_pooling", True))
    return name, kwargs


def trained_models(ctx: Context) -> tuple[list[tuple], list[Result], list[str]]:
    """(task, dataset, model, metric, value, MACs, how the MACs were had, result file) for every trained model."""
    entries, used, missing = [], [], []

    def read(name: str) -> Result | None:
        r = ctx.result(name)
        (used if r.ok else missing).append(r if r.ok else r.missing_line())
        return r if r.ok else None

    if (r := read("cls_compare.json")) is not None:
        for ds, data in r.data.get("datasets", {}).items():
            for row in data.get("rows", []):
                entries.append(("classification", ds, row["model"], "top-1", row["top1"], row["macs"],
                                "result file (32x32)", r.name))
    for name in SEG_FILES:
        if (r := read(name)) is None:
            continue
        model, kwargs = seg_model(r.data)
        entry = test_entry(r.data)
        if model and entry.get("miou") is not None:
            macs = counted_macs(model, kwargs, SEG_SIZE)
            entries.append(("segmentation", "CamVid", name.removeprefix("seg_camvid_").removesuffix(".json"),
                            "mIoU", entry["miou"], macs, f"counted at {SEG_SIZE[0]}x{SEG_SIZE[1]}", r.name))
    for name in DET_LADDER_FILES:
        if (r := read(name)) is None:
            continue
        model = str(r.data.get("model", "yolov2"))
        base = command_args(r.command)
        for row in r.data.get("rows", []):
            kwargs = {**base, **row.get("model_kwargs", {})}
            size = int(row["test_size"])
            macs = counted_macs(model, kwargs, (size, size))
            entries.append(("detection", "CamVid boxes", f"{name.removesuffix('.json')}: {row['rung']}",
                            "VOC07 mAP", row["voc07_map"], macs, f"counted at {size}x{size}", r.name))
    if (r := read("det_coco128.json")) is not None:
        entries.append(("detection", "coco128 (trained and tested on the same images)", str(r.data.get("model")),
                        "VOC07 mAP", r.data.get("results", {}).get("voc07_map"), r.data.get("macs"),
                        "result file", r.name))
    return entries, used, missing


def tradeoff_chart(entries: list[tuple]) -> bytes:
    plt = pyplot()
    tasks = list(dict.fromkeys(e[0] for e in entries))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for ds in dict.fromkeys(e[1] for e in entries if e[0] == task):
            group = [e for e in entries if e[0] == task and e[1] == ds]
            ax.scatter([e[5] / 1e9 for e in group], [100 * e[4] for e in group], label=ds, s=25)
            for e in group:
                ax.annotate(e[2].split(": ")[-1], (e[5] / 1e9, 100 * e[4]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("GMACs per image")
        ax.set_ylabel(f"{next(e[3] for e in entries if e[0] == task)} (%)")
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Every model trained here: accuracy against computation")
    return png_bytes(fig)


def tradeoff_claim(ctx: Context) -> Claim:
    ctx.progress("accuracy vs cost")
    entries, used, missing = trained_models(ctx)
    rule = (f"per task and dataset with models of different cost: a lighter model reaches at least {CLOSE:.0%} of "
            f"the most accurate one's metric at no more than 1/{LIGHTER:g} of its MACs; holds when that is so for "
            "every such group, in direction when for some")
    survey = ("The networks split into two lines: \"Better & Stronger\" (FCN, DeepLabv3, YOLOv2) buy accuracy with "
              "computation, while \"Quicker & Lighter\" (MobileNets, ShuffleNet) keep most of it at a fraction of "
              "the cost.")
    commands = tuple(dict.fromkeys(r.command for r in used))
    if not entries:
        return Claim("6.1", "Better & Stronger against Quicker & Lighter", "Conclusion", survey,
                     not_measured(rule, "no result file of a trained model"), commands, notes=tuple(missing))
    source = Source("file", "; ".join(r.source().describe() for r in used) + "; segmentation and CamVid-box "
                    "detector MACs counted by torch.utils.flop_counter on create_model(name, **the file's "
                    "keywords) at the test size, with the registered class count (it changes only the last layer)")
    table = Table("Every trained model: its accuracy and its cost", (
        Column("task"), Column("dataset"), Column("model"), Column("metric"), Column("value", ".2%"),
        Column("GMACs", ".3f", 1e9), Column("MACs from"), Column("result file")), tuple(entries), source)
    groups = {}
    for e in entries:
        groups.setdefault((e[0], e[1]), []).append(e)
    judged = []
    for key, group in groups.items():
        if len({e[5] for e in group}) < 2 or any(e[4] is None or e[5] is None for e in group):
            continue
        best = max(group, key=lambda e: e[4])
        light = [e for e in group if e[5] * LIGHTER <= best[5] and e[4] >= CLOSE * best[4]]
        judged.append((key, best, light))
    if not judged:
        verdict = not_measured(rule, "no task with models of different cost")
    else:
        found = [j for j in judged if j[2]]
        value = HOLDS if len(found) == len(judged) else IN_DIRECTION if found else DOES_NOT_HOLD
        verdict = Verdict(value, rule, "; ".join(
            f"{task} / {ds}: best {best[2]} {100 * best[4]:.1f}"
            + (f", {light[0][2]} {100 * light[0][4]:.1f} at 1/{best[5] / light[0][5]:.1f} of its MACs" if light
               else ", no lighter model close to it") for (task, ds), best, light in judged))
    return Claim("6.1", "Better & Stronger against Quicker & Lighter", "Conclusion", survey, verdict, commands,
                 (table,), (Figure("accuracy_vs_cost", "Accuracy against computation", tradeoff_chart(entries),
                                   source),),
                 tuple(missing) + ("Accuracies from different tasks and data are not comparable with each other; "
                                   "each panel compares models on one task.",))


def deployment_claim(ctx: Context) -> Claim:
    r = ctx.result("bench_infer.json")
    y = ctx.result("bench_yolov2_speed.json")
    rule = (f"holds when, for every model and thread count, the fastest path (any engine or precision) is at least "
            f"{SPEEDUP:g}x faster than eager PyTorch at batch 1; holds in direction when it is faster for every one")
    survey = ("Deployment engines, fusion and 8-bit integers make these networks run several times faster on a CPU "
              "than the training framework does.")
    notes = [x.missing_line() for x in (r, y) if not x.ok]
    tables, speedups = [], []
    if r.ok:
        rows = []
        for res in r.data.get("results", []):
            batch1 = {row["variant"]: row for row in res.get("rows", []) if row.get("batch") == 1}
            eager, tv = batch1.get("betterconv_eager"), batch1.get("torchvision_eager")
            if not eager:
                continue
            fastest = min(batch1.values(), key=lambda row: row["median_ms"])
            speedups.append(eager["median_ms"] / fastest["median_ms"])
            rows.append((res["model"], "x".join(map(str, res.get("input_size", []))), res.get("threads"),
                         tv["median_ms"] if tv else None, eager["median_ms"], fastest["label"],
                         fastest["median_ms"], speedups[-1],
                         tv["median_ms"] / fastest["median_ms"] if tv else None))
        tables.append(Table("Batch 1, median ms: eager PyTorch against the fastest path", (
            Column("model"), Column("input"), Column("threads"), Column("torchvision eager", ".1f"),
            Column("betterconv eager", ".1f"), Column("fastest path"), Column("fastest ms", ".1f"),
            Column("speed-up vs eager", ".2f"), Column("speed-up vs torchvision", ".2f")), tuple(rows), r.source()))
        per_variant = {}
        for res in r.data.get("results", []):
            for row in res.get("rows", []):
                if row.get("batch") == 1:
                    per_variant.setdefault(row["label"], {})[(res["model"], res.get("threads"))] = row["median_ms"]
        keys = list(dict.fromkeys((res["model"], res.get("threads")) for res in r.data.get("results", [])))
        tables.append(Table("Every engine and precision, batch 1, median ms", (
            Column("engine / precision"), *(Column(f"{m} ({t} threads)", ".1f") for m, t in keys)),
            tuple((label, *(v.get(k) for k in keys)) for label, v in per_variant.items()), r.source()))
    if y.ok:
        tables.append(Table(f"YOLOv2 at 416 against other engines ({y.data.get('model', 'yolov2')})", (
            Column("engine"), Column("median ms", ".1f")), tuple(y.data.get("median_ms", {}).items()), y.source()))
    if not speedups:
        verdict = not_measured(rule, "bench_infer.json is not here")
    else:
        value = (HOLDS if all(s >= SPEEDUP for s in speedups) else IN_DIRECTION if all(s > 1 for s in speedups)
                 else DOES_NOT_HOLD)
        verdict = Verdict(value, rule, "fastest path / eager: " + ", ".join(f"{s:.2f}x" for s in speedups))
    return Claim("6.2", "Deployment: engines, precisions and speed-ups on this machine", "Conclusion", survey,
                 verdict, (r.command, y.command, "betterconv bench infer NAME --batch 1"), tuple(tables), (),
                 tuple(notes))


def conclusion(ctx: Context) -> Section:
    return Section(6, "Conclusion: better & stronger, quicker & lighter", (tradeoff_claim(ctx),
                                                                          deployment_claim(ctx)))
