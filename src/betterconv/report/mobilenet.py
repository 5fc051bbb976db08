"""Section 5, MobileNetV2 (survey §II-D): the k^2 saving of depthwise separable convolution (the cost formula against
the time measured live), the classifier comparison (MobileNetV1, V2, ShuffleNet, a standard-convolution MobileNet)
and int8, from result files."""
from __future__ import annotations

import os
from typing import Any

import torch

from ..analysis.conv_cost import conv_cost_table
from .context import Context, png_bytes, pyplot
from .records import (DOES_NOT_HOLD, HOLDS, IN_DIRECTION, Claim, Column, Figure, Section, Source, Table, Verdict,
                      not_measured)

WIDE = 128  # channels from which a layer is "wide" (the formula's 1/d_j term small)
KEPT = 0.5  # "the saving survives in time": time ratio >= half the MAC ratio
SEPARABLE_MAC_RATIO = 8.0  # MobileNetV1 §3.1: "8 to 9 times less computation" for 3x3
ACCURACY_POINTS = 2.0  # "at only a small reduction in accuracy", in top-1 points
INT8_POINTS = 1.0  # int8 keeps accuracy: at most 1 top-1 point lost
MOBILE = ("MobileNetV2 1.0", "MobileNetV1 1.0", "ShuffleNet 2x (g=3)")


def conv_rows(ctx: Context) -> list[Any]:
    ctx.progress("k^2 saving (timing)")
    s = ctx.settings
    return conv_cost_table(s.conv_kernels, s.conv_shapes, s.conv_repeats, channels_last=True, progress=False)


