"""The `betterconv` command line. Every user error ends in one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import BetterConvError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise BetterConvError(f"{self.prog}: {message}")


def _model_kwargs(pairs: list[str]) -> dict[str, Any]:
    """`--arg width_mult=0.5 --arg atrous_rates=(6,12)` -> {"width_mult": 0.5, "atrous_rates": (6, 12)}."""
    kwargs = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.isidentifier():
            raise BetterConvError(f"--arg takes NAME=VALUE, got {pair!r}")
        try:
            kwargs[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            kwargs[key] = text  # a bare word such as padding=tf_same
    return kwargs



def _cmd_list(args: argparse.Namespace) -> None:
    from .models import list_models, model_arguments

    for name in list_models(args.pattern):
        defaults = ", ".join(f"{k}={v!r}" for k, v in model_arguments(name).items())
        print(f"{name:28s} {defaults}")


def _cmd_profile(args: argparse.Namespace) -> None:
    from .analysis import memory_table, profile
    from .models import create_model

    if args.memory_table:
        table = memory_table()
        print(json.dumps(table.to_dict(), indent=2) if args.json else table.format())
        return
    if not args.model:
        raise BetterConvError("profile needs a model name (or --memory-table)")
    model = create_model(args.model, **_model_kwargs(args.arg))
    result = profile(model, input_size=(3, *args.input_size))
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.format_table())


def _cmd_zoo(args: argparse.Namespace) -> None:
    from .analysis.zoo import profile_zoo

    profile_zoo(Path(args.output), input_size=args.input_size)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="betterconv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list the registered models and their keyword arguments")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'deeplab*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("profile", help="parameters, MACs, output stride, receptive field and memory of a model")
    p.add_argument("model", nargs="?", help="registered model name (see `betterconv list`)")
    p.add_argument("--input-size", nargs=2, type=int, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument of the model builder, e.g. width_mult=0.5 (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--memory-table", action="store_true",
                   help="MobileNetV2 paper Table 3: activation memory of MobileNetV1, MobileNetV2, ShuffleNet")
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("zoo", help="profile every model of the zoo: a table, a JSON file and a PNG chart")
    p.add_argument("--output", default="out/zoo", help="output folder (default: out/zoo)")
    p.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="one input size for all models (default: each paper's own)")
    p.set_defaults(func=_cmd_zoo)
    return parser


def main(argv: list[str] | None = None) -> int:
    debug = bool(os.environ.get("BETTERCONV_DEBUG"))
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except BetterConvError as e:
        if debug:
            raise
        print(f"betterconv: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as e:
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"betterconv: error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("betterconv: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
