"""Section 3, DeepLabv3 (survey §II-B): the field of view of atrous convolution (Fig. 5), ASPP's valid weights
against the rate (DeepLabv3 §3.3, Fig. 4), gridding and hybrid dilated convolution (Fig. 14), computed live; the
head ablation and the output-stride results on CamVid from result files."""
from __future__ import annotations

import math

from torch import nn

from ..analysis import profile
from ..analysis.aspp import model_aspp_report, valid_weights
from ..analysis.gridding import gridding_png, gridding_report, path_counts, suggest_rates
from ..weights import create_model
from .context import Context, png_bytes, pyplot
from .fcn import test_entry
from .records import (DOES_NOT_HOLD, HOLDS, IN_DIRECTION, Claim, Column, Figure, Section, Source, Table, Verdict,
                      not_measured)

FOV_RATES = (1, 2, 6, 12, 18, 24)
KERNEL = 3
FEATURE_SIZES = (65, 33)  # DeepLabv3 Fig. 4's 65x65 map; 33x33 is 513 at output stride 16
ASPP_RATES = (6, 12, 18)  # DeepLabv3's rates at output stride 16
GRIDDING_RATES = ((2, 2, 2), (2, 4, 8), (1, 2, 3), (1, 2, 5), (1, 3, 9))
SUGGEST = (3, 5)  # suggest 3 rates up to 5
HEAD_FILES = (("no ASPP (1x1 branch only)", "seg_camvid_no_aspp.json"),
              ("ASPP (1x1 + rates 6, 12, 18)", "seg_camvid_aspp.json"),
              ("ASPP + image pooling", "seg_camvid_aspp_pool.json"))
OS_FILES = ("seg_camvid_pretrained.json", "seg_camvid_scratch.json", "seg_camvid_pretrained_mfb.json",
            "seg_camvid_pretrained_50ep.json", "seg_camvid_no_aspp.json", "seg_camvid_aspp.json",
            "seg_camvid_aspp_pool.json", "seg_camvid_final.json")


def fov_claim(ctx: Context) -> Claim:
    ctx.progress("atrous field of view")
    rows = []
    for r in FOV_RATES:
        p = profile(nn.Conv2d(1, 1, KERNEL, padding=r, dilation=r, bias=False), input_size=(1, 4 * r + 9, 4 * r + 9))
        rows.append((r, p.params, int(p.receptive_field), (KERNEL - 1) * r + 1))
    source = Source("computation", "betterconv.profile(nn.Conv2d(1, 1, 3, dilation=r, padding=r)): parameters "
                                   "counted, the receptive field traced by betterconv.analysis.receptive_field")
    table = Table("One 3x3 filter at atrous rate r", (Column("rate r"), Column("parameters"),
                                                      Column("field of view (px, traced)"),
                                                      Column("(k - 1) r + 1")), tuple(rows), source)
    plt = pyplot()
    shown = (1, 6, 24)
    fig, axes = plt.subplots(1, len(shown), figsize=(10, 3.6))
    side = (KERNEL - 1) * max(shown) + 1
    for ax, r in zip(axes, shown):
        taps = [(i * r, j * r) for i in range(KERNEL) for j in range(KERNEL)]
        offset = (side - ((KERNEL - 1) * r + 1)) / 2
        ax.scatter([offset + x for x, _ in taps], [offset + y for _, y in taps], s=40, color="#c44e52")
        ax.add_patch(plt.Rectangle((offset - 0.5, offset - 0.5), (KERNEL - 1) * r + 1, (KERNEL - 1) * r + 1,
                                   fill=False, edgecolor="#4c72b0"))
        ax.set_xlim(-1, side)
        ax.set_ylim(-1, side)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"rate {r}: 9 weights, field of view {(KERNEL - 1) * r + 1}")
    fig.suptitle("Atrous convolution: the same 3x3 weights spread over a larger field")
    figure = Figure("atrous_fov", "Atrous rates and field of view", png_bytes(fig),
                    Source("computation", "tap positions (i r, j r) of a 3x3 filter"))
    same_params = len({p for _, p, _, _ in rows}) == 1
    exact = all(traced == formula for _, _, traced, formula in rows)
    rule = ("holds when the traced field of view equals (k - 1) r + 1 at every rate and the parameter count does "
            "not change with the rate")
    value = HOLDS if same_params and exact else IN_DIRECTION if same_params else DOES_NOT_HOLD
    reason = (f"parameters {rows[0][1]} at every rate: {same_params}; field of view "
              + ", ".join(f"{t} at rate {r}" for r, _, t, _ in rows))
    return Claim("3.1", "Atrous convolution enlarges the field of view at no cost in parameters", "§II-B, Fig. 5",
                 "An atrous (dilated) convolution inserts r - 1 holes between the filter's taps: the field of view "
                 "grows with the rate r while the number of weights (and of MACs per output) stays the same.",
                 Verdict(value, rule, reason), ("betterconv analyze gridding --rates R",), (table,), (figure,))