def conv_figure(live: list[Any], recorded: list[dict[str, Any]]) -> bytes:
    plt = pyplot()
    kernels = sorted({r.kernel for r in live})
    fig, axes = plt.subplots(1, len(kernels), figsize=(4 * len(kernels), 3.6), squeeze=False)
    for ax, k in zip(axes[0], kernels):
        rows = [r for r in live if r.kernel == k]
        labels = [f"{r.channels}@{r.resolution}" for r in rows]
        ax.plot(labels, [r.mac_ratio for r in rows], marker="o", label="MAC ratio (formula)")
        ax.plot(labels, [r.time_ratio for r in rows], marker="s", linestyle="--", label="time ratio, live")
        rec = {(r["channels"], r["resolution"]): r["time_ratio"] for r in recorded if r["kernel"] == k}
        if rec:
            ax.plot(labels, [rec.get((r.channels, r.resolution), float("nan")) for r in rows], marker="^",
                    linestyle=":", label="time ratio, result file")
        ax.axhline(k * k, color="grey", linewidth=0.8)
        ax.set_title(f"{k}x{k}: standard / separable (grey: k^2)", fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return png_bytes(fig)


def k2_claim(ctx: Context) -> Claim:
    live = conv_rows(ctx)
    threads = torch.get_num_threads()
    live_source = Source("computation", f"betterconv.analysis.conv_cost.conv_cost_table (analytic MACs, "
                                        f"torch.utils.flop_counter MACs, median of {ctx.settings.conv_repeats} timed "
                                        f"calls, batch 1, channels-last, {threads} threads) on this machine now, "
                                        "load average {:.1f} / {:.1f} / {:.1f}".format(*os.getloadavg()))
    table = Table("Standard vs depthwise separable k x k convolution, d -> d channels, stride 1 (live)", (
        Column("k"), Column("channels d"), Column("map"), Column("standard MACs (M)", ".1f", 1e6),
        Column("separable MACs (M)", ".2f", 1e6), Column("counted standard MACs (M)", ".1f", 1e6),
        Column("counted separable MACs (M)", ".2f", 1e6), Column("MAC ratio", ".2f"), Column("k^2"),
        Column("standard ms", ".3f"), Column("separable ms", ".3f"), Column("time ratio", ".2f")),
        tuple((r.kernel, r.channels, f"{r.resolution}x{r.resolution}", r.standard_macs, r.separable_macs,
               r.standard_macs_counted, r.separable_macs_counted, r.mac_ratio, r.kernel ** 2, r.standard_ms,
               r.separable_ms, r.time_ratio) for r in live), live_source)
    tables = [table]
    rec = ctx.result("bench_conv.json")
    recorded = rec.data.get("rows", []) if rec.ok else []
    notes = [] if rec.ok else [rec.missing_line()]
    if recorded:
        tables.append(Table("The same measurement as recorded (idle machine)", (
            Column("k"), Column("channels d"), Column("map"), Column("MAC ratio", ".2f"), Column("time ratio", ".2f")),
            tuple((r["kernel"], r["channels"], f"{r['resolution']}x{r['resolution']}", r["mac_ratio"],
                   r["time_ratio"]) for r in recorded), rec.source()))
    figure = Figure("k2_saving", "The k^2 saving: MAC ratio against time ratio", conv_figure(live, recorded),
                    live_source)
    exact = all(r.standard_macs == r.standard_macs_counted and r.separable_macs == r.separable_macs_counted
                for r in live)
    # timing on a shared machine is noisy: the time ratios come from the result file (measured alone on the
    # machine) when there is one, from the live rows otherwise
    timed = [(r["kernel"], r["channels"], r["mac_ratio"], r["time_ratio"]) for r in recorded] or \
        [(r.kernel, r.channels, r.mac_ratio, r.time_ratio) for r in live]
    wide = [t for t in timed if t[0] >= 3 and t[1] >= WIDE]
    timing_from = rec.name if recorded else "the live rows"
    rule = (f"holds when the live counted MACs equal the formula h w d (k^2 + d) in every row and, for every "
            f"k >= 3 layer with >= {WIDE} channels, the time ratio keeps at least {KEPT:g} of the MAC ratio; holds "
            "in direction when the counts agree and those layers' time ratio is above 1. Time ratios from the "
            "result file when there is one (measured alone on its machine), else from the live rows")
    if not wide:
        verdict = not_measured(rule, f"no timed row with k >= 3 and >= {WIDE} channels")
    else:
        kept = [time / macs for _, _, macs, time in wide]
        value = (HOLDS if exact and min(kept) >= KEPT else IN_DIRECTION if exact and all(t[3] > 1 for t in wide)
                 else DOES_NOT_HOLD)
        verdict = Verdict(value, rule, f"live counts equal the formula: {exact}; in {timing_from} the wide k >= 3 "
                                       f"layers keep {min(kept):.0%} to {max(kept):.0%} of the MAC saving in time")
    return Claim("5.1", "The k^2 saving of depthwise separable convolution", "§II-D; MobileNetV1 §3.1",
                 "A depthwise separable k x k convolution costs h w d_i (k^2 + d_j) instead of h w d_i d_j k^2: "
                 "about k^2 times less computation for wide layers (8 to 9 times for 3x3), and nothing for 1x1.",
                 verdict, ("betterconv bench conv [--repeats 20] [--json]", rec.command), tuple(tables), (figure,),
                 tuple(notes))


def cls_rows(data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(name, row) for name, ds in data.get("datasets", {}).items() for row in ds.get("rows", [])]


def cls_table(r: Any) -> Table:
    rows = tuple((ds, row["model"], row["params"], row["macs"], row.get("ms_32"), row.get("ms_224"), row["top1"],
                  row.get("train_seconds")) for ds, row in cls_rows(r.data))
    return Table("Same recipe, same budget: top-1 against cost (MACs and params at 32x32, 10 classes)", (
        Column("dataset"), Column("model"), Column("params (M)", ".2f", 1e6), Column("MACs (M)", ".1f", 1e6),
        Column("ms @32", ".1f"), Column("ms @224", ".1f"), Column("top-1", ".2%"), Column("training seconds")),
        rows, r.source())


def cls_figure(data: dict[str, Any]) -> bytes:
    plt = pyplot()
    datasets = list(data.get("datasets", {}))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 3.8), squeeze=False)
    for ax, ds in zip(axes[0], datasets):
        for row in data["datasets"][ds]["rows"]:
            ax.scatter(row["macs"] / 1e6, 100 * row["top1"], s=30 + 4 * (row.get("ms_224") or 0))
            ax.annotate(row["model"], (row["macs"] / 1e6, 100 * row["top1"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("MACs at 32x32 (M)")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(f"{ds} (marker size: ms at 224)", fontsize=9)
        ax.grid(alpha=0.3)
    return png_bytes(fig)


def separable_claim(ctx: Context) -> Claim:
    r = ctx.result("cls_compare.json")
    rule = (f"holds when the standard-convolution MobileNet costs at least {SEPARABLE_MAC_RATIO:g}x MobileNetV1's "
            f"MACs and MobileNetV1 is within {ACCURACY_POINTS:g} top-1 points of it (or better) on every dataset; "
            "holds in direction when it costs more MACs and more time, and MobileNetV1 loses at most "
            f"{2 * ACCURACY_POINTS:g} points")
    survey = ("Replacing standard convolutions by depthwise separable ones (MobileNetV1) cuts computation about "
              "8-9x for 3x3 layers at only a small reduction in accuracy.")
    if not r.ok:
        return Claim("5.2", "Separable vs standard convolution in a whole network", "§II-D; MobileNetV1 Table 4",
                     survey, not_measured(rule, r.missing_line()), (r.command,), notes=(r.missing_line(),))
    pairs = []
    for ds, data in r.data.get("datasets", {}).items():
        sep = next((row for row in data.get("rows", []) if row["name"] == "mobilenet_v1"
                    and row.get("kwargs", {}).get("separable", True)), None)
        std = next((row for row in data.get("rows", []) if row["name"] == "mobilenet_v1"
                    and row.get("kwargs", {}).get("separable") is False), None)
        if sep and std:
            pairs.append((ds, std["macs"] / sep["macs"], std["ms_224"] / sep["ms_224"], std["top1"] - sep["top1"]))
    table = Table("Standard-convolution MobileNet / MobileNetV1", (
        Column("dataset"), Column("MAC ratio", ".2f"), Column("time ratio at 224", ".2f"),
        Column("top-1 lost by separable (points)", "+.2f", 0.01)), tuple(pairs), r.source())
    if not pairs:
        verdict = not_measured(rule, "the result file has no standard/separable pair")
    else:
        all_hold = all(m >= SEPARABLE_MAC_RATIO and lost * 100 <= ACCURACY_POINTS for _, m, _, lost in pairs)
        direction = all(m > 1 and t > 1 and lost * 100 <= 2 * ACCURACY_POINTS for _, m, t, lost in pairs)
        verdict = Verdict(HOLDS if all_hold else IN_DIRECTION if direction else DOES_NOT_HOLD, rule, "; ".join(
            f"{ds}: {m:.1f}x MACs, {t:.1f}x time, {100 * lost:+.2f} points" for ds, m, t, lost in pairs))
    return Claim("5.2", "Separable vs standard convolution in a whole network", "§II-D; MobileNetV1 Table 4", survey,
                 verdict, (r.command,), (table, cls_table(r)),
                 (Figure("cls_compare", "Top-1 against MACs", cls_figure(r.data), r.source()),),
                 ("Short schedules on small images: these accuracies compare the networks at one budget, they are "
                  "not converged figures.",))


def mobile_claim(ctx: Context) -> Claim:
    r = ctx.result("cls_compare.json")
    rule = ("holds when MobileNetV2 has the fewest MACs and the best top-1 of MobileNetV1, V2 and ShuffleNet on "
            "every dataset; holds in direction when it has the fewest MACs and the best top-1 on at least one")
    survey = ("MobileNetV2's inverted residuals with linear bottlenecks are more accurate than MobileNetV1 and "
              "ShuffleNet at fewer MACs.")
    if not r.ok:
        return Claim("5.3", "MobileNetV2 against MobileNetV1 and ShuffleNet", "§II-D; MobileNetV2 Table 4", survey,
                     not_measured(rule, r.missing_line()), (r.command,), notes=(r.missing_line(),))
    results = []
    for ds, data in r.data.get("datasets", {}).items():
        rows = {row["model"]: row for row in data.get("rows", []) if row["model"] in MOBILE}
        if len(rows) == len(MOBILE):
            fewest = min(rows.values(), key=lambda x: x["macs"])["model"] == MOBILE[0]
            best = max(rows.values(), key=lambda x: x["top1"])["model"]
            results.append((ds, rows[MOBILE[0]]["macs"], fewest, best, best == MOBILE[0]))
    table = Table("Who is cheapest and who is best", (Column("dataset"), Column("MobileNetV2 MACs (M)", ".1f", 1e6),
                                                      Column("MobileNetV2 has the fewest MACs"),
                                                      Column("best top-1"), Column("MobileNetV2 is best")),
                  tuple(results), r.source())
    if not results:
        verdict = not_measured(rule, "the result file lacks one of the three networks")
    else:
        all_hold = all(f and b for _, _, f, _, b in results)
        direction = any(f and b for _, _, f, _, b in results)
        verdict = Verdict(HOLDS if all_hold else IN_DIRECTION if direction else DOES_NOT_HOLD, rule, "; ".join(
            f"{ds}: fewest MACs {f}, best top-1 {best}" for ds, _, f, best, _ in results))
    return Claim("5.3", "MobileNetV2 against MobileNetV1 and ShuffleNet", "§II-D; MobileNetV2 Table 4", survey,
                 verdict, (r.command,), (table,), (),
                 ("The full table and the chart are under 5.2 (the same result file).",))


def int8_claim(ctx: Context) -> Claim:
    r = ctx.result("cls_compare.json")
    rule = (f"holds when int8 loses at most {INT8_POINTS:g} top-1 point on every dataset; holds in direction when "
            f"at most {3 * INT8_POINTS:g}")
    survey = "MobileNets quantise to 8-bit integers for deployment with little loss of accuracy."
    rows = []
    if r.ok:
        for ds, row in cls_rows(r.data):
            q = row.get("int8")
            if q:
                rows.append((ds, row["model"], q["pytorch"], q["onnxruntime_int8"], q["drop_points"],
                             q.get("float_file_bytes"), q.get("int8_file_bytes"), q.get("calibration_images")))
    if not rows:
        return Claim("5.4", "int8", "§II-D", survey, not_measured(rule, r.missing_line() if not r.ok else
                                                                   "the result file records no int8 run"),
                     (r.command,), notes=(r.missing_line(),) if not r.ok else ())
    table = Table("int8 (onnxruntime static QDQ, per-channel weights, the logits left float)", (
        Column("dataset"), Column("model"), Column("float top-1", ".2%"), Column("int8 top-1", ".2%"),
        Column("points lost", ".2f"), Column("float file (MB)", ".1f", 1e6), Column("int8 file (MB)", ".1f", 1e6),
        Column("calibration images")), tuple(rows), r.source())
    drops = [row[4] for row in rows]
    value = (HOLDS if all(d <= INT8_POINTS for d in drops) else IN_DIRECTION if all(d <= 3 * INT8_POINTS
                                                                                   for d in drops) else DOES_NOT_HOLD)
    return Claim("5.4", "int8 and its accuracy", "§II-D", survey,
                 Verdict(value, rule, "points lost: " + ", ".join(f"{row[0]} {row[4]:.2f}" for row in rows)),
                 (r.command, "betterconv export mobilenet_v2 --weights W --format onnx -o m.onnx --int8 --calib "
                             "images/"), (table,))


def mobilenet(ctx: Context) -> Section:
    return Section(5, "MobileNetV2: quicker and lighter", (k2_claim(ctx), separable_claim(ctx), mobile_claim(ctx),
                                                          int8_claim(ctx)))
