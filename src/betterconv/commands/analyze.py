"""`betterconv analyze gridding`: the holes a stack of dilated convolutions leaves in its receptive field (the survey's
Fig. 14; hybrid dilated convolution, Wang et al. WACV 2018 §3.2), for given rates or for the runs of dilated 3x3
convolutions of a model. `betterconv analyze aspp`: the share of an atrous filter's taps inside the feature map per
rate (DeepLabv3 §3.3, Fig. 4)."""
from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path

from ..analysis.aspp import aspp_report, model_aspp_report
from ..analysis.gridding import (DEFAULT_INPUT_SIZE, check_rates, gridding_panels_png, gridding_png, gridding_report,
                                 model_gridding_report, path_counts, suggest_rates)
from ..errors import BetterConvError
from ..files import write_atomic
from ..weights import create_model
from ._common import Parser, add_arg_option, check_suffix, parse_model_args, positive_int


def parse_rates(text: str) -> tuple[int, ...]:
    """'2,2,2' -> (2, 2, 2); an empty list, a non-integer or a rate below 1 is a one-line `BetterConvError`."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise BetterConvError(f"--rates takes comma-separated integers >= 1 (2,2,2), got {text!r}")
    try:
        rates = tuple(int(p) for p in parts)
    except ValueError:
        raise BetterConvError(f"--rates takes comma-separated integers >= 1 (2,2,2), got {text!r}") from None
    if any(r < 1 for r in rates):
        raise BetterConvError(f"--rates: dilation rates must be >= 1, got {text!r}")
    return rates


def cmd_gridding(args: argparse.Namespace) -> None:
    if args.model is not None:
        cmd_gridding_model(args)
        return
    if args.input_size is not None or args.arg:
        raise BetterConvError("--input-size and --arg go with --model")
    args.kernel = 3 if args.kernel is None else args.kernel
    rates = check_rates(parse_rates(args.rates), args.kernel)
    if args.max_rate is not None and args.suggest is None:
        raise BetterConvError("--max-rate goes with --suggest N")
    if args.suggest is not None and args.max_rate is None:
        raise BetterConvError("--suggest N needs --max-rate R (the largest rate to try)")
    if args.output:
        check_suffix(args.output, (".png",), "the path-count heat-map")
    report = gridding_report(rates, args.kernel)
    if args.suggest is not None:
        report["suggested_rates"] = list(suggest_rates(args.suggest, args.max_rate, args.kernel))
    if args.output:
        counts = path_counts(rates, args.kernel)
        title = (f"rates {','.join(map(str, rates))}, {args.kernel}x{args.kernel}: "
                 f"{report['holes_fraction']:.0%} holes")
        write_atomic(Path(args.output), gridding_png(counts, title))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"rates {','.join(map(str, rates))} with {args.kernel}x{args.kernel} kernels: receptive field "
          f"{report['receptive_field']}x{report['receptive_field']}")
    print(f"holes: {report['holes_fraction']:.1%} of the receptive field reached by no path")
    print(f"coverage CV (std / mean of the path counts of reached pixels): {report['coverage_cv']:.3f}")
    print(f"HDC (Wang et al. 2018 §3.2): {'satisfied' if report['hdc'] else 'not satisfied'}")
    if "suggested_rates" in report:
        print(f"suggested rates ({args.suggest} layers, up to {args.max_rate}): "
              f"{','.join(map(str, report['suggested_rates']))}")
    if args.output:
        print(f"wrote {args.output}")


def print_runs(report: dict) -> None:
    """The runs of `model_gridding_report` as a table, then each run's residual note."""
    args_text = ", ".join(f"{k}={v!r}" for k, v in report["model_args"].items())
    h, w = report["input_size"]
    runs = report["runs"]
    print(f"{report['model']}{f' ({args_text})' if args_text else ''} at {h}x{w}: "
          f"{len(runs)} run{'s' if len(runs) != 1 else ''} of dilated 3x3 convolutions")
    if not runs:
        print("no chain of stride-1 3x3 convolutions with a dilation above 1: nothing grids")
        return
    print(f"{'run':>3}  {'convs':>5}  {'field':>5}  {'holes':>6}  {'CV':>6}  {'HDC':>3}  {'holes+id':>8}  "
          f"{'CV+id':>6}  {'rates':<24}  modules (first .. last)")
    for i, run in enumerate(runs, start=1):
        rates = ",".join(map(str, run["rates"]))
        print(f"{i:>3}  {len(run['rates']):>5}  {run['receptive_field']:>5}  {run['holes_fraction']:>6.1%}  "
              f"{run['coverage_cv']:>6.3f}  {'yes' if run['hdc'] else 'no':>3}  "
              f"{run['holes_fraction_with_identity']:>8.1%}  {run['coverage_cv_with_identity']:>6.3f}  "
              f"{rates:<24}  {run['modules'][0]} .. {run['modules'][-1]}")
    print("field: receptive-field side; holes: its share no path reaches; CV: std / mean of the path counts of the "
          "reached pixels; +id: with the centre tap of each residual connection")
    for i, run in enumerate(runs, start=1):
        print(f"run {i}: {run['residual_note']}")