def aspp_claim(ctx: Context) -> Claim:
    ctx.progress("ASPP valid weights")
    curves = {n: [(r, valid_weights(n, r, KERNEL)) for r in range(1, n + 16)] for n in FEATURE_SIZES}
    rows = tuple((n, r, v["valid_weight_fraction"], v["center_only_fraction"])
                 for n in FEATURE_SIZES for r, v in curves[n] if r in (1, 6, 12, 18, 24, 36) or r == n)
    table = Table("Share of a 3x3 atrous filter's taps inside a zero-padded map", (
        Column("feature map"), Column("rate"), Column("valid weights", ".1%"), Column("centre tap only", ".1%")),
        rows, Source("computation", "betterconv.analysis.aspp.valid_weights (closed form, checked against a direct "
                                    "count in tests/test_aspp_analysis.py)"))
    h, w = ctx.settings.aspp_input_size
    model = create_model("deeplabv3_mobilenet_v2", atrous_rates=ASPP_RATES)
    report = model_aspp_report(model, (h, w))
    fh, fw = report["feature_size"]
    model_table = Table(f"deeplabv3_mobilenet_v2 with rates {', '.join(map(str, ASPP_RATES))} at {h}x{w}: ASPP sees "
                        f"a {fh}x{fw} map", (Column("rate"), Column("valid weights", ".1%"),
                                            Column("centre tap only", ".1%")),
                        tuple((r["rate"], r["valid_weight_fraction"], r["center_only_fraction"])
                              for r in report["rates"]),
                        Source("computation", f"betterconv.analysis.aspp.model_aspp_report(create_model("
                                              f"'deeplabv3_mobilenet_v2', atrous_rates={ASPP_RATES}), ({h}, {w}))"))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for n in FEATURE_SIZES:
        ax.plot([r for r, _ in curves[n]], [v["valid_weight_fraction"] for _, v in curves[n]],
                label=f"{n}x{n} map: valid weights")
        ax.plot([r for r, _ in curves[n]], [v["center_only_fraction"] for _, v in curves[n]], linestyle="--",
                label=f"{n}x{n} map: positions with the centre tap only")
    ax.axhline(1 / KERNEL ** 2, color="grey", linewidth=0.8)
    ax.text(1, 1 / KERNEL ** 2 + 0.02, "1/9: a 1x1 filter", fontsize=8, color="grey")
    ax.set_xlabel("atrous rate")
    ax.set_ylabel("share")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax.set_title("A 3x3 atrous filter degenerates to 1x1 as the rate nears the map size")
    figure = Figure("aspp_valid_weights", "ASPP: valid weights against the rate", png_bytes(fig), table.source)
    monotone = all(b[1]["valid_weight_fraction"] <= a[1]["valid_weight_fraction"] + 1e-12
                   for n in FEATURE_SIZES for a, b in zip(curves[n], curves[n][1:]))
    degenerate = all(abs(v["valid_weight_fraction"] - 1 / KERNEL ** 2) < 1e-12 and v["center_only_fraction"] == 1
                     for n in FEATURE_SIZES for r, v in curves[n] if r >= n)
    rule = ("holds when the share of valid weights never rises with the rate and is exactly 1/9 (the centre tap "
            "alone, a 1x1 filter) at every rate at or beyond the feature-map size")
    value = HOLDS if monotone and degenerate else IN_DIRECTION if monotone else DOES_NOT_HOLD
    last = report["rates"][-1] if report["rates"] else None
    reason = (f"non-increasing: {monotone}; exactly 1/9 from the map size on: {degenerate}"
              + (f"; on CamVid's full frame the rate-{last['rate']} branch keeps {last['valid_weight_fraction']:.1%} "
                 f"of its weights" if last else ""))
    return Claim("3.2", "ASPP: a large rate degenerates to a 1x1 filter", "§II-B; DeepLabv3 §3.3, Fig. 4",
                 "As the atrous rate approaches the feature-map size, fewer and fewer of the 3x3 filter's weights "
                 "fall on the map; at the limit only the centre weight is valid and the filter is a 1x1 "
                 "convolution, which is why DeepLabv3 adds image-level features to ASPP.",
                 Verdict(value, rule, reason),
                 ("betterconv analyze aspp --feature-size 65 --rates 1,6,12,18,24,36",
                  f"betterconv analyze aspp --model deeplabv3_mobilenet_v2 --arg atrous_rates=6,12,18 "
                  f"--input-size {h} {w}"), (table, model_table), (figure,))


