"""The `betterconv` command line. Every user error ends in one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata

from .commands import analyze, bench, classification, convert, detection, export, heatmap, models, report, segmentation
from .commands._common import Parser, add_task_groups
from .errors import BetterConvError, first_line


def _version() -> str:
    try:
        return metadata.version("betterconv")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="betterconv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print betterconv's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    models.add_parsers(sub)
    convert.add_parsers(sub)
    heatmap.add_parsers(sub)
    train_sub, eval_sub, predict_sub = add_task_groups(sub)
    segmentation.add_parsers(train_sub, eval_sub, predict_sub)
    classification.add_parsers(train_sub, eval_sub, predict_sub)
    detection.add_parsers(sub, train_sub, eval_sub, predict_sub)
    export.add_parsers(sub)
    bench.add_parsers(sub)
    analyze.add_parsers(sub)
    report.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    debug = bool(os.environ.get("BETTERCONV_DEBUG"))
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help and --version print and stop (argparse's errors raise, see Parser)
            return done.code if isinstance(done.code, int) else 0
        args.func(args)
    except BetterConvError as e:
        if debug:
            raise
        print(f"betterconv: error: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, ValueError, OSError) as e:
        if debug:
            raise
        print(f"betterconv: error: {first_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("betterconv: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
