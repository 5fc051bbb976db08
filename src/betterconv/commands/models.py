"""`betterconv list`, `betterconv profile`, `betterconv zoo`: the registered models and what they cost."""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

from ..analysis import memory_table, profile
from ..analysis.zoo import profile_zoo
from ..errors import BetterConvError
from ..models import list_models, model_arguments
from ..weights import create_model
from ._common import add_arg_option, parse_model_args


def list_pattern(pattern: str | None) -> str | None:
    """`list`'s filter as a shell-style pattern: one with wildcards as given, a bare word as a substring match
    (`yolo` -> `*yolo*`), case-insensitively (model names are lower case)."""
    if not pattern:
        return None
    pattern = pattern.lower()
    return pattern if glob.has_magic(pattern) else f"*{glob.escape(pattern)}*"


def cmd_list(args: argparse.Namespace) -> None:
    names = list_models(list_pattern(args.pattern))
    if args.pattern and not names:
        raise BetterConvError(f"no registered model matches {args.pattern!r}; `betterconv list` shows them all")
    for name in names:
        defaults = ", ".join(f"{k}={v!r}" for k, v in model_arguments(name).items())
        print(f"{name:28s} {defaults}")


def cmd_profile(args: argparse.Namespace) -> None:
    if args.memory_table:
        table = memory_table()
        print(json.dumps(table.to_dict(), indent=2) if args.json else table.format())
        return
    if not args.model:
        raise BetterConvError("profile needs a model name (or --memory-table)")
    model = create_model(args.model, **parse_model_args(args.arg))
    result = profile(model, input_size=(3, *args.input_size))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format_table())


def cmd_zoo(args: argparse.Namespace) -> None:
    profile_zoo(Path(args.output), input_size=args.input_size)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register `list`, `profile` and `zoo` on the top-level sub-command parsers."""
    p = sub.add_parser("list", help="list the registered models and their keyword arguments")
    p.add_argument("pattern", nargs="?",
                   help="a word the names contain (yolo) or a shell-style pattern ('deeplab*', quoted)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("profile", help="parameters, MACs, output stride, receptive field and memory of a model")
    p.add_argument("model", nargs="?", help="registered model name (see `betterconv list`)")
    p.add_argument("--input-size", nargs=2, type=int, default=(224, 224), metavar=("H", "W"),
                   help="input height and width (default: 224 224)")
    add_arg_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--memory-table", action="store_true",
                   help="MobileNetV2 paper Table 3: activation memory of MobileNetV1, MobileNetV2, ShuffleNet")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("zoo", help="profile every model of the zoo: a table, a JSON file and a PNG chart")
    p.add_argument("--output", default="out/zoo", help="output folder (default: out/zoo)")
    p.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="one input size for all models (default: each paper's own)")
    p.set_defaults(func=cmd_zoo)