def gridding_claim(ctx: Context) -> Claim:
    ctx.progress("gridding")
    reports = [gridding_report(rates, KERNEL) for rates in GRIDDING_RATES]
    suggested = suggest_rates(*SUGGEST, KERNEL)
    source = Source("computation", "betterconv.analysis.gridding.gridding_report (exact path counts, equal to "
                                   "autograd on all-ones convolutions in tests/test_gridding.py)")
    table = Table("Stacks of three 3x3 dilated convolutions", (
        Column("rates"), Column("receptive field"), Column("holes", ".1%"), Column("coverage CV", ".3f"),
        Column("HDC")), tuple((", ".join(map(str, r["rates"])), r["receptive_field"], r["holes_fraction"],
                               r["coverage_cv"], "yes" if r["hdc"] else "no") for r in reports), source)
    figures = []
    for rates in (GRIDDING_RATES[0], GRIDDING_RATES[3]):
        counts = path_counts(rates, KERNEL)
        holes = float((counts == 0).mean())
        figures.append(Figure(f"gridding_{'_'.join(map(str, rates))}", f"Paths to one output unit, rates {rates}",
                              gridding_png(counts, f"rates {', '.join(map(str, rates))}: {holes:.0%} holes"), source))
    shared = [r for r in reports if math.gcd(*r["rates"]) > 1]
    hdc = [r for r in reports if r["hdc"]]
    rule = ("holds when every stack whose rates share a factor leaves holes in its receptive field and every stack "
            "that satisfies HDC (Wang et al. 2018 §3.2) leaves none")
    all_hold = all(r["holes_fraction"] > 0 for r in shared) and all(r["holes_fraction"] == 0 for r in hdc)
    direction = any(r["holes_fraction"] > 0 for r in shared)
    value = HOLDS if all_hold and shared and hdc else IN_DIRECTION if direction else DOES_NOT_HOLD
    reason = (", ".join(f"{','.join(map(str, r['rates']))}: {r['holes_fraction']:.0%} holes" for r in reports)
              + f"; suggested HDC rates up to {SUGGEST[1]}: {', '.join(map(str, suggested))}")
    return Claim("3.3", "Gridding, and hybrid dilated convolution", "§II-B, Fig. 14",
                 "Stacking atrous convolutions with the same (or a shared-factor) rate samples the input on a grid: "
                 "pixels between the grid points never reach the output (gridding). Rates without a common factor "
                 "that satisfy HDC cover the whole receptive field.",
                 Verdict(value, rule, reason),
                 ("betterconv analyze gridding --rates 2,2,2 --output g.png",
                  f"betterconv analyze gridding --rates 1,2,5 --suggest {SUGGEST[0]} --max-rate {SUGGEST[1]}"),
                 (table,), tuple(figures))