def cmd_gridding_model(args: argparse.Namespace) -> None:
    if args.kernel is not None:
        raise BetterConvError("--model reads the model's 3x3 convolutions; drop --kernel")
    if args.suggest is not None or args.max_rate is not None:
        raise BetterConvError("--suggest and --max-rate go with --rates")
    if args.output:
        check_suffix(args.output, (".png",), "the path-count heat-maps")
    model_args = parse_model_args(args.arg)
    model = create_model(args.model, **model_args)
    input_size = DEFAULT_INPUT_SIZE if args.input_size is None else tuple(args.input_size)
    report = {"model": args.model, "model_args": model_args, **model_gridding_report(model, input_size)}
    if args.output:
        if not report["runs"]:
            raise BetterConvError(f"{args.model} has no run of dilated 3x3 convolutions: no heat-map to write")
        panels = [(path_counts(run["rates"]), f"{run['modules'][-1]}\nrates {','.join(map(str, run['rates']))}: "
                                              f"{run['holes_fraction']:.0%} holes") for run in report["runs"]]
        write_atomic(Path(args.output), gridding_panels_png(panels))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return
    print_runs(report)
    if args.output:
        print(f"wrote {args.output}")


def print_rate_rows(rows: list[dict], kernel: int) -> None:
    print(f"{'rate':>6}  {'valid weights':>13}  {'centre only':>11}   ({kernel}x{kernel} atrous filter, zero padding)")
    for row in rows:
        print(f"{row['rate']:>6}  {row['valid_weight_fraction']:>13.1%}  {row['center_only_fraction']:>11.1%}")


def cmd_aspp(args: argparse.Namespace) -> None:
    if args.model is not None:
        if args.feature_size is not None or args.rates is not None or args.kernel is not None:
            raise BetterConvError("--model takes the rates, kernel and feature size from the model; "
                                  "drop --feature-size, --rates and --kernel")
        if args.input_size is None:
            raise BetterConvError("--model needs --input-size H W")
        model = create_model(args.model, **parse_model_args(args.arg))
        report = {"model": args.model, **model_aspp_report(model, args.input_size)}
        if args.json:
            print(json.dumps(report, indent=2))
            return
        h, w = report["feature_size"]
        print(f"{args.model} at {args.input_size[0]}x{args.input_size[1]}: ASPP sees a {h}x{w} feature map")
        if report["rates"]:
            print_rate_rows(report["rates"], report["kernel"])
        else:
            print("no atrous branches")
        for branch in report["other_branches"]:
            print(f"also: {branch}")
        return
    if args.input_size is not None or args.arg:
        raise BetterConvError("--input-size and --arg go with --model")
    if args.feature_size is None or args.rates is None:
        raise BetterConvError("give --feature-size N and --rates R1,R2,... (or --model NAME --input-size H W)")
    kernel = 3 if args.kernel is None else args.kernel
    report = aspp_report(args.feature_size, parse_rates(args.rates), kernel)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"feature map {args.feature_size}x{args.feature_size} (DeepLabv3 §3.3, Fig. 4)")
    print_rate_rows(report["rates"], kernel)


def odd_kernel(text: str) -> int:
    """argparse `type=`: an odd integer >= 1."""
    value = positive_int(text, what="--kernel")
    if value % 2 == 0:
        raise argparse.ArgumentTypeError(f"--kernel must be odd, got {text!r}")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `analyze` (and its `gridding` and `aspp` sub-commands) on the top-level sub-command parsers."""
    p = sub.add_parser("analyze", help="analyses of layer designs (gridding of dilated convolutions, "
                       "ASPP's valid weights)")
    analyze_sub = p.add_subparsers(dest="analysis", required=True, parser_class=Parser)

    g = analyze_sub.add_parser("gridding", help="paths from each input pixel through a stack of dilated "
                               "convolutions: holes, coverage and the HDC condition (survey Fig. 14)")
    source = g.add_mutually_exclusive_group(required=True)
    source.add_argument("--rates", help="comma-separated dilation rates, input side first (2,2,2)")
    source.add_argument("--model", help="a registered model: report each run of stride-1 3x3 convolutions with a "
                        "dilation above 1 (backbone and head; each ASPP branch continues the backbone's last run), "
                        "also with the centre taps of residual connections; a model without one has no runs")
    g.add_argument("--kernel", type=odd_kernel, help="kernel size for --rates, odd (default: 3)")
    g.add_argument("--input-size", type=partial(positive_int, what="--input-size"), nargs=2, metavar=("H", "W"),
                   help=f"dummy input size for --model (default: {DEFAULT_INPUT_SIZE[0]} {DEFAULT_INPUT_SIZE[1]}; "
                   f"the rates do not depend on it)")
    add_arg_option(g)
    g.add_argument("--output", help="write the path-count heat-map (one per run with --model) to this .png file")
    g.add_argument("--json", action="store_true", help="print JSON")
    g.add_argument("--suggest", type=partial(positive_int, what="--suggest"), metavar="N",
                   help="also suggest N rates satisfying HDC without holes, with the largest receptive field")
    g.add_argument("--max-rate", type=partial(positive_int, what="--max-rate"), metavar="R",
                   help="the largest rate --suggest tries")
    g.set_defaults(func=cmd_gridding)

    a = analyze_sub.add_parser("aspp", help="share of a 3x3 atrous filter's taps inside the feature map per rate "
                               "(DeepLabv3 §3.3, Fig. 4): a large rate degenerates to a 1x1 filter")
    a.add_argument("--feature-size", type=partial(positive_int, what="--feature-size"), metavar="N",
                   help="side of the square feature map")
    a.add_argument("--rates", help="comma-separated atrous rates (1,6,12,18)")
    a.add_argument("--kernel", type=odd_kernel, help="kernel size, odd (default: 3)")
    a.add_argument("--model", help="a registered model with an ASPP module (deeplabv3_resnet50, ...)")
    a.add_argument("--input-size", type=partial(positive_int, what="--input-size"), nargs=2, metavar=("H", "W"),
                   help="input image size for --model")
    add_arg_option(a)
    a.add_argument("--json", action="store_true", help="print JSON")
    a.set_defaults(func=cmd_aspp)
