"""`betterconv bench conv` and `betterconv bench infer`: what convolutions and whole models cost on this machine."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from ..files import write_atomic
from ..analysis.conv_cost import conv_cost_table, format_conv_cost, rows_to_dicts
from ..analysis.infer_bench import VARIANTS, bench_record, measure_inference
from ..errors import BetterConvError
from ._common import Parser, add_arg_option, check_suffix, parse_model_args


def _json_output(path: str | None) -> None:
    if path:
        check_suffix(path, (".json",), "the JSON record")


def _shape(text: str) -> tuple[int, int]:
    channels, sep, resolution = text.partition("@")
    try:
        shape = int(channels), int(resolution)
    except ValueError:
        shape = (0, 0)
    if not sep or min(shape) < 1:
        raise BetterConvError(f"--shapes takes CHANNELS@RESOLUTION pairs such as 32@112, got {text!r}")
    return shape


def cmd_bench_conv(args: argparse.Namespace) -> None:
    _json_output(args.output)
    shapes = [_shape(s) for s in args.shapes]
    rows = conv_cost_table(args.kernels, shapes, args.repeats, channels_last=not args.contiguous,
                           progress=not args.no_progress)
    print(json.dumps(rows_to_dicts(rows), indent=2) if args.json else format_conv_cost(rows))
    if args.output:
        write_atomic(Path(args.output), json.dumps(rows_to_dicts(rows), indent=2).encode())


def cmd_bench_infer(args: argparse.Namespace) -> None:
    _json_output(args.output)
    say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if args.verbose else None  # beside the progress bar
    result = measure_inference(args.model, input_size=args.input_size, batches=args.batch, repeats=args.repeats,
                               warmup=args.warmup, threads=args.threads, model_kwargs=parse_model_args(args.arg),
                               variants=args.variants, calibration=args.calib, calibration_count=args.calib_count,
                               seed=args.seed, time_budget_s=args.time_budget, ort_spinning=not args.no_ort_spinning,
                               interleave=not args.blocked, log=say, progress=not args.no_progress)
    data = bench_record([result])
    print(json.dumps(data, indent=2) if args.json else result.format())
    if args.output:
        write_atomic(Path(args.output), (json.dumps(data, indent=2) + "\n").encode())


def add_conv_parser(bench_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `conv` to the `betterconv bench` sub-commands; returns its parser."""
    p = bench_sub.add_parser("conv", help="standard vs depthwise separable convolution: MACs and latency")
    p.add_argument("--kernels", type=int, nargs="+", default=[1, 3, 5, 7], help="kernel sizes (default: 1 3 5 7)")
    p.add_argument("--shapes", nargs="+", default=["32@112", "128@56", "256@28", "512@14", "1024@7"],
                   metavar="C@R", help="channels@resolution pairs (default: MobileNet's stages at 224)")
    p.add_argument("--repeats", type=int, default=20, help="timed calls per convolution (default 20)")
    p.add_argument("--contiguous", action="store_true", help="NCHW instead of channels-last")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--output", help="also write the rows as JSON to this .json file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_bench_conv)
    return p


def add_infer_parser(bench_sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `infer` to the `betterconv bench` sub-commands; returns its parser."""
    p = bench_sub.add_parser("infer", help="latency and throughput: eager, fused channels-last, onnxruntime fp32 "
                                           "and int8, ncnn fp32, OpenVINO fp32, bf16 and int8, against torchvision "
                                           "eager")
    p.add_argument("model", help="registered model name (see `betterconv list`)")
    p.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="input height and width (default: the paper's, e.g. 224x224, 513x513 for DeepLabv3)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default: 1 8)")
    p.add_argument("--repeats", type=int, default=10, help="timed rounds, each runs every variant once (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls of each variant first (default 2)")
    p.add_argument("--threads", type=int, default=2, help="PyTorch, onnxruntime, ncnn and OpenVINO threads (default 2)")
    add_arg_option(p)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=None, help="measure only these")
    p.add_argument("--calib", default=None,
                   help="int8 calibration images (onnxruntime and OpenVINO): a folder, a glob pattern, an image or a "
                        "list file (default: random images)")
    p.add_argument("--calib-count", type=int, default=4, help="calibration images to use (default 4)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="stop a batch size's rounds after S seconds (at least 3 rounds run)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights and inputs (default 0)")
    p.add_argument("--no-ort-spinning", action="store_true",
                   help="onnxruntime's threads sleep between operators instead of busy-waiting as PyTorch's do")
    p.add_argument("--blocked", action="store_true",
                   help="time each variant's calls in one block instead of interleaved rounds (an idle machine)")
    p.add_argument("--verbose", action="store_true", help="also print one line per round, on stderr")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--output",
                   help="also write the JSON (figures, machine, versions) to this .json file, atomically")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=cmd_bench_infer)
    return p


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `bench` with its sub-commands `conv` and `infer` on the top-level sub-command parsers."""
    bench_sub = sub.add_parser("bench", help="measure costs and speed").add_subparsers(
        dest="bench", required=True, parser_class=Parser)
    add_conv_parser(bench_sub)
    add_infer_parser(bench_sub)