def head_claim(ctx: Context) -> Claim:
    found = [(label, ctx.result(name)) for label, name in HEAD_FILES]
    ok = [(label, r) for label, r in found if r.ok]
    rule = ("holds when CamVid test mIoU (output stride 16) rises from the 1x1 head to ASPP to ASPP + image "
            "pooling; holds in direction when ASPP + image pooling beats the 1x1 head; all three files are needed")
    notes = tuple(r.missing_line() for _, r in found if not r.ok)
    tables = []
    if ok:
        rows = []
        for label, r in ok:
            res = r.data.get("results", {})
            os16, os8 = res.get("test_os16", {}), res.get("test_os8", {})
            rows.append((label, os16.get("miou"), os8.get("miou"), os16.get("pixel_acc"), os16.get("boundary_f"),
                         r.name))
        source = Source("file", "; ".join(r.source().describe() for _, r in ok))
        tables.append(Table("DeepLabv3-MobileNetV2 heads on CamVid (12 epochs, 256x256 crops)", (
            Column("head"), Column("mIoU OS16", ".2%"), Column("mIoU OS8", ".2%"), Column("pixel acc OS16", ".1%"),
            Column("boundary F OS16", ".1%"), Column("result file")), tuple(rows), source))
    if len(ok) < len(found):
        verdict = not_measured(rule, f"{len(found) - len(ok)} of {len(found)} result files missing")
    else:
        none_, aspp, pool = [test_entry(r.data)["miou"] for _, r in ok]
        value = (HOLDS if none_ < aspp < pool else IN_DIRECTION if pool > none_ else DOES_NOT_HOLD)
        verdict = Verdict(value, rule, f"mIoU {100 * none_:.2f} / {100 * aspp:.2f} / {100 * pool:.2f} "
                                       "(1x1 / ASPP / ASPP + pooling)")
    return Claim("3.4", "The ASPP head ablation", "§II-B; DeepLabv3 Table 3",
                 "Atrous spatial pyramid pooling (parallel atrous branches at several rates) with image-level "
                 "features captures context at several scales and improves over a plain 1x1 head.",
                 verdict, tuple(r.command for _, r in found), tuple(tables), (), notes)


def output_stride_claim(ctx: Context) -> Claim:
    found = [ctx.result(name) for name in OS_FILES]
    ok = [r for r in found if r.ok and {"test_os16", "test_os8"} <= set(r.data.get("results", {}))]
    rows = tuple((r.data.get("benchmark", r.name), r.data["results"]["test_os16"]["miou"],
                  r.data["results"]["test_os8"]["miou"],
                  r.data["results"]["test_os8"]["miou"] - r.data["results"]["test_os16"]["miou"], r.name) for r in ok)
    rule = ("holds when evaluating at output stride 8 (rates doubled) beats output stride 16 in every CamVid run "
            "that evaluated both; holds in direction when it does in most")
    notes = tuple(r.missing_line() for r in found if not r.ok)
    if not ok:
        return Claim("3.5", "Output stride 8 vs 16 at test time", "§II-B; DeepLabv3 §4.3, Table 5",
                     "A denser output (output stride 8) gives more accurate masks than 16, at more computation.",
                     not_measured(rule, "no result file has both evaluations"), tuple(r.command for r in found),
                     notes=notes)
    source = Source("file", "; ".join(r.source().describe() for r in ok))
    table = Table("CamVid test mIoU at output stride 16 and 8 (same weights)", (
        Column("run"), Column("OS16", ".2%"), Column("OS8", ".2%"), Column("OS8 - OS16", "+.2%"),
        Column("result file")), rows, source)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [100 * r[1] for r in rows], 0.4, label="output stride 16")
    ax.bar([x + 0.2 for x in xs], [100 * r[2] for r in rows], 0.4, label="output stride 8")
    ax.set_xticks(list(xs), [r[0].replace("seg_camvid_", "") for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("CamVid test mIoU (%)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    figure = Figure("output_stride", "Output stride 16 vs 8 at test time", png_bytes(fig), source)
    better = sum(r[3] > 0 for r in rows)
    value = HOLDS if better == len(rows) else IN_DIRECTION if 2 * better > len(rows) else DOES_NOT_HOLD
    return Claim("3.5", "Output stride 8 vs 16 at test time", "§II-B; DeepLabv3 §4.3, Table 5",
                 "A denser output (output stride 8, atrous rates doubled) gives more accurate masks than output "
                 "stride 16, at more computation.",
                 Verdict(value, rule, f"OS8 better in {better} of {len(rows)} runs"),
                 tuple(dict.fromkeys(r.command for r in found)), (table,), (figure,), notes)


def deeplab(ctx: Context) -> Section:
    return Section(3, "DeepLabv3: atrous convolution and ASPP", (
        fov_claim(ctx), aspp_claim(ctx), gridding_claim(ctx), head_claim(ctx), output_stride_claim(ctx)))
